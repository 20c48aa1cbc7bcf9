"""L2-SP, label smoothing, FLYP and WiSE-FT against their formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ldifs_engine.backbones import load_backbone
from ldifs_engine.methods import METHODS, clip_contrastive_loss, l2sp_penalty
from ldifs_engine.methods.base import TrainState
from ldifs_engine.runner import interpolate
from ldifs_engine.spec import RunSpec


def _spec(method: dict) -> RunSpec:
    return RunSpec.from_dict({"backbone": "tiny-vit-random", "optim": {"steps": 3}, "data": {"target": "quadrant"},
                              "method": method})


def test_l2sp_penalty_is_sum_of_squared_distances():
    w = [("a", torch.tensor([1.0, 2.0])), ("b", torch.tensor([[3.0]]))]
    anchor = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.0]])}
    assert l2sp_penalty(w, anchor).item() == pytest.approx(1 + 4 + 4)


def test_l2sp_regulariser_uses_strength_and_image_tower_only():
    spec = _spec({"name": "l2sp", "params": {"strength": 0.25}})
    model = load_backbone("tiny-vit-random")
    anchor = {f"model.visual.{n}": p.detach().clone() for n, p in model.visual.named_parameters()}
    with torch.no_grad():
        model.visual.conv1.weight.add_(1.0)
        model.transformer.resblocks[0].mlp.c_fc.weight.add_(5.0)  # text tower: not regularised
    st = TrainState(model=model, head=torch.nn.Linear(128, 4), anchor=anchor)
    m = METHODS.get("l2sp")(spec.method.params)
    reg = m.regularizer(st, None, None, None)
    assert reg.item() == pytest.approx(0.25 * model.visual.conv1.weight.numel(), rel=1e-5)


def test_label_smoothing_matches_formula():
    spec = _spec({"name": "ls", "params": {"epsilon": 0.2}})
    model = load_backbone("tiny-vit-random")
    head = torch.nn.Linear(128, 4)
    st = TrainState(model=model, head=head)
    x, y = torch.randn(5, 3, 48, 48), torch.tensor([0, 1, 2, 3, 0])
    task, reg = METHODS.get("ls")(spec.method.params).loss(st, x, y)
    logits = head(F.normalize(model.encode_image(x), dim=-1))
    logp = logits.log_softmax(1)
    target = torch.full_like(logp, 0.2 / 4)
    target[torch.arange(5), y] += 0.8
    assert task.item() == pytest.approx(-(target * logp).sum(1).mean().item(), abs=1e-5)
    assert reg.item() == 0.0


def test_clip_contrastive_loss_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    scale = torch.tensor(math.log(10.0))
    got = clip_contrastive_loss(img, txt, scale)
    logits = 10.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    manual = 0.0
    for i in range(4):
        manual += -logits[i].log_softmax(0)[i] - logits[:, i].log_softmax(0)[i]
    assert got.item() == pytest.approx((manual / 8).item(), abs=1e-5)


def test_flyp_trains_both_towers_and_temperature():
    spec = _spec({"name": "flyp"})
    model = load_backbone("tiny-vit-random")
    from ldifs_engine.backbones import get_tokenizer

    tok = get_tokenizer("tiny-vit-random")
    classes, templates = ("a", "b"), ("a photo of {}.", "an {}.")
    st = TrainState(model=model, head=None, classnames=classes, templates=templates, tokenizer=tok)
    st.extras["caption_tokens"] = tok([t.replace("{}", c) for c in classes for t in templates]).view(2, 2, -1)
    m = METHODS.get("flyp")(spec.method.params)
    task, _ = m.loss(st, torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 0, 1]), torch.Generator().manual_seed(0))
    task.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    assert model.token_embedding.weight.grad is not None
    names = [n for n, _ in m.trainable(st, freeze_head=False)]
    assert "model.logit_scale" in names and any(n.startswith("model.transformer") for n in names)


def test_flyp_rejects_frozen_head_and_lp_init():
    from ldifs_engine.errors import SpecError

    with pytest.raises(SpecError) as e:
        _spec({"name": "flyp", "freeze_head": True, "head_init": "lp"})
    assert any(p.startswith("method.freeze_head") for p in e.value.problems)
    assert any(p.startswith("method.head_init") for p in e.value.problems)


def test_wise_ft_endpoints_and_midpoint():
    t0 = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    t1 = {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(7)}
    assert torch.equal(interpolate(t0, t1, 0.0)["w"], t0["w"])
    assert torch.equal(interpolate(t0, t1, 1.0)["w"], t1["w"])
    assert torch.allclose(interpolate(t0, t1, 0.25)["w"], torch.tensor([0.25, 2.5]))
    assert interpolate(t0, t1, 0.5)["n"].item() == 7  # integer buffers are not blended
    with pytest.raises(ValueError):
        interpolate(t0, {"w": t1["w"]}, 0.5)


def test_every_method_is_registered_with_metadata():
    for name, cls in METHODS.items():
        meta = cls.meta()
        assert meta["name"] == name and meta["title"] and meta["description"]
        for p in meta["params"]:
            assert p["help"], (name, p["name"])
