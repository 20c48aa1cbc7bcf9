"""Prove the real loading path offline: seed open_clip's Hugging Face model cache with random weights
under a catalog entry's real hub name, write small torchvision-layout datasets, run ``ldifs train``.

    python bench/offline_setup.py seed --arch ViT-B-32 --tag openai --hf-home /tmp/hf
    python bench/offline_setup.py data --root /tmp/datasets --train 8 --test 4
    HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 python bench/offline_setup.py train SPEC --out RUN --data-root /tmp/datasets

``seed`` writes exactly what ``hf download <repo> open_clip_model.safetensors`` leaves in a
hub cache (``hub/models--<org>--<name>/snapshots/<rev>/`` + ``refs/main``), so the engine's ordinary
catalog key → ``open_clip.create_model(arch, pretrained=tag)`` → ``hf_hub_download`` path finds it with
``HF_HUB_OFFLINE=1``. Nothing in the engine knows about this script. The weights are random: for the
plumbing, step times and memory, never for accuracy.

``train`` runs ``ldifs train`` in this process after one stub: torchvision checks the MD5 sums of the
official CIFAR/SVHN files, which fake data cannot match; only that check is skipped (the files are
read by torchvision's own readers).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on shared cores


def hub_location(arch: str, tag: str) -> tuple[str, str]:
    """(repo id, file name) open_clip downloads for ``(arch, tag)`` (safetensors preferred, as it does)."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        raise SystemExit(f"{arch}/{tag} has no Hugging Face hub id in open_clip's registry")
    repo, filename = os.path.split(hub)
    return repo, filename or HF_SAFE_WEIGHTS_NAME


def seed_hf_cache(arch: str, tag: str, hf_home: str | Path, *, seed: int = 0) -> Path:
    """Write random weights of ``arch`` (with the activation ``tag`` asks for) into the hub cache layout
    under ``hf_home/hub``; returns the weights file. Idempotent."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    repo, filename = hub_location(arch, tag)
    cache = Path(hf_home) / "hub" / f"models--{repo.replace('/', '--')}"
    revision = hashlib.sha1(f"ldifs-random-{repo}-{seed}".encode()).hexdigest()  # any 40-hex commit id
    target = cache / "snapshots" / revision / filename
    if target.is_file():
        return target
    torch.manual_seed(seed)
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(target) + ".tmp")
    os.replace(str(target) + ".tmp", target)
    (cache / "refs").mkdir(parents=True, exist_ok=True)
    (cache / "refs" / "main").write_text(revision)
    return target


# ---- torchvision-layout datasets ------------------------------------------------------------
def _idx(path: Path, arr) -> None:
    magic = 0x0800 | arr.ndim
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


def write_fake_sets(root: str | Path, *, n_train: int = 8, n_test: int = 4, seed: int = 0,
                    sets: tuple[str, ...] = ("cifar10", "mnist", "svhn")) -> Path:
    """CIFAR-10, MNIST and SVHN folders in torchvision's on-disk layout, random pixels, under ``root``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(root)
    if "cifar10" in sets:
        base = root / "cifar10" / "cifar-10-batches-py"
        base.mkdir(parents=True, exist_ok=True)
        per = max(1, -(-n_train // 5))
        for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
            batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                     "labels": [int(x) for x in rng.integers(0, 10, n)]}
            (base / name).write_bytes(pickle.dumps(batch))
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    if "mnist" in sets:
        raw = root / "mnist" / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
            _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    if "svhn" in sets:
        from scipy.io import savemat

        base = root / "svhn"
        base.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("test", n_test)):
            savemat(base / f"{split}_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, n), dtype=np.uint8),
                                                  "y": rng.integers(1, 11, (n, 1), dtype=np.uint8)})
    return root


def skip_torchvision_md5() -> None:
    """Fake files cannot match the official MD5 sums torchvision checks for CIFAR and SVHN."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    cifar.check_integrity = svhn.check_integrity = lambda *a, **k: True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed", help="random weights under a catalog entry's real hub name")
    s.add_argument("--arch", required=True)
    s.add_argument("--tag", required=True)
    s.add_argument("--hf-home", required=True)
    d = sub.add_parser("data", help="fake CIFAR-10 / MNIST / SVHN in torchvision's layout")
    d.add_argument("--root", required=True)
    d.add_argument("--train", type=int, default=8)
    d.add_argument("--test", type=int, default=4)
    t = sub.add_parser("train", help="`ldifs train` with torchvision's MD5 check of the fake files skipped")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "seed":
        print(seed_hf_cache(args.arch, args.tag, args.hf_home))
    elif args.cmd == "data":
        print(write_fake_sets(args.root, n_train=args.train, n_test=args.test))
    else:
        skip_torchvision_md5()
        from app.cli import main as ldifs

        return ldifs(["train", *args.rest]) or 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
