"""The paper's datasets that must be provided as local files (downloads dead or gated).

Layout, under the datasets root (``LDIFS_HOME/datasets`` by default)::

    <key>/train/<class folder>/<images, any depth>
    <key>/test/<class folder>/<images>        (``val/`` is accepted instead of ``test/``)

A class folder is matched to the catalog's class list by its words, ignoring case, order and
punctuation (``AM General Hummer SUV 2000``, ``2000_am_general_hummer_suv`` and
``AM-General-Hummer-SUV-2000`` are all Stanford Cars class 0). Folders may also be numbered with the
class index (``0``..``K-1`` or ``1``..``K``, all present), and ImageNet's may be WordNet ids
(``n01440764``; sorted, they are the standard class order). RESISC45 also reads the task-vectors layout:
``resisc45/NWPU-RESISC45/<class>/<class>_NNN.jpg`` with ``resisc45-train.txt`` / ``resisc45-test.txt``.
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..lazy import torch

from ..errors import DatasetUnavailable
from .catalog import DataContext, DatasetInfo, ImageSet, register_dataset
from .images import decode_image_file
from .templates import WORDNET_ID, vocabulary

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".jfif"})
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val")}
LOCAL_MAX_PIXELS = 64 * 1024 * 1024


class LocalImageSet(ImageSet):
    """Image files on disk with known labels; decoded on access by the allowlisted decoder."""

    def __init__(self, samples: Sequence[tuple[str, int]], classnames: Sequence[str], title: str):
        self.samples = list(samples)
        self.classnames = tuple(classnames)
        self.title = title
        self._labels = torch.tensor([y for _, y in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, y = self.samples[i]
        try:
            return decode_image_file(path, max_pixels=LOCAL_MAX_PIXELS), y
        except (OSError, ValueError) as e:
            raise DatasetUnavailable(f"{self.title}: cannot read {path} ({e}); replace or remove the file") from None

    def labels(self) -> torch.Tensor:
        return self._labels


def word_key(name: str) -> tuple[str, ...]:
    """The words of a name, lower-cased and sorted: the identity used to match class folders."""
    folded = unicodedata.normalize("NFKD", name).casefold()
    return tuple(sorted(re.findall(r"[0-9a-z]+", folded)))


def match_folders(folders: Sequence[str], classnames: Sequence[str], *, wordnet: bool = False) -> dict[str, int]:
    """Map class folder names to label indices, or explain (in one sentence) why they do not match.

    Raises:
        ValueError: the folders are not the dataset's classes.
    """
    k = len(classnames)
    if wordnet and folders and all(WORDNET_ID.match(f) for f in folders):
        if len(folders) != k:
            raise ValueError(f"found {len(folders)} WordNet-id folders, expected all {k}")
        return {f: i for i, f in enumerate(sorted(folders))}
    if folders and all(f.isdigit() for f in folders):
        numbers = {f: int(f) for f in folders}
        values = set(numbers.values())
        for offset in (0, 1):
            if values == set(range(offset, k + offset)) and len(numbers) == k:
                return {f: n - offset for f, n in numbers.items()}
        raise ValueError(f"numbered class folders must be 0..{k - 1} or 1..{k}, all present")
    by_words = {word_key(c): i for i, c in enumerate(classnames)}
    mapping: dict[str, int] = {}
    unknown = []
    for f in folders:
        i = by_words.get(word_key(f))
        if i is None:
            unknown.append(f)
        else:
            mapping[f] = i
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(unknown)[:3])
        raise ValueError(f"{len(unknown)} folder(s) are not classes of this dataset ({shown}); name class folders "
                         "after the class names listed in docs/DATASETS.md")
    if len(set(mapping.values())) != len(mapping):
        raise ValueError("two folders name the same class")
    return mapping


def _images_under(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, names in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, n) for n in sorted(names)
                   if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES)
    return out


@lru_cache(maxsize=32)
def _scan(split_dir: str, mtime_ns: int, classnames: tuple[str, ...], wordnet: bool) -> tuple[tuple[str, int], ...]:
    # mtime_ns is part of the cache key so that adding or removing class folders invalidates it.
    root = Path(split_dir)
    folders = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    mapping = match_folders(folders, classnames, wordnet=wordnet)
    samples: list[tuple[str, int]] = []
    for f in folders:
        samples.extend((p, mapping[f]) for p in _images_under(root / f))
    return tuple(samples)


def _split_file_samples(base: Path, split: str, classnames: Sequence[str]) -> list[tuple[str, int]] | None:
    """RESISC45's task-vectors layout: one image folder plus per-split lists of file names."""
    images = base / "NWPU-RESISC45"
    listing = base / f"resisc45-{split}.txt"
    if not (images.is_dir() and listing.is_file()):
        return None
    folders = sorted(d.name for d in os.scandir(images) if d.is_dir())
    mapping = match_folders(folders, classnames)
    samples = []
    for line in listing.read_text(encoding="utf-8").split():
        cls = line.rsplit("_", 1)[0]
        if cls not in mapping or "/" in line or "\\" in line or line.startswith("."):
            raise ValueError(f"{listing.name} lists {line!r}, which is not <class>_<number>.jpg of a known class")
        samples.append((str(images / cls / line), mapping[cls]))
    return samples


