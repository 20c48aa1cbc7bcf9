"""Feature taps: shapes for the paper's architectures, one forward per step, early-stopping reference."""
from __future__ import annotations

import open_clip
import pytest
import torch

from ldifs_engine.backbones import (
    BACKBONES, frozen_copy, image_taps, load_backbone, reference_taps, tap_points,
)
from ldifs_engine.methods import METHODS
from ldifs_engine.methods.base import TrainState


@pytest.fixture(scope="module")
def vit_b32():
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="module")
def rn50():
    return open_clip.create_model("RN50", pretrained=None).eval()


def test_vit_b32_gives_five_taps_of_b_t_d(vit_b32):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        emb, taps = image_taps(vit_b32.visual, x)
        expected_emb = vit_b32.encode_image(x)
    assert len(taps) == 5
    assert all(t.shape == (2, 50, 768) for t in taps)
    assert torch.allclose(emb, expected_emb, atol=1e-5)  # the embedding is encode_image's
    blocks = list(vit_b32.visual.transformer.resblocks)
    points = tap_points(vit_b32.visual)
    assert points[0] is vit_b32.visual.ln_pre
    assert [blocks.index(p) for p in points[1:]] == [2, 5, 8, 11]  # after blocks 3, 6, 9, 12


def test_rn50_gives_stem_and_four_layers(rn50):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        emb, taps = image_taps(rn50.visual, x)
    assert [tuple(t.shape) for t in taps] == [
        (2, 64, 56, 56), (2, 256, 56, 56), (2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7)]
    assert emb.shape == (2, 1024)


@pytest.mark.parametrize("depth,expected", [(4, [0, 1, 2, 3]), (6, [1, 2, 4, 5]), (12, [2, 5, 8, 11]), (24, [5, 11, 17, 23])])
def test_other_depths_generalise(depth, expected):
    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_pre = torch.nn.Identity()
            self.transformer = torch.nn.Module()
            self.transformer.resblocks = torch.nn.ModuleList(torch.nn.Identity() for _ in range(depth))

    f = Fake()
    points = tap_points(f)
    assert [list(f.transformer.resblocks).index(p) for p in points[1:]] == expected
    assert len(tap_points(f, "all_blocks")) == depth + 1


def test_reference_stops_after_last_tap():
    model = load_backbone("tiny-vit-random")
    ref = frozen_copy(model.visual)
    calls = []
    ref.tower.ln_post.register_forward_hook(lambda *a: calls.append("ln_post"))
    taps = reference_taps(ref, torch.randn(2, 3, 48, 48))
    assert len(taps) == 5 and not calls
    assert all(not t.requires_grad for t in taps)


def test_trained_tower_runs_once_per_ldifs_step():
    model = load_backbone("tiny-vit-random")
    st = TrainState(model=model, head=torch.nn.Linear(128, 4), reference=frozen_copy(model.visual))
    method = METHODS.get("ldifs")()
    calls = []
    model.visual.register_forward_hook(lambda *a: calls.append(1))
    task, reg = method.loss(st, torch.randn(3, 3, 48, 48), torch.tensor([0, 1, 2]))
    (task + reg).backward()
    assert len(calls) == 1


def test_resnet_tower_trains_with_ldifs():
    model = load_backbone("tiny-rn-random")
    st = TrainState(model=model, head=torch.nn.Linear(64, 3), reference=frozen_copy(model.visual))
    model.train()
    task, reg = METHODS.get("ldifs")().loss(st, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    (task + reg).backward()
    assert st.reference.tower.layer1[0].bn1.training is False  # reference BatchNorm stays in eval


def test_catalog_pairs_are_known_to_open_clip():
    from ldifs_engine.backbones import catalog_check

    assert catalog_check() == []
    assert "concept-clip-tiny" in BACKBONES and "ViT-B-32/openai" in BACKBONES
