"""The real loading path, offline: catalog key → open_clip → Hugging Face model cache (seeded with random
weights under the entry's real hub name, HF_HUB_OFFLINE=1) → ``ldifs train`` at 224 px on
torchvision-layout data → a valid results.json. One ViT and one ResNet."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("offline_setup", ROOT / "bench" / "offline_setup.py")
offline_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_setup)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return offline_setup.write_fake_sets(tmp_path_factory.mktemp("datasets"), n_train=10, n_test=4)


def test_hub_names_are_the_real_ones():
    assert offline_setup.hub_location("ViT-B-32", "openai") == ("timm/vit_base_patch32_clip_224.openai",
                                                                  "open_clip_model.safetensors")
    assert offline_setup.hub_location("RN50", "openai") == ("timm/resnet50_clip.openai", "open_clip_model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["ViT-B-32/openai", "RN50/openai"])
def test_catalog_key_trains_from_a_seeded_offline_model_cache(key, datasets, tmp_path):
    from ldifs_engine.results import validate_results

    arch, tag = key.split("/")
    hf_home = tmp_path / "hf"
    weights = offline_setup.seed_hf_cache(arch, tag, hf_home)
    assert weights.relative_to(hf_home / "hub").parts[0] == \
        "models--" + offline_setup.hub_location(arch, tag)[0].replace("/", "--")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: offline {key}\nbackbone: {key}\nseed: 0\n"
        "data: {target: cifar10, controls: [mnist, svhn], max_train_samples: 4, max_eval_samples: 2}\n"
        "method: {name: ldifs, params: {alpha: 10}}\n"
        "optim: {steps: 2, batch_size: 1, warmup_steps: 0, checkpoint_every: 2}\n"
        "eval: {linear_probe: false, curve_points: 0}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", LDIFS_HOME=str(tmp_path / "home"),
               PYTHONWARNINGS="error::UserWarning:open_clip.factory")  # a QuickGELU mismatch fails the run
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "offline_setup.py"), "train", str(spec), "--out",
                        str(out), "--data-root", str(datasets)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    assert results["backbone"] == key and results["training"]["steps"] == 2
    assert set(results["datasets"]) == {"cifar10", "mnist", "svhn"}
    assert all(results["datasets"][k]["before"]["zs_acc"] is not None for k in results["datasets"])
    spec_json = json.loads((out / "spec.json").read_text())
    assert spec_json["backbone"] == key
    events = (out / "events.jsonl").read_text()
    assert "QuickGELU" not in r.stderr + events
