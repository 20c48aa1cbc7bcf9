"""tasks.cache: content-hash keys, no pickle in or out, owner-only folder, corrupt database rebuilt."""
from __future__ import annotations

import os
import stat

import diskcache
import pytest
import torch

from tasks import cache as cache_mod
from tasks.cache import FeatureCache, baseline_key, cache_key, open_cache

BASE = {"backbone": "concept-clip-tiny", "weights_sha": "a" * 64, "dataset": "quadrant", "manifest_sha": "b" * 64,
        "classnames": ["top left", "top right"], "templates": ["a photo of {}.", "{}"],
        "preprocess": {"size": 64, "mean": [0.5, 0.5, 0.5], "interpolation": "bicubic"}, "split": "test"}

CHANGES = {
    "backbone": "vit-b-32-openai", "weights_sha": "c" * 64, "dataset": "colour", "manifest_sha": "d" * 64,
    "classnames": ["top left", "top-right"], "templates": ["a photo of {}!", "{}"],
    "preprocess": {"size": 64, "mean": [0.5, 0.5, 0.4], "interpolation": "bicubic"}, "split": "train",
}


@pytest.fixture
def fc(tmp_path):
    c = FeatureCache(tmp_path / "cache", size_limit=64 * 1024**2)
    yield c
    c.close()


def test_equal_inputs_give_equal_keys():
    assert baseline_key("zs_acc", **BASE) == baseline_key("zs_acc", **dict(BASE))
    reordered = dict(BASE, preprocess={"interpolation": "bicubic", "size": 64, "mean": [0.5, 0.5, 0.5]})
    assert baseline_key("zs_acc", **BASE) == baseline_key("zs_acc", **reordered)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_any_single_change_gives_a_new_key(field):
    assert baseline_key("zs_acc", **BASE) != baseline_key("zs_acc", **{**BASE, field: CHANGES[field]})


def test_kind_and_library_versions_are_part_of_the_key(monkeypatch):
    key = baseline_key("zs_acc", **BASE)
    assert baseline_key("features", **BASE) != key and key.startswith("zs_acc:")
    real = cache_mod.library_versions()
    monkeypatch.setattr(cache_mod, "library_versions", lambda: {**real, "open_clip_torch": "99.0"})
    assert baseline_key("zs_acc", **BASE) != key
    with pytest.raises(ValueError):
        cache_key("bad kind!")


def test_bytes_round_trip_and_miss(fc):
    key = cache_key("features", x=1)
    assert fc.get(key) is None
    fc.set(key, b"\x00\x01" * 40_000)  # large enough to live in a file
    assert fc.get(key) == b"\x00\x01" * 40_000 and key in fc


def test_only_plain_values_go_in(fc):
    with pytest.raises(TypeError):
        fc.set("k", {"a": 1})  # would be pickled
    with pytest.raises(TypeError):
        fc._cache.set(("tuple", "key"), b"x")  # pickled key
    with pytest.raises(TypeError):
        fc._cache.set("k", [1, 2])


def test_a_pickled_entry_is_never_loaded(tmp_path):
    d = tmp_path / "cache"
    plain = diskcache.Cache(str(d))  # default Disk: pickles
    plain.set("evil", {"payload": "would run code on load"})
    plain.close()
    fc = FeatureCache(d)
    assert fc.get("evil") is None
    assert "evil" not in fc  # dropped
    fc.close()


def test_tensors_round_trip_with_dtype_and_shape(fc):
    tensors = {"feats": torch.randn(5, 7), "head": torch.randn(3, 4).to(torch.bfloat16),
               "labels": torch.arange(5)}
    fc.set_tensors("features:x", tensors, {"dataset": "quadrant"})
    got, meta = fc.get_tensors("features:x")
    assert meta == {"dataset": "quadrant"}
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape and torch.equal(got[name], t)


def test_json_helpers_and_evict_by_tag(fc):
    fc.set_json("zs_acc:1", {"quadrant": 0.25}, tag="concept-clip-tiny")
    fc.set_json("zs_acc:2", {"colour": 0.5}, tag="other")
    assert fc.get_json("zs_acc:1") == {"quadrant": 0.25}
    assert fc.evict("concept-clip-tiny") == 1
    assert fc.get_json("zs_acc:1") is None and fc.get_json("zs_acc:2") == {"colour": 0.5}


def test_folder_is_owner_only(home):
    c = open_cache()
    assert stat.S_IMODE(os.stat(c.directory).st_mode) == 0o700
    assert c is open_cache()


def test_a_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path):
    d = tmp_path / "cache"
    c = FeatureCache(d)
    c.set("k", b"v")
    c.close()
    (d / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    for suffix in ("-wal", "-shm"):
        (d / f"cache.db{suffix}").unlink(missing_ok=True)
    c = FeatureCache(d)
    assert c.get("k") is None
    c.set("k", b"again")
    assert c.get("k") == b"again"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("cache.corrupt-")]
    assert len(aside) == 1 and (aside[0] / "cache.db").exists()
    c.close()


def test_works_as_the_engine_cache_interface(fc):
    from ldifs_engine.cache import content_key

    key = content_key("zs_head", backbone="x")
    fc.set(key, b"head bytes")
    assert fc.get(key) == b"head bytes"
