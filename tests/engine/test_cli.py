"""The engine's command line: end-to-end on a tiny model, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from ldifs_engine.results import results_problems

from .helpers import tiny_spec


def engine(*args, env_home, timeout=300):
    import os

    env = {**os.environ, "LDIFS_HOME": str(env_home)}
    return subprocess.run([sys.executable, "-m", "ldifs_engine", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_train_writes_results_matching_schema(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(**{"eval.linear_probe": False, "optim.steps": 3})))
    p = engine("train", str(spec), "--out", str(tmp_path / "out"), env_home=tmp_path / "home")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results_problems(r) == []
    assert "mean ΔZS" in p.stdout
    for name in ("spec.json", "events.jsonl", "checkpoints", "final/model.safetensors"):
        assert (tmp_path / "out" / name).exists(), name


def test_bad_spec_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(**{"optim.lr": -1, "method.params.alpha": "lots"})))
    p = engine("train", str(spec), "--out", str(tmp_path / "out"), env_home=tmp_path / "home")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1
    assert "optim.lr" in p.stderr and "method.params.alpha" in p.stderr


def test_missing_spec_file(tmp_path):
    p = engine("train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"), env_home=tmp_path)
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


def test_offline_download_fails_fast_with_clear_message(tmp_path):
    p = engine("eval", "--backbone", "ViT-B-32/openai", "--datasets", "colour", "--no-lp",
               env_home=tmp_path, timeout=120)
    assert p.returncode == 5, p.stderr
    assert "ViT-B-32/openai" in p.stderr and "could not be loaded" in p.stderr
    assert "Traceback" not in p.stderr


def test_listings():
    import os

    for cmd, word in (("backbones", "concept-clip-tiny"), ("methods", "ldifs"), ("datasets", "quadrant")):
        p = subprocess.run([sys.executable, "-m", "ldifs_engine", cmd, "--json"], capture_output=True, text=True,
                           timeout=120, env=os.environ)
        assert p.returncode == 0 and word in p.stdout
        json.loads(p.stdout)
