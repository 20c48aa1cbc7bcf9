"""Operator-registered backbones (LDIFS_BACKBONES) and the activation of every catalog entry."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldifs_engine import backbones as bb
from ldifs_engine.backbone_file import looks_like_path, parse_file
from ldifs_engine.errors import SpecError
from ldifs_engine.spec import RunSpec

parse_spec = RunSpec.from_dict

TINY = bb.ASSETS / "concept-clip-tiny.safetensors"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def operator_file(tmp_path, monkeypatch):
    """Write an operator file, point LDIFS_BACKBONES at it, register; operator entries removed after."""
    def write(text: str) -> list[str]:
        path = tmp_path / "backbones.yaml"
        path.write_text(text)
        monkeypatch.setenv("LDIFS_BACKBONES", str(path))
        return bb.register_operator_backbones()

    yield write
    for key, info in bb.BACKBONES.items():
        if info.operator:
            bb.BACKBONES.unregister(key)
    bb.OPERATOR_PROBLEMS.clear()


def test_valid_operator_entry_loads_its_weights_and_is_listed(operator_file, tmp_path):
    weights = tmp_path / "inhouse.safetensors"
    weights.write_bytes(TINY.read_bytes())
    problems = operator_file(f"backbones:\n  - key: inhouse-tiny\n    arch: ldifs-concept-vit\n"
                             f"    weights: {weights}\n    title: In-house tiny\n")
    assert problems == []
    assert bb.check_operator_shapes() == []
    meta = bb.BACKBONES.get("inhouse-tiny").meta()
    assert meta["operator"] and not meta["needs_download"] and not meta["random_init"]
    assert str(tmp_path) not in str(meta)  # users see keys and titles, never the operator's paths
    model = bb.load_backbone("inhouse-tiny")
    expected = load_file(str(TINY))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    # a run spec may name it like any catalog key
    assert parse_spec({"backbone": "inhouse-tiny", "data": {"target": "quadrant"}, "optim": {"steps": 1}}).backbone == "inhouse-tiny"
    from tasks import api

    assert "inhouse-tiny" in [b["key"] for b in api.catalog_backbones()]  # what the New run form lists


def test_unknown_architecture_missing_file_and_bad_key_one_line_each(operator_file, tmp_path):
    problems = operator_file(
        "backbones:\n"
        f"  - {{key: a, arch: ViT-Q-99, weights: {TINY}}}\n"
        f"  - {{key: b, arch: ViT-B-32, weights: {tmp_path / 'nope.safetensors'}}}\n"
        f"  - {{key: /etc/evil, arch: ViT-B-32, weights: {TINY}}}\n"
        f"  - {{key: c, arch: ViT-B-32, weights: {tmp_path / 'model.bin'}}}\n"
        f"  - {{key: concept-clip-tiny, arch: ldifs-concept-vit, weights: {TINY}}}\n")
    assert len(problems) == 5, problems
    assert "ViT-Q-99" in problems[0] and "not an open_clip architecture" in problems[0]
    assert "nope.safetensors does not exist" in problems[1]
    assert "never a path" in problems[2]
    assert "pickled checkpoints are never loaded" in problems[3]
    assert "already in the catalog" in problems[4]
    assert all(p.startswith("LDIFS_BACKBONES=") and "\n" not in p for p in problems)
    assert not [k for k, b in bb.BACKBONES.items() if b.operator]


def test_wrong_shapes_are_found_at_start_and_the_entry_dropped(operator_file, tmp_path):
    state = load_file(str(TINY))
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    assert operator_file(f"backbones:\n  - {{key: bad-shapes, arch: ldifs-concept-vit, weights: {bad}}}\n") == []
    problems = bb.check_operator_shapes()
    assert len(problems) == 1 and "bad-shapes" in problems[0] and "wrong shape" in problems[0] and key in problems[0]
    assert "bad-shapes" not in bb.BACKBONES
    # and were it loaded anyway, the strict loader refuses it with a readable error
    bb.register_backbone(bb.BackboneInfo("bad-shapes", "ldifs-concept-vit", weights_file=str(bad), operator=True))
    with pytest.raises(bb.ModelUnavailable, match="does not match"):
        bb.load_backbone("bad-shapes")


@pytest.mark.slow  # a child interpreter imports torch and open_clip
def test_app_and_worker_start_report_wrong_shapes_without_loading_torch(operator_file, tmp_path):
    from ldifs_engine.backbone_file import check_shapes_in_child
    from tasks import api

    state = load_file(str(TINY))
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(tmp_path / "bad.safetensors"))
    operator_file(f"backbones:\n  - {{key: good, arch: ldifs-concept-vit, weights: {TINY}}}\n"
                  f"  - {{key: bad-shapes, arch: ldifs-concept-vit, weights: {tmp_path / 'bad.safetensors'}}}\n")
    lines = [line for line in api.startup_warnings() if "LDIFS_BACKBONES" in line]  # what app and worker log
    assert len(lines) == 1 and "bad-shapes" in lines[0] and "wrong shape" in lines[0] and key in lines[0]
    operator_file("backbones:\n  - {key: cached, arch: ViT-B-32, pretrained: openai}\n")
    assert check_shapes_in_child() == []  # no weights file: no child started


def test_path_looking_user_key_is_refused():
    for key in ("/srv/models/x.safetensors", "../x", "~/w.safetensors", "C:\\m.bin", "hf-hub:org/repo", "a/b/c"):
        assert looks_like_path(key), key
        with pytest.raises(SpecError, match="not a file path or hub id"):
            parse_spec({"backbone": key, "data": {"target": "quadrant"}, "optim": {"steps": 1}})
    assert not looks_like_path("ViT-B-32/openai")


def test_unreadable_or_invalid_file_is_one_line(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("backbones: [\n")
    good, problems = parse_file(f)
    assert good == [] and len(problems) == 1 and "not valid YAML" in problems[0]
    good, problems = parse_file(tmp_path / "missing.yaml")
    assert good == [] and len(problems) == 1 and "cannot read" in problems[0]


def test_cli_lists_operator_entries_and_prints_problems(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(TINY.read_bytes())
    f = tmp_path / "b.yaml"
    f.write_text(f"backbones:\n  - {{key: local-tiny, arch: ldifs-concept-vit, weights: {weights}}}\n"
                 f"  - {{key: broken, arch: nope, weights: {weights}}}\n")
    env = {"LDIFS_BACKBONES": str(f), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "ldifs_engine", "backbones"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("local-tiny") and "operator" in line for line in r.stdout.splitlines())
    assert "broken" not in r.stdout and "broken" in r.stderr and "nope" in r.stderr


def test_listing_without_operator_weights_loads_no_tensor_library():
    """Nothing to shape-check: ``ldifs backbones`` answers without importing torch or open_clip (seconds saved)."""
    code = ("import contextlib, io, sys\n"
            "from ldifs_engine.__main__ import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: rc = main(['backbones', '--json'])\n"
            "print(rc, 'concept-clip-tiny' in out.getvalue(), sorted({'torch', 'open_clip'} & set(sys.modules)))")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": "/nonexistent"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.split("\n")[0] == "0 True []", r.stdout + r.stderr


# ---- QuickGELU: every catalog entry builds with the activation its weights were trained with ----------
def test_every_catalog_entry_builds_without_quickgelu_mismatch(monkeypatch):
    import open_clip
    import open_clip.factory as factory

    bb._add_builtin_configs()
    monkeypatch.setattr(factory, "download_pretrained", lambda *a, **k: "")  # offline: config only
    checked = 0
    for key, info in bb.BACKBONES.items():
        kw = bb.create_kwargs(info)
        kw.pop("require_pretrained", None)
        with warnings.catch_warnings(record=True) as caught, torch.device("meta"):
            warnings.simplefilter("always")
            model = open_clip.create_model(**kw, load_weights=False, device="meta")  # no memory, no weights
        assert not [w for w in caught if "QuickGELU" in str(w.message)], key
        if info.pretrained:
            wants = open_clip.get_pretrained_cfg(info.arch, info.pretrained).get("quick_gelu", False)
            assert kw["force_quick_gelu"] == wants, key
            checked += 1
        if info.pretrained == "openai" and info.tower == "vit":
            act = model.visual.transformer.resblocks[0].mlp.gelu
            assert type(act).__name__ == "QuickGELU", key
    assert checked >= 5
