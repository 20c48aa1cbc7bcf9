"""Is the GPU actually usable? Torch-free, so the web process and the worker can ask at start.

A CPU-only torch wheel on a GPU machine trains silently on the CPU; ``gpu_warning`` says so in one
line. Torch's build is read from its installed ``torch/version.py`` (``cuda = '12.4'`` or ``None``)
without importing torch, and the GPU from ``nvidia-smi`` on PATH or ``/dev/nvidia<N>`` device files.
"""
from __future__ import annotations

import ast
import glob
import importlib.util
import os
import shutil
from pathlib import Path


def nvidia_gpu_visible() -> bool:
    """An NVIDIA driver is present: ``nvidia-smi`` on PATH or a ``/dev/nvidia<N>`` device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False  # GPUs hidden on purpose
    return bool(shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*"))


def torch_build() -> dict:
    """``{"installed": bool, "version": str|None, "cuda": str|None}`` read from torch's version file."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False, "version": None, "cuda": None}
    path = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    out = {"installed": True, "version": None, "cuda": None}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return out
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("__version__", "cuda") and isinstance(value, ast.Constant):
            out["version" if target.id == "__version__" else "cuda"] = value.value
    return out


def gpu_warning() -> str | None:
    """One line when an NVIDIA GPU is visible but the installed torch cannot use it, else None."""
    if not nvidia_gpu_visible():
        return None
    build = torch_build()
    if not build["installed"] or build["cuda"]:
        return None
    return (f"An NVIDIA GPU is visible but torch {build['version'] or '?'} is a CPU-only build: runs will train on "
            "the CPU. Install a CUDA wheel (docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/"
            "cu126, see docs/DEPLOY.md).")


def cpu_fallback_note(device_type: str, torch_version: str, torch_cuda: str | None) -> str | None:
    """One line for a run that picked the CPU although an NVIDIA GPU is visible, else None.

    ``gpu_warning`` catches a CPU-only wheel before anything starts; this also catches a CUDA wheel that
    cannot use the card (a driver older than the wheel's CUDA, a card the wheel was not built for)."""
    if device_type != "cpu" or not nvidia_gpu_visible():
        return None
    why = (f"its CUDA {torch_cuda} build cannot use the card (is the driver new enough for CUDA {torch_cuda}? "
           "`nvidia-smi` shows the highest CUDA version it supports)" if torch_cuda else "it is a CPU-only build")
    return (f"An NVIDIA GPU is visible but torch {torch_version} {why}: this run trains on the CPU. "
            "See docs/DEPLOY.md for choosing the torch wheel.")
