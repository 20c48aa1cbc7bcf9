"""The GPU-visible-but-CPU-torch warning, read without importing torch."""
from __future__ import annotations

import subprocess
import sys

from ldifs_engine import hardware


def test_torch_build_is_read_from_the_installed_version_file():
    import torch

    build = hardware.torch_build()
    assert build["installed"] and build["version"] == torch.__version__ and build["cuda"] == torch.version.cuda


def test_reading_the_build_does_not_import_torch():
    code = ("import sys; from ldifs_engine import hardware; hardware.torch_build(); hardware.gpu_warning(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_warns_only_for_a_visible_gpu_with_cpu_torch(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(hardware, "torch_build", lambda: {"installed": True, "version": "2.10.0+cpu", "cuda": None})
    line = hardware.gpu_warning()
    assert line and "\n" not in line and "2.10.0+cpu" in line and "CPU-only" in line
    monkeypatch.setattr(hardware, "torch_build", lambda: {"installed": True, "version": "2.10.0", "cuda": "12.4"})
    assert hardware.gpu_warning() is None
    monkeypatch.setattr(hardware, "torch_build", lambda: {"installed": True, "version": "2.10.0+cpu", "cuda": None})
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    monkeypatch.setattr(hardware.glob, "glob", lambda pattern: [])
    assert hardware.gpu_warning() is None  # no GPU: nothing to say
    monkeypatch.setattr(hardware.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert hardware.gpu_warning() is not None


def test_startup_warnings_one_line_per_problem(monkeypatch):
    from tasks import api

    monkeypatch.setattr(hardware, "gpu_warning", lambda: "GPU visible, torch CPU-only")
    monkeypatch.setenv("LDIFS_BACKBONES", "/nonexistent/backbones.yaml")
    lines = api.startup_warnings()
    assert lines[0] == "GPU visible, torch CPU-only" and "cannot read the file" in lines[1]


def test_the_warning_names_the_wheel_index_the_dockerfile_uses(monkeypatch):
    import re
    from pathlib import Path

    index = re.search(r"ARG TORCH_INDEX=(\S+)", (Path(__file__).resolve().parents[2] / "Dockerfile").read_text())
    monkeypatch.setattr(hardware, "nvidia_gpu_visible", lambda: True)
    monkeypatch.setattr(hardware, "torch_build", lambda: {"installed": True, "version": "2.10.0+cpu", "cuda": None})
    assert index and index.group(1) in hardware.gpu_warning()


def test_a_run_on_the_cpu_with_a_gpu_visible_says_why(monkeypatch):
    monkeypatch.setattr(hardware, "nvidia_gpu_visible", lambda: True)
    line = hardware.cpu_fallback_note("cpu", "2.10.0+cu126", "12.6")
    assert line and "\n" not in line and "driver" in line and "12.6" in line  # a CUDA wheel the card cannot use
    assert "CPU-only" in hardware.cpu_fallback_note("cpu", "2.10.0+cpu", None)
    assert hardware.cpu_fallback_note("cuda", "2.10.0+cu126", "12.6") is None
    monkeypatch.setattr(hardware, "nvidia_gpu_visible", lambda: False)
    assert hardware.cpu_fallback_note("cpu", "2.10.0+cpu", None) is None