@dataclass(frozen=True)
class _Local:
    key: str
    title: str
    source: str
    splits: dict[str, int]
    description: str
    extra_layout: str = ""

    def how_to_get(self, root: str = "<datasets>") -> str:
        return (f"put the images under {root}/{self.key}/train/<class>/ and {root}/{self.key}/test/<class>/ "
                f"(class folders named after the classes{self.extra_layout}; see docs/DATASETS.md); source: "
                f"{self.source}.")

    def load(self, split: str, ctx: DataContext) -> ImageSet:
        classnames, _ = vocabulary(self.key)
        base = Path(ctx.root) / self.key
        try:
            samples = _split_file_samples(base, split, classnames) if self.key == "resisc45" else None
            if samples is None:
                split_dir = next((base / d for d in SPLIT_DIRS[split] if (base / d).is_dir()), None)
                if split_dir is None:
                    raise DatasetUnavailable(f"{self.title} is not installed; {self.how_to_get(str(Path(ctx.root)))}")
                samples = list(_scan(str(split_dir), split_dir.stat().st_mtime_ns, tuple(classnames),
                                     self.key == "imagenet"))
        except (ValueError, OSError) as e:
            raise DatasetUnavailable(f"{self.title} in {base} does not match the expected layout: {e}.") from None
        if not samples:
            raise DatasetUnavailable(f"{self.title}: no images found for the {split} split under {base}; "
                                     f"{self.how_to_get(str(Path(ctx.root)))}")
        return LocalImageSet(samples, classnames, self.title)


LOCAL: tuple[_Local, ...] = (
    _Local("stanford_cars", "Stanford Cars", "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (official "
           "download is offline; mirrors such as the Kaggle copy keep the class folders)",
           {"train": 8_144, "test": 8_041}, "196 car models (make, model, body, year).",
           "; Kaggle's 'car_data/train' and 'car_data/test' folders work as they are"),
    _Local("resisc45", "RESISC45", "https://gcheng-nwpu.github.io/ (NWPU-RESISC45; splits as in task-vectors)",
           {"train": 18_900, "test": 6_300}, "45 aerial scene classes, 256x256.",
           ", or NWPU-RESISC45/ with resisc45-train.txt and resisc45-test.txt"),
    _Local("sun397", "SUN397", "https://vision.princeton.edu/projects/2010/SUN/ (splits as in task-vectors)",
           {"train": 19_850, "test": 19_850}, "397 scene categories.",
           ", e.g. abbey/ or apartment_building_outdoor/"),
    _Local("imagenet", "ImageNet (ILSVRC-2012)", "https://image-net.org/ (registration required)",
           {"train": 1_281_167, "test": 50_000}, "1000 object classes; the test split is the official validation "
           "set.", ", or the usual WordNet-id folders n01440764/ …; test/ may be called val/"),
)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


for _d in LOCAL:
    _names, _templates = vocabulary(_d.key)
    register_dataset(DatasetInfo(
        key=_d.key, title=_d.title, classnames=_names, templates=_templates, loader=_d.load, source="local",
        description=_d.description, how_to_get=_sentence(_d.how_to_get()), splits=dict(_d.splits), tags=("paper",),
    ))
