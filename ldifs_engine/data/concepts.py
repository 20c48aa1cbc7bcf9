"""Concept datasets: labelled views of the procedural concept world, registered in the catalog.

Captioned datasets label an attribute that the built-in model ``concept-clip-tiny`` saw named in its
pre-training captions (shape, colour, pattern, size): it recognises them zero-shot. Uncaptioned
datasets (quadrant, count) label something that was never put into words, so the model starts near
chance zero-shot although its features carry the information: natural fine-tuning targets.

Splits are generated on demand, deterministically from ``(DATA_VERSION, key, split, seed)``, and
kept in an in-process cache, so a second load is free. Images are exactly the model's input size.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ..lazy import torch

from .catalog import DataContext, DatasetInfo, TensorImageSet, register_dataset
from .concept_render import (
    ATTRIBUTES,
    COLOURS,
    DATA_VERSION,
    IMAGE_SIZE,
    PATTERNS,
    QUADRANTS,
    SHAPES,
    SIZES,
    Objects,
    balanced_labels,
    render,
    sample_multi_objects,
    sample_objects,
)

DEFAULT_SPLIT_SIZE = {"train": 2000, "test": 2000}
COUNT_CLASSES = ("one", "two", "three", "four")

# Pre-training captions are one of these templates filled with a description such as
# "small red checkered circle" or "red object"; the captioned datasets' prompts use the same
# templates, so zero-shot classification asks the model exactly what it was taught.
CAPTION_TEMPLATES = ("a photo of the {}.", "a drawing of the {}.", "a picture of the {}.", "the {}.")
OBJECT_NOUN = "object"  # stands in for the shape when a caption does not name it

_OBJECT_TEMPLATES = tuple(t.replace("{}", "{} " + OBJECT_NOUN) for t in CAPTION_TEMPLATES)


@dataclass(frozen=True)
class ConceptTask:
    """One labelled view of the world: how to sample its objects and which label to read off."""

    key: str
    title: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    captioned: bool
    description: str
    sample: Callable[[int, torch.Generator], tuple[Objects, torch.Tensor]]


def _attribute_sampler(attribute: str) -> Callable[[int, torch.Generator], tuple[Objects, torch.Tensor]]:
    def sample(n: int, gen: torch.Generator) -> tuple[Objects, torch.Tensor]:
        objects = sample_objects(n, gen, balance=attribute)
        return objects, getattr(objects, attribute)[:, 0].clone()

    return sample


def _count_sampler(n: int, gen: torch.Generator) -> tuple[Objects, torch.Tensor]:
    labels = balanced_labels(n, len(COUNT_CLASSES), gen)
    return sample_multi_objects(labels + 1, gen), labels


_ONE_OBJECT = "Each picture shows one coloured object (a shape with a fill pattern) on a dark, grainy background."

TASKS: dict[str, ConceptTask] = {
    t.key: t
    for t in (
        ConceptTask(
            "shape", "Shape", SHAPES, CAPTION_TEMPLATES, True,
            f"{_ONE_OBJECT} Name its shape: {', '.join(SHAPES)}. "
            "The built-in model learned shape words in pre-training.",
            _attribute_sampler("shape"),
        ),
        ConceptTask(
            "colour", "Colour", COLOURS, _OBJECT_TEMPLATES, True,
            f"{_ONE_OBJECT} Name its colour: {', '.join(COLOURS)}. "
            "The built-in model learned colour words in pre-training.",
            _attribute_sampler("colour"),
        ),
        ConceptTask(
            "pattern", "Fill pattern", PATTERNS, _OBJECT_TEMPLATES, True,
            f"{_ONE_OBJECT} Name how it is filled: {', '.join(PATTERNS)}. "
            "The built-in model learned these words in pre-training.",
            _attribute_sampler("pattern"),
        ),
        ConceptTask(
            "size", "Size", SIZES, _OBJECT_TEMPLATES, True,
            f"{_ONE_OBJECT} Say whether it is small or large. The built-in model learned these words in pre-training.",
            _attribute_sampler("size"),
        ),
        ConceptTask(
            "quadrant", "Position (quadrant)", QUADRANTS,
            ("a photo of an object in the {} corner.", "an object in the {} of the picture.",
             "a picture with something in the {}."),
            False,
            f"{_ONE_OBJECT} Say which corner of the picture it is in. Positions were never mentioned "
            "in the built-in model's pre-training captions, so it cannot name them until fine-tuned.",
            _attribute_sampler("quadrant"),
        ),
        ConceptTask(
            "count", "Object count", COUNT_CLASSES,
            ("a photo of {} objects.", "a picture with {} shapes.", "{} things on a dark background."),
            False,
            "Each picture shows one to four coloured objects, each in its own corner. Count them. "
            "The built-in model only ever saw single objects and was never told numbers.",
            _count_sampler,
        ),
    )
}


def concept_keys(captioned: bool | None = None) -> list[str]:
    """Keys of the concept datasets, optionally only the captioned (or uncaptioned) ones."""
    return [k for k, t in TASKS.items() if captioned is None or t.captioned == captioned]


def stream_seed(*parts: object) -> int:
    """A 63-bit seed derived from the data version and ``parts``: independent streams per (key, split, seed)."""
    text = "|".join([DATA_VERSION, *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


@lru_cache(maxsize=32)
def _generate(key: str, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    task = TASKS[key]
    gen = torch.Generator().manual_seed(stream_seed(key, split, seed))
    objects, labels = task.sample(n, gen)
    return render(objects, gen).images, labels


def generate(key: str, split: str, n: int | None = None, seed: int = 0) -> TensorImageSet:
    """Images and labels of one split of a concept dataset (cached; do not modify the tensors in place).

    ``n`` defaults to the split's nominal size; ``seed`` picks another deterministic draw of the world.
    """
    if key not in TASKS:
        raise KeyError(f"unknown concept dataset {key!r}; choose one of: {', '.join(TASKS)}")
    if split not in DEFAULT_SPLIT_SIZE:
        raise ValueError(f"split must be one of {tuple(DEFAULT_SPLIT_SIZE)}, got {split!r}")
    n = DEFAULT_SPLIT_SIZE[split] if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    images, labels = _generate(key, split, n, int(seed))
    return TensorImageSet(images, labels, TASKS[key].classnames)


def _loader(key: str) -> Callable[[str, DataContext], TensorImageSet]:
    def load(split: str, ctx: DataContext) -> TensorImageSet:
        return generate(key, split)

    return load


def _register_all() -> None:
    for key, task in TASKS.items():
        register_dataset(
            DatasetInfo(
                key=key, title=task.title, classnames=task.classnames, templates=task.templates,
                loader=_loader(key), source="builtin", description=task.description,
                how_to_get="Built in: generated on the fly, nothing to download.",
                splits=dict(DEFAULT_SPLIT_SIZE), captioned=task.captioned,
                tags=("concept-world", "captioned" if task.captioned else "uncaptioned"),
            )
        )


_register_all()

__all__ = [
    "ATTRIBUTES", "CAPTION_TEMPLATES", "COUNT_CLASSES", "DATA_VERSION", "DEFAULT_SPLIT_SIZE", "IMAGE_SIZE",
    "OBJECT_NOUN", "TASKS", "ConceptTask", "concept_keys", "generate", "stream_seed",
]
