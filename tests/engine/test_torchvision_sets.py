"""Torchvision-backed catalog entries load from small fake dataset folders in torchvision's layout.

No network: every folder is written by the test. Datasets whose torchvision reader checks the official
files' MD5 sums get that check stubbed (the layout and the parsing are still torchvision's own).
"""
from __future__ import annotations

import json
import pickle
import struct
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldifs_engine.data import DATASETS, DataContext
from ldifs_engine.data import torchvision_sets as tvs
from ldifs_engine.data.catalog import ImageSet
from ldifs_engine.data.templates import VOCABULARY
from ldifs_engine.errors import DatasetUnavailable

RNG = np.random.default_rng(0)


def _img(path: Path, size=(12, 10), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, fmt)


def _no_md5(monkeypatch, *modules: str) -> None:
    import importlib

    for m in modules:
        monkeypatch.setattr(importlib.import_module(f"torchvision.datasets.{m}"), "check_integrity",
                            lambda *a, **k: True)


# --- fake datasets, one per torchvision entry: returns {split: expected length} ------------------------

def fake_cifar10(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name, n in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]:
        batch = {"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(RNG.integers(0, 10, n))}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": list(VOCABULARY["cifar10"][0])}))
    _no_md5(monkeypatch, "cifar")
    return {"train": 15, "test": 4}


