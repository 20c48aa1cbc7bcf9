"""Zero-shot heads, linear probes and ECE on synthetic inputs with known answers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldifs_engine.heads import ZS_SCALE, fit_linear_probe, zero_shot_weights, zs_head
from ldifs_engine.metrics import accuracy, delta, expected_calibration_error, forgetting_summary


class FakeTextModel(torch.nn.Module):
    """encode_text returns a fixed vector per prompt id, so the expected head is computable by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def encode_text(self, ids):
        return torch.stack([self.table[int(i)] for i in ids])


def test_zero_shot_weights_are_renormalised_means_of_normalised_prompts():
    prompts = ["a cat", "the cat", "a dog", "the dog"]
    vecs = {0: torch.tensor([3.0, 0.0]), 1: torch.tensor([0.0, 1.0]), 2: torch.tensor([-2.0, 0.0]), 3: torch.tensor([0.0, -5.0])}
    tok = lambda ps: torch.tensor([prompts.index(p) for p in ps])  # noqa: E731
    w = zero_shot_weights(FakeTextModel(vecs), tok, ["cat", "dog"], ["a {}", "the {}"])
    s = 2 ** -0.5
    assert torch.allclose(w, torch.tensor([[s, s], [-s, -s]]), atol=1e-6)
    head = zs_head(w)
    x = F.normalize(torch.tensor([[1.0, 1.0]]), dim=-1)
    assert torch.allclose(head(x), ZS_SCALE * x @ w.t())


def test_templates_are_filled_by_replacement_not_format():
    seen = []

    def tok(ps):
        seen.extend(ps)
        return torch.zeros(len(ps), dtype=torch.long)

    zero_shot_weights(FakeTextModel({0: torch.ones(2)}), tok, ["{0.__class__}"], ["a photo of {}."])
    assert seen == ["a photo of {0.__class__}."]


def test_linear_probe_separates_separable_data_and_uses_class_list():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 8) * 4
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + 0.3 * torch.randn(300, 8, generator=g)
    head, info = fit_linear_probe(x, y, num_classes=5, seed=0)
    assert head.out_features == 5  # from the class list, not the 3 labels present
    assert accuracy(head(F.normalize(x, dim=-1)), y) == 1.0
    assert info["weight_decay"] in (1e-4, 1e-3, 1e-2, 1e-1)


def test_ece_known_answers():
    # Always 100 % confident and always right → 0; 100 % confident and always wrong → 1.
    logits = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(logits, torch.tensor([1, 0])) == pytest.approx(1.0, abs=1e-6)
    # Confidence 0.75 on each, half right → |0.5 − 0.75| = 0.25.
    p = torch.tensor([0.75, 0.25]).log()
    logits = torch.stack([p, p, p, p])
    assert expected_calibration_error(logits, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.25, abs=1e-6)


def test_forgetting_summary_skips_gaps():
    ds = {
        "t": {"role": "target", "before": {"zs_acc": 0.2}, "after": {"zs_acc": 0.9}},
        "a": {"role": "control", "before": {"zs_acc": 0.9, "lp_acc": 0.8}, "after": {"zs_acc": 0.7, "lp_acc": 0.8}},
        "b": {"role": "control", "before": {"zs_acc": 0.5, "lp_acc": None}, "after": {"zs_acc": 0.6, "lp_acc": 0.4}},
        "c": {"role": "control", "before": {"zs_acc": None}, "after": {"zs_acc": 0.1}},
    }
    s = forgetting_summary(ds, {"before": 0.25, "after": 0.95})
    assert s["mean_delta_zs_controls"] == pytest.approx((-0.2 + 0.1) / 2)
    assert s["mean_delta_lp_controls"] == pytest.approx(0.0)
    assert s["target_gain"] == pytest.approx(0.7)
    assert s["worst_control"]["dataset"] == "a"
    assert delta(None, 0.3) is None
