"""The paper's datasets that torchvision can fetch, registered in the catalog.

Each one lives in ``<datasets root>/<key>/`` in the layout torchvision expects, downloaded there by
torchvision when the run may download (``DataContext.download``). Missing and offline, loading raises
``DatasetUnavailable`` with one sentence that says which files to put where. Loaders yield per-sample
uint8 ``[3,H,W]`` tensors (images differ in size; the engine resizes).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..lazy import np, torch

from ..errors import DatasetUnavailable
from .catalog import DataContext, DatasetInfo, ImageSet, register_dataset
from .templates import vocabulary

if TYPE_CHECKING:
    from torch.utils.data import Dataset

# EuroSAT has no official split; the paper re-splits it 21.6k / 2.7k / 2.7k. Fixed seeds keep the test
# set identical for every run.
EUROSAT_TEST_SEED = 0
EUROSAT_VAL_SEED = 1


class TorchvisionImageSet(ImageSet):
    """A torchvision dataset of ``(PIL image, label)`` seen as uint8 ``[3,H,W]`` tensors."""

    def __init__(self, base: Dataset, classnames: Sequence[str], labels: Sequence[int] | np.ndarray,
                 indices: np.ndarray | None = None):
        self.base = base
        self.classnames = tuple(classnames)
        all_labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self._labels = all_labels if self.indices is None else all_labels[torch.as_tensor(self.indices)]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.functional import pil_to_tensor

        j = int(i) if self.indices is None else int(self.indices[i])
        img, y = self.base[j]
        return pil_to_tensor(img.convert("RGB")), int(y)

    def labels(self) -> torch.Tensor:
        return self._labels


def _labels_of(ds: Dataset) -> np.ndarray:
    """Labels without decoding images (torchvision keeps them under a few attribute names)."""
    if isinstance(ds, torch.utils.data.ConcatDataset):
        return np.concatenate([_labels_of(d) for d in ds.datasets])
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64)
    samples = getattr(ds, "_samples", None)  # GTSRB
    if samples is not None:
        return np.asarray([y for _, y in samples], dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


@dataclass(frozen=True)
class _Entry:
    key: str
    title: str
    source: str
    splits: dict[str, int]
    files: str  # what torchvision expects under <root>/<key>/, for the missing-data message
    build: Callable[[str, str, bool], Dataset]  # (root, split, download) -> torchvision dataset
    description: str = ""
    needs: tuple[str, ...] = ()  # extra Python packages the torchvision reader imports


def _how_to_get(e: _Entry, root: str = "<datasets>") -> str:
    return (f"Downloaded by torchvision into {root}/{e.key}/ when downloads are allowed; offline, copy "
            f"{e.files} there (source: {e.source}).")


def _build(e: _Entry, split: str, ctx: DataContext) -> Dataset:
    root = Path(ctx.root) / e.key
    for module in e.needs:
        try:
            __import__(module)
        except ImportError:
            raise DatasetUnavailable(f"{e.title} needs the Python package {module!r} to read its files; install it "
                                     f"(pip install {module})") from None
    try:
        if ctx.download:
            root.mkdir(parents=True, exist_ok=True)
        return e.build(str(root), split, ctx.download)
    except DatasetUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - torchvision signals missing/corrupt/offline with many types
        if ctx.download:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise DatasetUnavailable(
                f"{e.title} could not be downloaded into {root} ({reason}); put {e.files} there by hand "
                f"(source: {e.source})."
            ) from exc
        if isinstance(exc, RuntimeError) and "not found" in str(exc).lower():  # torchvision's "missing" signal
            raise DatasetUnavailable(
                f"{e.title} is not available: put {e.files} in {root}, or allow downloads so torchvision fetches "
                f"it from {e.source}."
            ) from exc
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DatasetUnavailable(
            f"{e.title} in {root} could not be read ({type(exc).__name__}: {reason}); it should hold {e.files} "
            f"as published at {e.source}."
        ) from exc


def _loader(e: _Entry) -> Callable[[str, DataContext], ImageSet]:
    classnames, _ = vocabulary(e.key)

    def load(split: str, ctx: DataContext) -> ImageSet:
        if e.key == "eurosat":
            return _eurosat(e, split, ctx, classnames)
        base = _build(e, split, ctx)
        return TorchvisionImageSet(base, classnames, _labels_of(base))

    return load


def _eurosat(e: _Entry, split: str, ctx: DataContext, classnames: Sequence[str]) -> ImageSet:
    from .splits import stratified_holdout  # numpy: loaded with the data, not with the catalog

    base = _build(e, split, ctx)
    labels = _labels_of(base)
    rest, test = stratified_holdout(labels, 0.1, EUROSAT_TEST_SEED)  # 2.7k test
    if split == "test":
        return TorchvisionImageSet(base, classnames, labels, test)
    train_local, _val = stratified_holdout(labels[rest], 1 / 9, EUROSAT_VAL_SEED)  # 2.7k val, unused here
    return TorchvisionImageSet(base, classnames, labels, rest[train_local])


def _tv() -> Any:
    import torchvision.datasets as tvd

    return tvd


def _both(make: Callable[[str], Dataset], first: str, second: str) -> Dataset:
    return torch.utils.data.ConcatDataset([make(first), make(second)])


ENTRIES: tuple[_Entry, ...] = (
    _Entry(
        "cifar10", "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar.html", {"train": 50_000, "test": 10_000},
        "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        lambda r, s, d: _tv().CIFAR10(r, train=s == "train", download=d),
        "10 classes of small 32x32 photos (vehicles and animals).",
    ),
    _Entry(
        "cifar100", "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar.html", {"train": 50_000, "test": 10_000},
        "cifar-100-python/ (train, test, meta)",
        lambda r, s, d: _tv().CIFAR100(r, train=s == "train", download=d),
        "100 fine-grained classes of small 32x32 photos.",
    ),
    _Entry(
        "mnist", "MNIST", "https://yann.lecun.com/exdb/mnist/ (torchvision mirrors)", {"train": 60_000, "test": 10_000},
        "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte)",
        lambda r, s, d: _tv().MNIST(r, train=s == "train", download=d),
        "Handwritten digits, 28x28 grey.",
    ),
    _Entry(
        "svhn", "SVHN", "http://ufldl.stanford.edu/housenumbers/", {"train": 73_257, "test": 26_032},
        "train_32x32.mat and test_32x32.mat",
        lambda r, s, d: _tv().SVHN(r, split=s, download=d),
        "Street-view house-number digits, 32x32 colour.", needs=("scipy",),
    ),
    _Entry(
        "eurosat", "EuroSAT", "https://github.com/phelber/EuroSAT (RGB version)", {"train": 21_600, "test": 2_700},
        "eurosat/2750/<class folders>/*.jpg",
        lambda r, s, d: _tv().EuroSAT(r, download=d),
        "Sentinel-2 satellite land-use tiles, 64x64; re-split per class 80/10/10 with a fixed seed "
        "(21.6k train / 2.7k val / 2.7k test), the validation tenth is not used.",
    ),
    _Entry(
        "dtd", "DTD (Describable Textures)", "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        {"train": 3_760, "test": 1_880},
        "dtd/dtd/ (images/, labels/ from dtd-r1.0.1.tar.gz)",
        lambda r, s, d: (_both(lambda p: _tv().DTD(r, split=p, partition=1, download=d), "train", "val")
                         if s == "train" else _tv().DTD(r, split="test", partition=1, download=d)),
        "47 texture classes; train = official train + val of partition 1.",
    ),
    _Entry(
        "gtsrb", "GTSRB", "https://benchmark.ini.rub.de/gtsrb_dataset.html", {"train": 26_640, "test": 12_630},
        "gtsrb/GTSRB/Training/, gtsrb/GTSRB/Final_Test/Images/ and gtsrb/GT-final_test.csv",
        lambda r, s, d: _tv().GTSRB(r, split=s, download=d),
        "43 German traffic-sign classes.",
    ),
    _Entry(
        "stl10", "STL-10", "https://cs.stanford.edu/~acoates/stl10/", {"train": 5_000, "test": 8_000},
        "stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt)",
        lambda r, s, d: _tv().STL10(r, split=s, download=d),
        "10 classes of 96x96 photos (labelled part only).",
    ),
    _Entry(
        "flowers102", "Oxford Flowers-102", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        {"train": 2_040, "test": 6_149},
        "flowers-102/ (jpg/, imagelabels.mat, setid.mat)",
        lambda r, s, d: (_both(lambda p: _tv().Flowers102(r, split=p, download=d), "train", "val")
                         if s == "train" else _tv().Flowers102(r, split="test", download=d)),
        "102 flower species; train = official train + val.", needs=("scipy",),
    ),
    _Entry(
        "food101", "Food-101", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        {"train": 75_750, "test": 25_250},
        "food-101/ (images/, meta/train.json, meta/test.json)",
        lambda r, s, d: _tv().Food101(r, split=s, download=d),
        "101 dishes.",
    ),
    _Entry(
        "oxford_pets", "Oxford-IIIT Pets", "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        {"train": 3_680, "test": 3_669},
        "oxford-iiit-pet/ (images/, annotations/trainval.txt, annotations/test.txt)",
        lambda r, s, d: _tv().OxfordIIITPet(r, split="trainval" if s == "train" else "test", download=d),
        "37 cat and dog breeds; train = official trainval.",
    ),
    _Entry(
        "fgvc_aircraft", "FGVC-Aircraft", "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        {"train": 6_667, "test": 3_333},
        "fgvc-aircraft-2013b/data/ (images/, variants.txt, images_variant_trainval.txt, images_variant_test.txt)",
        lambda r, s, d: _tv().FGVCAircraft(r, split="trainval" if s == "train" else "test", download=d),
        "100 aircraft variants; train = official trainval.",
    ),
)


def _register() -> None:
    for e in ENTRIES:
        classnames, templates = vocabulary(e.key)
        register_dataset(DatasetInfo(
            key=e.key, title=e.title, classnames=classnames, templates=templates, loader=_loader(e),
            source="torchvision", description=e.description, how_to_get=_how_to_get(e), splits=dict(e.splits),
            captioned=None, tags=("paper",) if e.key in PAPER_POOL else (),
        ))


PAPER_POOL = frozenset({"cifar10", "cifar100", "mnist", "svhn", "eurosat", "dtd", "gtsrb"})

_register()