def fake_cifar100(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "cifar100" / "cifar-100-python"
    base.mkdir(parents=True)
    for name, n in (("train", 5), ("test", 3)):
        batch = {"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8), "fine_labels": list(RNG.integers(0, 100, n))}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    _no_md5(monkeypatch, "cifar")
    return {"train": 5, "test": 3}


def _idx(path: Path, arr: np.ndarray) -> None:
    magic = 0x0800 | arr.ndim
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


def fake_mnist(root: Path, monkeypatch) -> dict[str, int]:
    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", RNG.integers(0, 10, n, dtype=np.uint8))
    return {"train": 6, "test": 4}


def fake_svhn(root: Path, monkeypatch) -> dict[str, int]:
    from scipy.io import savemat

    base = root / "svhn"
    base.mkdir(parents=True)
    for split, n in (("train", 5), ("test", 3)):
        savemat(base / f"{split}_32x32.mat", {"X": RNG.integers(0, 255, (32, 32, 3, n), dtype=np.uint8),
                                              "y": np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)})
    _no_md5(monkeypatch, "svhn")
    return {"train": 5, "test": 3}


EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def fake_eurosat(root: Path, monkeypatch) -> dict[str, int]:
    for c in EUROSAT_FOLDERS:
        for i in range(10):
            _img(root / "eurosat" / "eurosat" / "2750" / c / f"{c}_{i}.jpg", (8, 8))
    return {"train": 80, "test": 10}  # per class 10 → 8 train / 1 val (unused) / 1 test


def fake_dtd(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "dtd" / "dtd" / "dtd"
    classes = VOCABULARY["dtd"][0]
    (base / "labels").mkdir(parents=True)
    for split in ("train", "val", "test"):
        lines = []
        for c in classes:
            _img(base / "images" / c / f"{c}_{split}.jpg", (6, 6))
            lines.append(f"{c}/{c}_{split}.jpg")
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return {"train": 2 * len(classes), "test": len(classes)}


def fake_gtsrb(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "gtsrb" / "gtsrb"
    for cls in (0, 42):
        for i in range(2):
            _img(base / "GTSRB" / "Training" / f"{cls:05d}" / f"{i:05d}.ppm", (9, 9), "PPM")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, cls in enumerate((3, 14, 40)):
        _img(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", (9, 9), "PPM")
        rows.append(f"{i:05d}.ppm;9;9;0;0;8;8;{cls}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return {"train": 4, "test": 3}


def fake_stl10(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "stl10" / "stl10_binary"
    base.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        (base / f"{split}_X.bin").write_bytes(RNG.integers(0, 255, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        (base / f"{split}_y.bin").write_bytes(np.arange(1, n + 1, dtype=np.uint8).tobytes())
    (base / "class_names.txt").write_text("\n".join(VOCABULARY["stl10"][0]) + "\n")
    _no_md5(monkeypatch, "stl10")
    return {"train": 3, "test": 2}


def fake_flowers102(root: Path, monkeypatch) -> dict[str, int]:
    from scipy.io import savemat

    base = root / "flowers102" / "flowers-102"
    for i in range(1, 8):
        _img(base / "jpg" / f"image_{i:05d}.jpg", (7, 5))
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 102, 5, 6, 7]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 7]]),
                                 "tstid": np.array([[4, 5, 6]])})
    _no_md5(monkeypatch, "flowers102")
    return {"train": 4, "test": 3}


def fake_food101(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "food101" / "food-101"
    meta = {"train": {"apple_pie": ["apple_pie/1", "apple_pie/2"], "baby_back_ribs": ["baby_back_ribs/3"]},
            "test": {"apple_pie": ["apple_pie/4"], "baby_back_ribs": ["baby_back_ribs/5"]}}
    (base / "meta").mkdir(parents=True)
    for split, classes in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(classes))
        for files in classes.values():
            for f in files:
                _img(base / "images" / f"{f}.jpg", (5, 5))
    return {"train": 3, "test": 2}


def fake_oxford_pets(root: Path, monkeypatch) -> dict[str, int]:
    base = root / "oxford_pets" / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    rows = {"trainval": [("Abyssinian_1", 1, 1), ("american_bulldog_2", 2, 2), ("yorkshire_terrier_3", 37, 2)],
            "test": [("Bengal_4", 6, 1)]}
    for split, items in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{i} {c} {s} 1\n" for i, c, s in items))
        for image_id, _, _ in items:
            _img(base / "images" / f"{image_id}.jpg", (6, 8))
    return {"train": 3, "test": 1}


def fake_fgvc_aircraft(root: Path, monkeypatch) -> dict[str, int]:
    data = root / "fgvc_aircraft" / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    variants = VOCABULARY["fgvc_aircraft"][0]
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    splits = {"trainval": [("1000001", "707-320"), ("1000002", "F/A-18")], "test": [("1000003", "Yak-42")]}
    for split, items in splits.items():
        (data / f"images_variant_{split}.txt").write_text("".join(f"{i} {v}\n" for i, v in items))
        for i, _ in items:
            _img(data / "images" / f"{i}.jpg", (10, 6))
    return {"train": 2, "test": 1}


FAKES: dict[str, Callable[[Path, pytest.MonkeyPatch], dict[str, int]]] = {
    name.removeprefix("fake_"): fn for name, fn in globals().items() if name.startswith("fake_")
}


def test_every_torchvision_entry_has_a_fake():
    assert set(FAKES) == {e.key for e in tvs.ENTRIES}


@pytest.mark.parametrize("key", sorted(FAKES))
def test_loads_from_a_fake_folder(tmp_path, monkeypatch, key):
    expected = FAKES[key](tmp_path, monkeypatch)
    info = DATASETS.get(key)
    assert info.source == "torchvision"
    ctx = DataContext(root=tmp_path, download=False)
    for split, n in expected.items():
        ds = info.load(split, ctx)
        assert isinstance(ds, ImageSet)
        assert len(ds) == n
        assert ds.classnames == info.classnames
        labels = ds.labels()
        assert labels.dtype == torch.long and len(labels) == n
        assert int(labels.min()) >= 0 and int(labels.max()) < len(info.classnames)
        for i in range(n):
            img, y = ds[i]
            assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
            assert isinstance(y, int) and y == int(labels[i])


def test_specific_labels_come_through(tmp_path, monkeypatch):
    """Label order follows the catalog's class names (torchvision's label ids)."""
    ctx = DataContext(root=tmp_path)
    fake_oxford_pets(tmp_path, monkeypatch)
    pets = DATASETS.get("oxford_pets")
    train = pets.load("train", ctx)
    assert [pets.classnames[y] for y in train.labels().tolist()] == ["Abyssinian", "American Bulldog",
                                                                     "Yorkshire Terrier"]
    fake_fgvc_aircraft(tmp_path, monkeypatch)
    fgvc = DATASETS.get("fgvc_aircraft")
    assert [fgvc.classnames[y] for y in fgvc.load("train", ctx).labels().tolist()] == ["707-320", "F/A-18"]
    fake_svhn(tmp_path, monkeypatch)
    assert DATASETS.get("svhn").load("train", ctx).labels().tolist() == [0, 1, 2, 3, 4]  # '10' means digit 0


def test_eurosat_split_is_fixed_stratified_and_disjoint(tmp_path, monkeypatch):
    fake_eurosat(tmp_path, monkeypatch)
    ctx = DataContext(root=tmp_path)
    info = DATASETS.get("eurosat")
    train, test = info.load("train", ctx), info.load("test", ctx)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert torch.bincount(test.labels(), minlength=10).tolist() == [1] * 10
    assert torch.bincount(train.labels(), minlength=10).tolist() == [8] * 10
    again = info.load("test", ctx)
    assert again.indices.tolist() == test.indices.tolist()
    assert info.classnames[EUROSAT_FOLDERS.index("SeaLake")] == "lake or sea"


@pytest.mark.parametrize("entry", tvs.ENTRIES, ids=lambda e: e.key)
def test_missing_dataset_fails_fast_with_one_sentence(tmp_path, entry):
    info = DATASETS.get(entry.key)
    with pytest.raises(DatasetUnavailable) as exc:
        info.load("test", DataContext(root=tmp_path, download=False))
    msg = str(exc.value)
    assert msg.startswith(f"{entry.title} is not available: put ")
    assert str(tmp_path / entry.key) in msg and entry.files in msg
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0
    assert "download=True" not in msg  # torchvision's own wording is not for our users


def test_failed_download_names_the_reason(tmp_path, monkeypatch):
    def offline(root, split, download):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    entry = tvs._Entry("fake", "Fake", "https://example.invalid", {}, "fake.bin", offline)
    with pytest.raises(DatasetUnavailable, match=r"Fake could not be downloaded into .*name resolution.*fake\.bin"):
        tvs._build(entry, "train", DataContext(root=tmp_path, download=True))


def test_missing_python_package_is_reported(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *a, **k):
        if name == "scipy":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(DatasetUnavailable, match="needs the Python package 'scipy'"):
        DATASETS.get("svhn").load("train", DataContext(root=tmp_path))


def test_catalog_entries_state_source_splits_and_how_to_get():
    for e in tvs.ENTRIES:
        info = DATASETS.get(e.key)
        names, templates = VOCABULARY[e.key]
        assert info.classnames == names and info.templates == templates
        assert set(info.splits) == {"train", "test"} and all(v > 0 for v in info.splits.values())
        assert e.source.split()[0].startswith("http") and e.source in info.how_to_get
        assert all(t.count("{}") == 1 for t in info.templates)


def test_damaged_files_say_they_could_not_be_read(tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(b"garbage")
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(b"garbage")
    with pytest.raises(DatasetUnavailable) as exc:
        DATASETS.get("mnist").load("test", DataContext(root=tmp_path))
    msg = str(exc.value)
    assert msg.startswith("MNIST in ") and "could not be read" in msg and "\n" not in msg
