"""Templates, seeded splits, local-layout datasets, upload manifests, overrides and cached eval tensors."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldifs_engine.data import DATASETS, DataContext, local_sets, resolve_dataset
from ldifs_engine.data.ingest import IngestLimits, ingest_zip
from ldifs_engine.data.manifest import (
    clear_overrides,
    load_manifest_dataset,
    read_manifest,
    upload_dir,
    write_manifest,
    write_overrides,
)
from ldifs_engine.data.splits import seeded_split, stratified_holdout
from ldifs_engine.data.templates import (
    VOCABULARY,
    check_classnames,
    check_templates,
    id_like_warnings,
    normalize_classname,
)
from ldifs_engine.errors import DatasetUnavailable, SpecError

PAPER_POOL = {"cifar10", "cifar100", "mnist", "svhn", "eurosat", "dtd", "gtsrb", "stanford_cars", "resisc45",
              "sun397", "imagenet"}


# --- templates --------------------------------------------------------------------------------------

def test_paper_pool_is_in_the_catalog_with_its_convention():
    assert PAPER_POOL <= set(DATASETS.names())
    sizes = {k: (len(c), len(t)) for k, (c, t) in VOCABULARY.items()}
    assert sizes["cifar10"] == (10, 18) and sizes["cifar100"] == (100, 18)
    assert sizes["mnist"] == (10, 1) and sizes["svhn"] == (10, 1) and sizes["eurosat"] == (10, 3)
    assert sizes["dtd"] == (47, 8) and sizes["gtsrb"] == (43, 3) and sizes["stanford_cars"] == (196, 8)
    assert sizes["resisc45"] == (45, 18) and sizes["sun397"] == (397, 2) and sizes["imagenet"] == (1000, 80)
    assert "lake or sea" in VOCABULARY["eurosat"][0]
    for key, (names, templates) in VOCABULARY.items():
        assert all(t.count("{}") == 1 for t in templates), key
        assert all(n == n.strip() and n for n in names), key


def test_prompts_use_replace_not_format():
    info = DATASETS.get("cifar10")
    assert info.prompts("{0} {x}")[0] == "a photo of a {0} {x}."


def test_classname_and_template_checks():
    assert check_classnames(["a", "b"], 2) == []
    problems = check_classnames(["a", "", "A", "x" * 300, "bad\x00"], 4)
    assert any("expected 4 names" in p for p in problems)
    assert any(p.startswith("classnames[1]: empty") for p in problems)
    assert any("duplicates classnames[0]" in p for p in problems)
    assert any("classnames[3]" in p and "at most" in p for p in problems)
    assert any("classnames[4]" in p and "control" in p for p in problems)
    assert check_templates(["a {} b"]) == []
    assert check_templates([])[0].startswith("templates: give at least one")
    assert "exactly one {}" in check_templates(["no placeholder"])[0]
    assert "exactly one {}" in check_templates(["{} and {}"])[0]
    assert check_classnames("abc") == ["classnames: expected a list of strings"]
    assert normalize_classname("  golden_retriever \t dog ") == "golden retriever dog"
    assert id_like_warnings(["n01440764", "cat"]) and not id_like_warnings(["cat", "n014"])


# --- splits -----------------------------------------------------------------------------------------

def test_seeded_split_is_deterministic_disjoint_and_sized():
    tr, va = seeded_split(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist()) and sorted([*tr, *va]) == list(range(1000))
    tr2, va2 = seeded_split(1000, 0.1, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, seeded_split(1000, 0.1, seed=4)[1])
    assert len(seeded_split(10, 0.0, 0)[1]) == 0 and len(seeded_split(1, 0.5, 0)[1]) == 0
    assert len(seeded_split(3, 0.1, 0)[1]) == 1
    with pytest.raises(ValueError):
        seeded_split(10, 1.0, 0)


def test_splits_are_pinned():
    """Splits must not change across numpy/torch versions or machines (results would stop being comparable)."""
    assert seeded_split(20, 0.2, seed=0)[1].tolist() == [1, 4, 5, 18]
    assert stratified_holdout([0] * 5 + [1] * 5, 0.2, seed=7)[1].tolist() == [3, 9]


def test_stratified_holdout_per_class():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    keep, held = stratified_holdout(labels, 0.2, seed=0)
    lab = np.asarray(labels)
    assert np.bincount(lab[held], minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(lab[keep], minlength=3).tolist() == [8, 4, 1]


# --- local datasets ---------------------------------------------------------------------------------

def _jpg(path: Path, colour=(10, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 7), colour).save(path, "JPEG")


def test_local_class_names_have_unique_word_keys():
    for d in local_sets.LOCAL:
        if d.key == "imagenet":
            continue
        names = VOCABULARY[d.key][0]
        assert len({local_sets.word_key(n) for n in names}) == len(names), d.key


def test_local_layout_matches_folders_by_words(tmp_path):
    cars = VOCABULARY["stanford_cars"][0]
    root = tmp_path / "stanford_cars"
    _jpg(root / "train" / "2000 am_general hummer SUV" / "a.jpg")           # reordered, other case
    _jpg(root / "train" / "smart-fortwo-Convertible-2012" / "sub" / "b.jpg")  # dashes, nested deeper
    _jpg(root / "val" / "Acura RL Sedan 2012" / "c.jpg")                     # val/ stands in for test/
    (root / "train" / ".hidden").mkdir()
    ctx = DataContext(root=tmp_path)
    info = DATASETS.get("stanford_cars")
    train = info.load("train", ctx)
    assert sorted(cars[y] for y in train.labels().tolist()) == ["AM General Hummer SUV 2000",
                                                               "smart fortwo Convertible 2012"]
    img, y = train[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 7, 10)
    assert [cars[y] for y in info.load("test", ctx).labels().tolist()] == ["Acura RL Sedan 2012"]


def test_local_layout_numbered_and_wordnet_folders(tmp_path):
    for i in range(45):
        _jpg(tmp_path / "resisc45" / "test" / f"{i + 1:02d}" / "x.jpg")
    ds = DATASETS.get("resisc45").load("test", DataContext(root=tmp_path))
    assert sorted(ds.labels().tolist()) == list(range(45))
    wnids = [f"n{10_000_000 + 7 * i:08d}" for i in range(1000)]
    for w in wnids:
        (tmp_path / "imagenet" / "val" / w).mkdir(parents=True)
    _jpg(tmp_path / "imagenet" / "val" / wnids[3] / "x.JPEG")
    ds = DATASETS.get("imagenet").load("test", DataContext(root=tmp_path))
    assert ds.labels().tolist() == [3]


def test_resisc45_split_file_layout(tmp_path):
    base = tmp_path / "resisc45"
    _jpg(base / "NWPU-RESISC45" / "airplane" / "airplane_001.jpg")
    _jpg(base / "NWPU-RESISC45" / "sea_ice" / "sea_ice_002.jpg")
    (base / "resisc45-train.txt").write_text("airplane_001.jpg\nsea_ice_002.jpg\n")
    (base / "resisc45-test.txt").write_text("../../etc/passwd\n")
    (base / "NWPU-RESISC45" / "wetland").mkdir()
    info = DATASETS.get("resisc45")
    ds = info.load("train", DataContext(root=tmp_path))
    assert [info.classnames[y] for y in ds.labels().tolist()] == ["airplane", "sea ice"]
    with pytest.raises(DatasetUnavailable, match="not <class>_<number>"):
        info.load("test", DataContext(root=tmp_path))


def test_local_missing_or_wrong_layout_is_one_sentence(tmp_path):
    ctx = DataContext(root=tmp_path)
    with pytest.raises(DatasetUnavailable) as exc:
        DATASETS.get("sun397").load("train", ctx)
    msg = str(exc.value)
    assert msg.startswith("SUN397 is not installed; put the images under") and str(tmp_path / "sun397") in msg
    assert "\n" not in msg
    _jpg(tmp_path / "sun397" / "train" / "abbey" / "a.jpg")
    _jpg(tmp_path / "sun397" / "train" / "not_a_scene" / "a.jpg")
    with pytest.raises(DatasetUnavailable, match=r"1 folder\(s\) are not classes of this dataset \('not_a_scene'\)"):
        DATASETS.get("sun397").load("train", ctx)


def test_local_corrupt_image_fails_with_a_message(tmp_path):
    bad = tmp_path / "sun397" / "test" / "abbey" / "a.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"<html>")
    ds = DATASETS.get("sun397").load("test", DataContext(root=tmp_path))
    with pytest.raises(DatasetUnavailable, match="cannot read .*a.jpg"):
        ds[0]


# --- uploads as datasets ----------------------------------------------------------------------------

def _upload(root: Path, classes=("cat", "dog"), n=5) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for j, c in enumerate(classes):
            for i in range(n):
                img = io.BytesIO()
                Image.new("RGB", (12, 9), (30 * i, 80 * j, 5)).save(img, "PNG")
                z.writestr(f"{c}/{i}.png", img.getvalue())
    zpath = root / "u.zip"
    zpath.write_bytes(buf.getvalue())
    m = ingest_zip(zpath, root / "uploads", IngestLimits(min_per_class=2), name="Pets", owner="x")
    return m.key


def test_upload_resolves_and_loads(tmp_path):
    key = _upload(tmp_path)
    ctx = DataContext(root=tmp_path)
    info = resolve_dataset(key, ctx)
    assert info.source == "upload" and info.title == "Pets" and info.classnames == ("cat", "dog")
    assert info.splits == {"train": 8, "test": 2}
    test = info.load("test", ctx)
    assert len(test) == 2 and sorted(test.labels().tolist()) == [0, 1]
    img, y = test[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 9, 12) and y == int(test.labels()[0])


@pytest.mark.parametrize("key, err", [
    ("upload:../../etc", SpecError), ("upload:" + "A" * 32, SpecError), ("upload:" + "0" * 31, SpecError),
    ("upload:" + "0" * 32 + "/x", SpecError), ("upload:" + "0" * 32, DatasetUnavailable),
])
def test_upload_keys_are_validated_before_paths(tmp_path, key, err):
    with pytest.raises(err):
        load_manifest_dataset(key, DataContext(root=tmp_path))


def test_symlinked_upload_folder_is_refused(tmp_path):
    key = _upload(tmp_path)
    upload_id = key.split(":")[1]
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "uploads" / upload_id).rename(elsewhere)
    (tmp_path / "uploads" / upload_id).symlink_to(elsewhere)
    with pytest.raises(DatasetUnavailable, match="does not resolve inside"):
        upload_dir(tmp_path, upload_id)


def test_damaged_manifest_is_reported(tmp_path):
    key = _upload(tmp_path)
    path = tmp_path / "uploads" / key.split(":")[1] / "manifest.json"
    data = json.loads(path.read_text())
    data["files"][0][0] = "../../../etc/passwd"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetUnavailable, match="damaged"):
        resolve_dataset(key, DataContext(root=tmp_path))


def test_manifest_edits_are_what_the_engine_sees(tmp_path):
    key = _upload(tmp_path)
    path = tmp_path / "uploads" / key.split(":")[1] / "manifest.json"
    m = read_manifest(path)
    m.classnames, m.templates = ["tabby cat", "puppy"], ["a photo of my {}."]
    write_manifest(path, m)
    info = resolve_dataset(key, DataContext(root=tmp_path))
    assert info.classnames == ("tabby cat", "puppy") and info.prompts("puppy") == ["a photo of my puppy."]


# --- overrides of catalog datasets --------------------------------------------------------------------

def test_catalog_overrides_apply_and_reset(tmp_path):
    ctx = DataContext(root=tmp_path)
    names = [f"digit {i}" for i in range(10)]
    write_overrides(tmp_path, "mnist", classnames=names, num_classes=10)
    write_overrides(tmp_path, "mnist", templates=["a handwritten {}."], num_classes=10)
    info = resolve_dataset("mnist", ctx)
    assert list(info.classnames) == names and info.templates == ("a handwritten {}.",)
    assert info.source == "torchvision"
    with pytest.raises(SpecError) as exc:
        write_overrides(tmp_path, "mnist", classnames=["x"], templates=["nope"], num_classes=10)
    assert len(exc.value.problems) == 2
    assert clear_overrides(tmp_path, "mnist")
    assert resolve_dataset("mnist", ctx).classnames == DATASETS.get("mnist").classnames


def test_invalid_override_file_is_a_spec_error(tmp_path):
    (tmp_path / "overrides").mkdir()
    (tmp_path / "overrides" / "mnist.json").write_text('{"templates": ["no placeholder"]}')
    with pytest.raises(SpecError, match="mnist.json"):
        resolve_dataset("mnist", DataContext(root=tmp_path))


def test_unknown_key_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="unknown dataset 'nope'"):
        resolve_dataset("nope", DataContext(root=tmp_path))


