"""Dataset catalog: one ``DatasetInfo`` registry entry per dataset.

A loader returns an ``ImageSet``: a map-style dataset of ``(uint8 tensor [3,H,W], int label)`` that
torch's ``DataLoader`` takes as is. The engine resizes and normalises in batches, so loaders never know
about the backbone. The catalog itself is plain Python (torch loads only when a set is built), so the
service layer can list datasets and validate specs without the tensor libraries.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..lazy import torch
from ..registry import Registry

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataContext:
    """Where datasets live and whether a loader may download."""

    root: Path
    download: bool = False


class ImageSet:
    """Base for everything a loader returns; ``classnames`` travels with the data.

    Not a ``torch.utils.data.Dataset`` subclass on purpose: that would load torch with the catalog.
    ``DataLoader`` only needs ``__len__`` and ``__getitem__``."""

    classnames: Sequence[str] = ()

    def labels(self) -> torch.Tensor:
        """All labels as a tensor (override when cheaper than iterating)."""
        return torch.tensor([int(self[i][1]) for i in range(len(self))], dtype=torch.long)


class TensorImageSet(ImageSet):
    """Images already in memory as one uint8 tensor ``[N,3,H,W]``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str]):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N,3,H,W], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images, self._labels, self.classnames = images, labels.long(), tuple(classnames)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self._labels[i])

    def labels(self) -> torch.Tensor:
        return self._labels


Loader = Callable[[str, DataContext], ImageSet]


@dataclass(frozen=True)
class DatasetInfo:
    """What the catalog knows about a dataset without loading it."""

    key: str
    title: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    loader: Loader = field(repr=False, compare=False)
    source: str = "builtin"  # builtin | torchvision | local | upload
    description: str = ""
    how_to_get: str = ""
    splits: dict[str, int] = field(default_factory=dict, compare=False)  # nominal sizes, for display
    captioned: bool | None = None  # concept world: was this concept in the pre-training captions?
    tags: tuple[str, ...] = ()

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.loader(split, ctx)

    def prompts(self, classname: str) -> list[str]:
        """Prompts for one class: templates filled by plain replacement (no str.format on user text)."""
        return [t.replace("{}", classname) for t in self.templates]

    def meta(self) -> dict:
        return {
            "key": self.key, "title": self.title, "num_classes": len(self.classnames),
            "classnames": list(self.classnames), "templates": list(self.templates), "source": self.source,
            "description": self.description, "how_to_get": self.how_to_get, "splits": dict(self.splits),
            "captioned": self.captioned, "tags": list(self.tags),
        }


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the catalog (duplicate keys are an error)."""
    return DATASETS.register(info.key, info)
