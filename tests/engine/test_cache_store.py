"""The engine's diskcache store and the preprocessed evaluation tensors kept in it."""
from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import diskcache
import pytest
import torch

from ldifs_engine.cache import DiskStore, content_key, get_tensors, tensors_to_bytes
from ldifs_engine.data import DATASETS, DataContext
from ldifs_engine.data.cache_tensors import attach_eval_cache
from ldifs_engine.evaluate import Preprocessor, encode_images

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("offline_setup", ROOT / "bench" / "offline_setup.py")
offline_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_setup)


@pytest.fixture
def store(tmp_path):
    s = DiskStore(tmp_path / "store", size_limit=64 * 1024**2)
    yield s
    s.close()


# ---- the store ------------------------------------------------------------------------------
def test_bytes_only_owner_only_folder(store):
    store.set("k", b"v")
    assert store.get("k") == b"v" and store.get("nope") is None
    for bad in ({"a": 1}, [1], "text", 3):
        with pytest.raises(TypeError):
            store.set("k2", bad)  # anything but bytes would be pickled
    with pytest.raises(TypeError):
        store._cache.set(("tuple",), b"x")  # a pickled key
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch UNPICKLED",))


def test_pickled_entry_is_dropped_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "store"
    plain = diskcache.Cache(str(d))  # the default Disk pickles
    plain.set("evil", _Boom())
    plain.close()
    s = DiskStore(d)
    assert s.get("evil") is None and "evil" not in s
    assert not (tmp_path / "UNPICKLED").exists()
    s.close()


def test_undecodable_entry_is_dropped(store):
    store.set("t", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    assert get_tensors(store, "t") is None and "t" not in store
    store.set("t", tensors_to_bytes({"a": torch.arange(3)}, {"m": 1}))
    t, meta = get_tensors(store, "t")
    assert torch.equal(t["a"], torch.arange(3)) and meta == {"m": 1}


def test_eviction_at_the_size_limit(tmp_path):
    s = DiskStore(tmp_path / "small", size_limit=1024**2)
    blob = os.urandom(300 * 1024)
    for i in range(8):
        s.set(f"k{i}", blob)
    assert s.volume() <= 1024**2 + 400 * 1024  # diskcache culls on set, a value at most over
    assert s.get("k7") == blob and s.get("k0") is None  # least recently used went first
    s.close()


def test_a_corrupt_database_is_moved_aside(tmp_path):
    d = tmp_path / "store"
    s = DiskStore(d)
    s.set("k", b"v")
    s.close()
    (d / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    for suffix in ("-wal", "-shm"):
        (d / f"cache.db{suffix}").unlink(missing_ok=True)
    s = DiskStore(d)
    assert s.get("k") is None
    s.set("k", b"again")
    assert s.get("k") == b"again"
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("store.corrupt-")]) == 1
    s.close()


# ---- preprocessed evaluation tensors --------------------------------------------------------
@pytest.fixture
def mnist(tmp_path):
    root = offline_setup.write_fake_sets(tmp_path / "datasets", n_train=6, n_test=10, sets=("mnist",))
    ctx = DataContext(root=root)
    info = DATASETS.get("mnist")
    return info, ctx


class _Visual(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) + x[:, :, 0, 0]


def _encode(info, ctx, store, size=16, batch_size=4):
    ds = info.load("test", ctx)
    cache = attach_eval_cache(ds, info, "test", ctx, store)
    pre = Preprocessor({"size": size, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    feats, labels = encode_images(_Visual(), ds, torch.arange(len(ds)), pre, device=torch.device("cpu"),
                                  batch_size=batch_size)
    return feats, labels, cache


def test_warm_evaluation_skips_decoding_and_matches(mnist, store, monkeypatch):
    info, ctx = mnist
    cold, y, c1 = _encode(info, ctx, store)
    assert c1.decoded == 10 and c1.misses == 3 and c1.hits == 0
    ds_plain = info.load("test", ctx)  # no cache: the reference numbers
    pre = Preprocessor({"size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    ref, _ = encode_images(_Visual(), ds_plain, torch.arange(10), pre, device=torch.device("cpu"), batch_size=4)
    assert torch.equal(cold, ref)
    import torchvision.datasets as tvd

    def no_decoding(*a, **k):
        raise AssertionError("a warm evaluation must not decode images")

    monkeypatch.setattr(tvd.MNIST, "__getitem__", no_decoding)
    warm, y2, c2 = _encode(info, ctx, store)
    assert c2.decoded == 0 and c2.hits == 3
    assert torch.equal(warm, cold) and torch.equal(y2, y)


def test_changed_transform_or_dataset_file_misses(mnist, store):
    info, ctx = mnist
    _encode(info, ctx, store)
    _, _, c = _encode(info, ctx, store, size=20)
    assert c.hits == 0 and c.decoded == 10  # another size: another entry
    _, _, c = _encode(info, ctx, store)
    assert c.hits == 3  # both sizes are kept
    f = Path(ctx.root) / "mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    _, _, c = _encode(info, ctx, store)
    assert c.hits == 0 and c.decoded == 10


def test_corrupt_or_wrong_shape_entries_are_recomputed(mnist, store):
    info, ctx = mnist
    ref, _, c = _encode(info, ctx, store)
    ds = info.load("test", ctx)
    cache = attach_eval_cache(ds, info, "test", ctx, store)
    pre = Preprocessor({"size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3})
    k0 = cache.key(torch.arange(0, 4), pre.transform_id)
    k1 = cache.key(torch.arange(4, 8), pre.transform_id)
    assert k0 in store and k1 in store
    store.set(k0, b"garbage that is not safetensors")
    store.set(k1, tensors_to_bytes({"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
                                    "labels": torch.zeros(4, dtype=torch.int64)}))
    feats, _, c = _encode(info, ctx, store)
    assert c.decoded == 8 and c.hits == 1
    assert torch.equal(feats, ref)
    assert get_tensors(store, k0)[0]["images"].shape == (4, 3, 16, 16)


def test_content_key_is_stable():
    assert content_key("x", a=1, b=[1, 2]) == content_key("x", b=[1, 2], a=1) != content_key("x", a=2, b=[1, 2])
