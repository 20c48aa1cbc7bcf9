"""bench/gpu_check.sh: the GPU machine's one command, run end to end at toy scale on the CPU."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("ldifs_over_ce=", "naive_over_ldifs=", "peak_ldifs_over_ce=", "train_images_per_s=",
           "time_to_results_json_s=", "whole_over_bare=", "warm_over_cold=", "warm_decoded=0")


def test_script_is_valid_bash_and_downloads_nothing():
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], check=True)
    assert "HF_HUB_OFFLINE=1" in script and "curl" not in script and "wget" not in script
    assert "--batch 128" in script or 'BATCH=128' in script


@pytest.mark.slow
def test_dry_run_prints_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LDIFS_"))}
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("GPU-CHECK ")]
    for fig in FIGURES:
        assert any(fig in line for line in lines), (fig, lines)
    assert not list(tmp_path.glob("tmp*"))  # the temporary model cache and data are removed
