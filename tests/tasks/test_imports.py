"""Importing the service layer never touches CUDA (a forked or threaded worker must stay CUDA-free)."""
from __future__ import annotations

import subprocess
import sys

from .conftest import REPO

PROBE = """
import torch

def boom(*a, **k):
    raise AssertionError("CUDA touched at import")

torch.cuda.is_available = boom
torch.cuda.init = boom
torch.cuda.device_count = boom
torch.cuda._lazy_init = boom
import tasks, tasks.api, tasks.store, tasks.queue, tasks.jobs, tasks.reaper, tasks.worker
import tasks.cli_jobs, tasks.events, tasks.leases
print("ok")
"""

LIGHT = """
import sys
import tasks.worker, tasks.jobs, tasks.store, tasks.queue, tasks.reaper, tasks.cli_jobs, tasks.api
heavy = [m for m in ("torch", "open_clip", "gradio") if m in sys.modules]
print(",".join(heavy) or "light")
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_tasks_does_not_touch_cuda():
    assert _run(PROBE) == "ok"


def test_the_worker_and_the_api_do_not_even_import_torch():
    assert _run(LIGHT) == "light"
