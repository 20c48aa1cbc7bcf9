"""Training batches: a pure function of (seed, step), read from decoded images in the engine's store,
through a DataLoader over steps — the same batches as decoding on the fly, and a warm store decodes nothing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ldifs_engine.batches import BatchPlan, StepBatches, TrainImages, loader_settings, step_loader
from ldifs_engine.cache import DiskStore, NullCache
from ldifs_engine.data.catalog import ImageSet
from ldifs_engine.evaluate import Preprocessor, gather
from ldifs_engine.events import read_events

from .helpers import random_images, tiny_spec

ROOT = Path(__file__).resolve().parents[2]
PRE = Preprocessor({"size": 24, "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]})


class Files(ImageSet):
    """Images of different sizes that are 'decoded' on access (counted), like files on disk."""

    def __init__(self, n: int = 7, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = [torch.randint(0, 256, (3, 20 + 3 * i, 31 - 2 * i), generator=g, dtype=torch.uint8)
                      for i in range(n)]
        self._labels = torch.arange(n) % 3
        self.classnames = ("a", "b", "c")
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.items[i].clone(), int(self._labels[i])

    def labels(self) -> torch.Tensor:
        return self._labels


def _old_batch(ds, plan: BatchPlan, step: int):
    """What the trainer computed per step before batches came from the store (kept here as the reference)."""
    gen = plan.generator(step)
    images, labels = gather(ds, plan.indices(step))
    return PRE.train_batch(images, gen), labels, gen.get_state()


def _same(batch, ref) -> bool:
    _step, crops, labels, state = batch
    x, y, s = ref
    return torch.equal(PRE.normalise(crops), x) and torch.equal(labels, y) and torch.equal(state, s)


def test_store_batches_equal_decoded_batches_and_a_warm_store_decodes_nothing(tmp_path):
    ds = Files()
    plan = BatchPlan(torch.tensor([0, 2, 3, 5, 6]), batch_size=3, seed=4)  # epochs wrap inside a batch
    identity = {"key": "files", "content": "v1", "split": "train"}
    store = DiskStore(tmp_path / "store")
    cold = TrainImages(ds, store, identity)
    batches = StepBatches(plan, cold, PRE.train_crops, 0, 6)
    assert all(_same(batches[s], _old_batch(ds, plan, s)) for s in range(6))
    assert cold.decoded == 5 and cold.hits == 6 * 3 - 5  # each image decoded once, then read from the store

    reads = ds.reads
    warm = TrainImages(ds, store, identity)  # another run of the same dataset
    for s in range(6):
        assert _same(StepBatches(plan, warm, PRE.train_crops, 0, 6)[s], _old_batch(ds, plan, s))
    assert warm.decoded == 0
    assert ds.reads - reads == 6 * 3  # only the reference path above decoded

    changed = TrainImages(ds, store, {**identity, "content": "v2"})  # the files changed: every entry misses
    changed.gather(plan.indices(0))
    assert changed.decoded == 3


def test_the_store_travels_to_spawned_workers_by_path(tmp_path):
    import pickle

    store = DiskStore(tmp_path / "store", size_limit=2**30)
    store.set("k", b"v")
    again = pickle.loads(pickle.dumps(store))
    assert again.get("k") == b"v" and again.size_limit == 2**30


def test_resume_starts_the_loader_at_the_step_with_the_same_batches():
    ds = Files()
    plan = BatchPlan(torch.arange(len(ds)), batch_size=4, seed=1)
    images = TrainImages(ds, NullCache())
    full = list(step_loader(StepBatches(plan, images, PRE.train_crops, 0, 5), loader_settings(torch.device("cpu"))))
    tail = list(step_loader(StepBatches(BatchPlan(torch.arange(len(ds)), 4, 1), images, PRE.train_crops, 3, 5),
                            loader_settings(torch.device("cpu"))))
    assert [b[0] for b in full] == [0, 1, 2, 3, 4] and [b[0] for b in tail] == [3, 4]
    for a, b in zip(full[3:], tail):
        assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))


def test_worker_processes_give_the_same_batches_and_leave_the_global_rng_alone():
    ds = random_images(10, size=30, seed=2)  # in memory (the concept world): sliced, never stored
    images = TrainImages(ds, DiskStore.__new__(DiskStore))  # a store it must not touch
    assert images.in_memory
    plan = BatchPlan(torch.arange(10), batch_size=4, seed=0)
    make = lambda: StepBatches(plan, images, PRE.train_crops, 0, 4)  # noqa: E731
    rng = torch.get_rng_state()
    local = list(step_loader(make(), loader_settings(torch.device("cpu"))))
    workers = list(step_loader(make(), {"num_workers": 2, "pin_memory": False, "persistent_workers": True}))
    assert torch.equal(torch.get_rng_state(), rng)  # the loaders drew no worker seed from the global generator
    assert [b[0] for b in workers] == [0, 1, 2, 3]
    for a, b in zip(local, workers):
        assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))


def test_loader_settings(monkeypatch):
    monkeypatch.delenv("LDIFS_DATA_WORKERS", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loader_settings(cpu) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    gpu = loader_settings(cuda)
    assert gpu["pin_memory"] and gpu["persistent_workers"] and 1 <= gpu["num_workers"] <= 4
    assert loader_settings(cpu, 3)["num_workers"] == 3  # the spec's data.num_workers wins
    monkeypatch.setenv("LDIFS_DATA_WORKERS", "2")
    assert loader_settings(cpu)["num_workers"] == 2 and loader_settings(cpu, 5)["num_workers"] == 5
    monkeypatch.setenv("LDIFS_DATA_WORKERS", "0")
    assert loader_settings(cuda)["num_workers"] == 0 and loader_settings(cuda)["pin_memory"]


# ---- through a whole run: same numbers with and without the store; a second run decodes nothing ----
def _offline_setup():
    spec = importlib.util.spec_from_file_location("offline_setup", ROOT / "bench" / "offline_setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _numbers(workdir: Path) -> dict:
    r = json.loads((workdir / "results.json").read_text())
    losses = [e["loss"] for e in read_events(workdir / "events.jsonl") if e["type"] == "step"]
    return {"losses": losses, **{k: r[k] for k in ("datasets", "target_head_acc", "summary", "curves", "wise_ft")},
            "final_loss": r["training"]["final_loss"]}


@pytest.mark.slow
def test_a_run_reads_training_images_from_the_store_with_identical_results(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    from safetensors.torch import load_file

    from ldifs_engine.launch import run
    from ldifs_engine.spec import RunSpec

    root = _offline_setup().write_fake_sets(tmp_path / "datasets", n_train=12, n_test=6, sets=("mnist",))
    spec = RunSpec.from_dict(tiny_spec(**{
        "data.target": "mnist", "data.controls": ["colour"], "data.max_train_samples": 10,
        "data.max_eval_samples": 6, "optim.steps": 3, "optim.batch_size": 4, "optim.warmup_steps": 1,
        "eval.linear_probe": False, "eval.curve_points": 1}))
    from ldifs_engine import hardware

    with monkeypatch.context() as m:  # and a CPU run on a machine with a visible GPU says so in its log
        m.setattr(hardware, "nvidia_gpu_visible", lambda: True)
        plain = run(spec, tmp_path / "plain", cache=NullCache(), data_root=root)  # decodes every image it reads
    logs = [e["message"] for e in read_events(tmp_path / "plain" / "events.jsonl") if e["type"] == "log"]
    assert any("NVIDIA GPU is visible" in line and "trains on the CPU" in line for line in logs)
    store = DiskStore(tmp_path / "store")
    run(spec, tmp_path / "cold", cache=store, data_root=root)

    def no_decoding(self, i):
        raise AssertionError("a second run of the same dataset must not decode images")

    monkeypatch.setattr(tvd.MNIST, "__getitem__", no_decoding)
    warm = run(spec, tmp_path / "warm", cache=store, data_root=root)
    assert warm["training"]["steps"] == plain["training"]["steps"] == 3
    a, b, c = (_numbers(tmp_path / d) for d in ("plain", "cold", "warm"))
    assert a == b == c and len(a["losses"]) == 3
    wa, wc = (load_file(tmp_path / d / "final" / "model.safetensors") for d in ("plain", "warm"))
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_workers_survive_the_sigint_of_a_graceful_stop():
    """A stop sends one SIGINT to the engine's whole process group: the loader's workers must not die of it
    (the engine stops at the next step boundary; a dead worker would fail the run instead)."""
    import os
    import signal
    import time

    ds = random_images(8, size=24, seed=1)
    plan = BatchPlan(torch.arange(8), batch_size=2, seed=0)
    it = iter(step_loader(StepBatches(plan, TrainImages(ds), PRE.train_crops, 0, 6),
                          {"num_workers": 2, "pin_memory": False, "persistent_workers": True}))
    # At once, before the workers can have run any start-up code of their own (a stop that arrives as
    # training starts), and again once batches flow.
    for w in it._workers:  # noqa: SLF001 — the worker processes of this iterator
        os.kill(w.pid, signal.SIGINT)
    first = next(it)
    for w in it._workers:  # noqa: SLF001
        os.kill(w.pid, signal.SIGINT)
    time.sleep(0.5)
    rest = list(it)
    assert [first[0], *(b[0] for b in rest)] == [0, 1, 2, 3, 4, 5]
