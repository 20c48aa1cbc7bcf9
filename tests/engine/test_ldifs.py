"""LDIFS pinned to its definition (METHOD.md §2)."""
from __future__ import annotations


import pytest
import torch

from ldifs_engine import ldifs_distance
from ldifs_engine.backbones import frozen_copy, image_taps, load_backbone, reference_taps
from ldifs_engine.methods import METHODS
from ldifs_engine.methods.base import TrainState
from ldifs_engine.spec import RunSpec


def reference_impl(ref_taps, taps, normalize):
    """A deliberately plain re-implementation: loops over samples and taps."""
    B = ref_taps[0].shape[0]
    out = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        per_tap = []
        for r, t in zip(ref_taps, taps):
            r, t = r[b].double(), t[b].double()  # sample b, batch axis removed
            if normalize == "tokens" or r.ndim != 2:
                dim = 0  # dim 1 of the batched tensor
            else:
                dim = -1
            rn = r / (r.norm(dim=dim, keepdim=True) + 1e-10)
            tn = t / (t.norm(dim=dim, keepdim=True) + 1e-10)
            per_tap.append(((rn - tn) ** 2).mean())
        out[b] = sum(per_tap) / len(per_tap)
    return out


def random_taps(seed, B=5):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, 17, 32), (B, 17, 32), (B, 17, 32), (B, 8, 6, 6), (B, 24)]
    return [torch.randn(s, generator=g) for s in shapes]


@pytest.mark.parametrize("normalize", ["tokens", "channels"])
def test_matches_independent_implementation(normalize):
    ref, cur = random_taps(0), random_taps(1)
    expected = reference_impl(ref, cur, normalize)
    got = ldifs_distance(ref, cur, normalize, per_sample=True)
    assert got.shape == (5,)
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert abs(ldifs_distance(ref, cur, normalize).item() - expected.mean().item()) <= 1e-6


@pytest.mark.parametrize("normalize", ["tokens", "channels"])
def test_zero_for_identical_taps(normalize):
    taps = random_taps(3)
    assert ldifs_distance(taps, [t.clone() for t in taps], normalize).item() == 0.0


def test_tokens_normalisation_is_along_dim_1():
    # Scaling one token's features changes the "tokens" distance but not the "channels" one.
    ref = random_taps(0)[:1]
    cur = [ref[0].clone()]
    cur[0][:, 3] *= 5.0
    assert ldifs_distance(ref, cur, "channels").item() < 1e-12
    assert ldifs_distance(ref, cur, "tokens").item() > 1e-4


def test_bound_4_over_T():
    # Every normalised vector has unit norm, so d_l(b) <= 4/T for [B,T,D] taps.
    ref, cur = [torch.randn(4, 10, 7)], [-torch.randn(4, 10, 7)]
    assert (ldifs_distance(ref, cur, "tokens", per_sample=True) <= 4 / 10 + 1e-6).all()


@pytest.fixture(scope="module")
def towers():
    model = load_backbone("tiny-vit-random")
    reference = frozen_copy(model.visual)
    with torch.no_grad():  # make the trained tower differ from its reference
        for p in model.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, reference


def test_per_sample_distance_independent_of_batch_mates(towers):
    """The batch-first pitfall: mixing samples across the batch would change sample 0's distance."""
    model, reference = towers
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 48, 48, generator=g)
    y = x.clone()
    y[1:] = torch.randn(5, 3, 48, 48, generator=g)
    d = []
    for batch in (x, y, x[:1]):
        with torch.no_grad():
            _, taps = image_taps(model.visual, batch)
        d.append(ldifs_distance(reference_taps(reference, batch), taps, per_sample=True)[0].item())
    assert d[0] > 0
    assert d[0] == pytest.approx(d[1], abs=1e-6)
    assert d[0] == pytest.approx(d[2], abs=1e-6)


def _ldifs_state():
    spec = RunSpec.from_dict({"backbone": "tiny-vit-random", "method": {"name": "ldifs"}, "optim": {"steps": 3},
                              "data": {"target": "quadrant"}})
    model = load_backbone("tiny-vit-random")
    head = torch.nn.Linear(128, 4)
    st = TrainState(model=model, head=head, reference=frozen_copy(model.visual))
    return METHODS.get("ldifs")(spec.method.params), st


def test_gradients_reach_trained_tower_only_and_reference_stays_frozen():
    method, st = _ldifs_state()
    ref_before = {k: v.clone() for k, v in st.reference.state_dict().items()}
    params = list(st.model.visual.parameters()) + list(st.head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    st.model.train()
    st.reference.train()  # a trainer calling train() must not flip the reference
    for step in range(3):
        x = torch.randn(4, 3, 48, 48)
        y = torch.randint(0, 4, (4,))
        opt.zero_grad()
        task, reg = method.loss(st, x, y)
        assert reg.item() >= 0
        (task + reg).backward()
        if step > 0:  # after the first update the towers differ, so the term has a gradient
            assert reg.item() > 0
        assert all(p.grad is None for p in st.reference.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in st.model.visual.parameters())
        opt.step()
    assert not st.reference.training and not st.reference.tower.training
    assert all(not p.requires_grad for p in st.reference.parameters())
    for k, v in st.reference.state_dict().items():
        assert torch.equal(v, ref_before[k]), k


def test_regulariser_gradient_flows_into_tower():
    method, st = _ldifs_state()
    with torch.no_grad():
        for p in st.model.visual.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 48, 48)
    emb, taps = image_taps(st.model.visual, x)
    reg = method.regularizer(st, x, emb, taps)
    reg.backward()
    assert st.model.visual.conv1.weight.grad.abs().sum() > 0


def test_final_embedding_option_adds_a_tap():
    spec = RunSpec.from_dict({"backbone": "tiny-vit-random", "optim": {"steps": 3}, "data": {"target": "quadrant"},
                              "method": {"name": "ldifs", "params": {"final_embedding": True, "alpha": 1.0}}})
    model = load_backbone("tiny-vit-random")
    ref = frozen_copy(model.visual)
    with torch.no_grad():
        model.visual.proj.mul_(2.0)  # only the projection differs: the official taps cannot see it
    st = TrainState(model=model, head=torch.nn.Linear(128, 4), reference=ref)
    x = torch.randn(3, 3, 48, 48)
    emb, taps = image_taps(model.visual, x)
    with_final = METHODS.get("ldifs")(spec.method.params).regularizer(st, x, emb, taps)
    official = METHODS.get("ldifs")(spec.method.params.__class__(alpha=1.0)).regularizer(st, x, emb, taps)
    assert official.item() == pytest.approx(0.0, abs=1e-10)
    # Scaling the projection leaves the normalised embedding unchanged too — change its direction instead.
    with torch.no_grad():
        model.visual.proj.add_(torch.randn_like(model.visual.proj))
    emb, taps = image_taps(model.visual, x)
    with_final = METHODS.get("ldifs")(spec.method.params).regularizer(st, x, emb, taps)
    assert with_final.item() > 0
