"""The run as a recipe: methods prepare their own state through hooks; library calls leave the process
as they found it (signal handlers, logging, open files)."""
from __future__ import annotations

import ast
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from ldifs_engine import runner
from ldifs_engine.backbones import get_tokenizer, load_backbone
from ldifs_engine.methods import METHODS
from ldifs_engine.methods.base import CEFamily, TrainState
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec

RECIPE_STEPS = ("prepare", "evaluate_before", "build_state", "train", "evaluate_after", "wise_ft", "write_results")


def _state(model, classnames=("a", "b", "c"), templates=("a photo of {}.", "{}")) -> TrainState:
    return TrainState(model=model, head=torch.nn.Linear(128, len(classnames)), classnames=classnames,
                      templates=templates, tokenizer=get_tokenizer("tiny-vit-random"))


@pytest.fixture(scope="module")
def model():
    return load_backbone("tiny-vit-random")


def test_each_method_prepares_what_it_declares(model):
    prepared = {}
    for name in ("ce", "l2sp", "ldifs", "flyp"):
        st = _state(model)
        METHODS.get(name)().setup(st)
        prepared[name] = (st.reference is not None, bool(st.anchor), "caption_tokens" in st.extras)
    assert prepared == {"ce": (False, False, False), "l2sp": (False, True, False),
                        "ldifs": (True, False, False), "flyp": (False, False, True)}
    st = _state(model)
    METHODS.get("flyp")().setup(st)
    assert st.extras["caption_tokens"].shape[:2] == (3, 2)  # class × template


def test_reference_of_other_weights_is_loaded_and_frozen(model):
    other = {k: v + 1.0 if k == "visual.conv1.weight" else v for k, v in model.state_dict().items()}
    st = _state(model)
    st.reference_state = other
    METHODS.get("ldifs")().setup(st)
    assert torch.equal(st.reference.tower.conv1.weight, other["visual.conv1.weight"])
    assert not any(p.requires_grad for p in st.reference.parameters())


def test_zero_shot_weights_hook_changes_only_for_a_method_that_trains_text(model):
    st = _state(model)
    assert METHODS.get("ldifs")().zero_shot_weights(st, st.classnames, st.templates) is None
    w = METHODS.get("flyp")().zero_shot_weights(st, st.classnames, st.templates)
    assert w.shape == (3, model.text_projection.shape[1])


def test_a_new_method_with_new_state_is_one_class(model):
    class Memo(CEFamily):  # a regulariser needing state the runner has never heard of
        name, title, description = "memo", "Memo", "test"

        def setup(self, st):
            super().setup(st)
            st.extras["first_conv"] = st.model.visual.conv1.weight.detach().clone()

        def regularizer(self, st, images, emb, taps):
            return (st.model.visual.conv1.weight - st.extras["first_conv"]).pow(2).sum()

    st = _state(model)
    m = Memo()
    m.setup(st)
    task, reg = m.loss(st, torch.randn(2, 3, 48, 48), torch.tensor([0, 1]))
    assert reg.item() == 0.0 and task.item() > 0


def test_the_recipe_reads_top_to_bottom_without_method_branches():
    tree = ast.parse(Path(runner.__file__).read_text(encoding="utf-8"))
    flags = {"trains_text", "uses_head", "needs_reference", "needs_anchor", "needs_caption_tokens"}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & flags
    assert used == set(), f"the runner branches on method flags: {used}"
    run_task = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_task")
    calls = [n.func.attr for n in ast.walk(run_task) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "recipe"]
    assert tuple(calls) == RECIPE_STEPS
    too_long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert too_long == []


def _fds_to(path: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            out.append(fd)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_failed_run_leaves_no_handler_and_no_open_event_file(tmp_path):
    spec = RunSpec.from_dict(tiny_spec())
    wd = tmp_path / "run"
    (wd / "spec.json").mkdir(parents=True)  # the spec snapshot cannot be written: the run fails at once
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(OSError):
        runner.run_task(spec, wd)
    assert signal.getsignal(signal.SIGINT) is handler
    assert _fds_to(wd / "events.jsonl") == []


def test_loading_a_backbone_leaves_the_process_logging_alone(caplog):
    root = logging.getLogger()
    level, handlers, filters = root.level, list(root.handlers), list(root.filters)
    load_backbone("tiny-vit-random")  # open_clip warns about random init: silenced for the call only
    assert (root.level, root.handlers, root.filters) == (level, handlers, filters)
    logging.getLogger("ldifs.test").warning("still heard")
    assert "still heard" in caplog.text
