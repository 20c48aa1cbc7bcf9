"""GPU-speed training settings checked on CPU: each gives the plain path's losses within tolerance."""
from __future__ import annotations

import pytest
import torch

from ldifs_engine.accel import compile_tower, use_channels_last
from ldifs_engine.backbones import frozen_copy, load_backbone
from ldifs_engine.evaluate import Preprocessor
from ldifs_engine.events import EventSink
from ldifs_engine.methods import METHODS
from ldifs_engine.methods.base import TrainState
from ldifs_engine.train import TrainConfig, Trainer

from .helpers import random_images


def _losses(backbone: str, *, steps: int = 3, compile_: bool = False, **cfg_over) -> list[float]:
    torch.manual_seed(0)
    model = load_backbone(backbone)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    data = random_images(24, size=size, classes=4)
    head = torch.nn.Linear(model.visual.output_dim, 4)
    torch.nn.init.normal_(head.weight, std=0.05)
    st = TrainState(model=model, head=head, reference=frozen_copy(model.visual))
    if cfg_over.get("channels_last"):
        use_channels_last(model.visual)
        use_channels_last(st.reference.tower)
    if compile_:
        assert compile_tower(model.visual) > 0
    method = METHODS.get("ldifs")(METHODS.get("ldifs").Params(alpha=10.0))
    cfg = TrainConfig(total_steps=steps, batch_size=8, micro_batch=8, lr=1e-4, weight_decay=0.1, warmup_steps=0,
                      grad_clip=1.0, precision=cfg_over.pop("precision", "fp32"), checkpoint_every=100, seed=0,
                      **cfg_over)
    pre = Preprocessor({"size": size, "mean": (0.5,) * 3, "std": (0.25,) * 3})
    seen: list[float] = []
    sink = EventSink(None)
    real_emit = sink.emit

    def emit(kind, **kw):
        if kind == "step":
            seen.append(kw["loss"])
        return real_emit(kind, **kw)

    sink.emit = emit
    Trainer(method, st, data, torch.arange(len(data)), pre, cfg, device=torch.device("cpu"), sink=sink,
            ckpt_root=None, spec_hash="x").fit()
    return seen


@pytest.fixture(scope="module")
def plain_rn():
    return _losses("tiny-rn-random")


@pytest.fixture(scope="module")
def plain_vit():
    return _losses("tiny-vit-random")


def test_channels_last_resnet_matches(plain_rn):
    assert _losses("tiny-rn-random", channels_last=True) == pytest.approx(plain_rn, rel=1e-4, abs=1e-6)


def test_fused_adamw_matches(plain_vit):
    assert _losses("tiny-vit-random", fused_adamw=True) == pytest.approx(plain_vit, rel=1e-4, abs=1e-6)


def test_bf16_autocast_is_close_to_fp32(plain_vit):
    bf16 = _losses("tiny-vit-random", precision="bf16")
    assert bf16 == pytest.approx(plain_vit, rel=5e-2, abs=1e-3)
    assert bf16 != plain_vit  # autocast really ran in bf16


@pytest.mark.slow
def test_compiled_tower_matches_and_keeps_the_taps(plain_vit, monkeypatch):
    # aot_eager: dynamo capture + AOT autograd, as inductor sees them, without minutes of C++ codegen on 2 cores
    monkeypatch.setenv("LDIFS_COMPILE_BACKEND", "aot_eager")
    assert _losses("tiny-vit-random", compile_=True) == pytest.approx(plain_vit, rel=1e-3, abs=1e-5)
