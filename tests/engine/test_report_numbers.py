"""What the report may call a number: degenerate zero-shot heads, calibrated probe ECE, intervals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ldifs_engine.evaluate import lp_metrics, zs_metrics
from ldifs_engine.heads import fit_temperature, indistinguishable_classes, zs_note
from ldifs_engine.intervals import attach_intervals, from_bits, read_per_image, to_bits, write_per_image
from ldifs_engine.metrics import expected_calibration_error, forgetting_summary
from ldifs_engine.stats import paired_bootstrap_delta, wilson


def _feats(n=60, dim=8, classes=4, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    y = torch.arange(n) % classes
    x = F.normalize(centres[y] + noise * torch.randn(n, dim, generator=g), dim=-1)
    return x, y, centres


def test_identical_prompt_embeddings_give_null_and_a_note():
    x, y, _ = _feats()
    same = F.normalize(torch.ones(4, 8), dim=-1)  # what the tiny model gives quadrant's or count's prompts
    m = zs_metrics(x, y, same, ece=True, classnames=["top left", "top right", "bottom left", "bottom right"])
    assert m["zs_acc"] is None and m["zs_ece"] is None and m["zs_correct"] is None
    assert m["zs_note"].startswith("class prompts are indistinguishable to this model")
    assert "all 4 classes" in m["zs_note"]
    zeros = torch.zeros(4, 8)  # prompts mapped to nothing at all
    assert zs_metrics(x, y, zeros, ece=True, classnames=list("abcd"))["zs_acc"] is None


def test_distinct_prompt_embeddings_give_numbers():
    x, y, centres = _feats()
    m = zs_metrics(x, y, centres, ece=True, classnames=list("abcd"))
    assert m["zs_note"] is None and 0.7 <= m["zs_acc"] <= 1.0 and m["zs_ece"] is not None
    assert m["zs_correct"].float().mean().item() == pytest.approx(m["zs_acc"])


def test_near_identical_pair_is_named_and_far_pairs_are_not():
    w = torch.eye(4)
    w[3] = F.normalize(w[2] + 1e-5 * torch.randn(4), dim=0)  # logits differ by < 0.1: a tie-break
    assert indistinguishable_classes(w) == [[2, 3]]
    note = zs_note(w, ["circle", "square", "one", "two"])
    assert note and "'one', 'two'" in note and "circle" not in note
    w[3] = F.normalize(w[2] + 0.05 * torch.eye(4)[3], dim=0)  # similar but distinguishable
    assert indistinguishable_classes(w) == [] and zs_note(w, list("abcd")) is None


def test_fit_temperature_recovers_an_over_sharpened_softmax():
    g = torch.Generator().manual_seed(0)
    true_logits = 2.0 * torch.randn(4000, 5, generator=g)
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    t = fit_temperature(4.0 * true_logits, labels)
    assert t == pytest.approx(4.0, rel=0.1)
    raw = expected_calibration_error(4.0 * true_logits, labels)
    assert expected_calibration_error(4.0 * true_logits / t, labels) < raw / 3


def test_probe_ece_is_measured_after_temperature_scaling():
    # a strongly regularised probe: accurate but with a flat softmax (the colour probe: 99.95 %
    # accurate, mean top probability 0.30, raw "ECE" 0.70)
    x, y, _ = _feats(n=400, classes=8, dim=16, seed=1, noise=0.2)
    m, head, info = lp_metrics(x, y, x, y, 8, ece=True, seed=0)
    raw = expected_calibration_error(head(x), y)
    assert info["temperature"] is not None and m["lp_temperature"] == info["temperature"]
    assert m["lp_acc"] > 0.9 and raw > 0.3  # the unscaled probe looks badly calibrated
    assert m["lp_ece"] < 0.1  # after scaling it is not
    tiny, _, info = lp_metrics(x[:8], y[:8], x, y, 8, ece=True, seed=0)  # nothing to hold out
    assert info["temperature"] is None and tiny["lp_ece"] is None and tiny["lp_acc"] is not None


def test_bits_round_trip_and_per_image_file(tmp_path):
    v = np.array([1, 0, 0, 1, 1], bool)
    assert to_bits(v) == "10011" and (from_bits("10011") == v).all()
    assert to_bits(torch.tensor([True, False])) == "10" and to_bits(None) is None
    assert from_bits("10x") is None and from_bits(None) is None
    write_per_image(tmp_path, {"a": {"before": {"zs": "10", "lp": None, "zs_note": None}}}, {"before": v, "after": "11"})
    pi = read_per_image(tmp_path)
    assert pi["target_head"] == {"before": "10011", "after": "11"}
    (tmp_path / "per_image.json").write_text("{broken")
    assert read_per_image(tmp_path) is None


def _vec(n, k, seed):
    rng = np.random.default_rng(seed)
    out = np.zeros(n, bool)
    out[rng.choice(n, k, replace=False)] = True
    return out


def _results_and_vectors():
    t_b, t_a = _vec(300, 120, 0), _vec(300, 297, 1)
    s_b = _vec(500, 480, 2)
    s_a = s_b.copy()
    s_a[np.flatnonzero(s_b)[:150]] = False  # 150 images forgotten
    c_b = _vec(12, 11, 3)
    c_a = c_b.copy()
    c_a[np.flatnonzero(c_b)[0]] = False  # a 12-image upload loses one image
    acc = lambda v: float(v.mean())  # noqa: E731
    ds = {"quadrant": {"role": "target", "before": {"zs_acc": None, "zs_ece": None, "lp_acc": acc(t_b), "lp_ece": 0.1},
                       "after": {"zs_acc": None, "zs_ece": None, "lp_acc": acc(t_a), "lp_ece": 0.02}},
          "shape": {"role": "control", "before": {"zs_acc": acc(s_b), "zs_ece": 0.05, "lp_acc": acc(s_b), "lp_ece": 0.01},
                    "after": {"zs_acc": acc(s_a), "zs_ece": 0.2, "lp_acc": acc(s_a), "lp_ece": 0.05}},
          "upload": {"role": "control", "before": {"zs_acc": acc(c_b), "zs_ece": 0.1, "lp_acc": None, "lp_ece": None},
                     "after": {"zs_acc": acc(c_a), "zs_ece": 0.1, "lp_acc": None, "lp_ece": None}}}
    head = {"before": acc(t_b), "after": acc(t_a)}
    note = "class prompts are indistinguishable to this model (all 4 classes give the same text embedding)"
    per_image = {"schema": "ldifs.per_image/1", "datasets": {
        "quadrant": {"before": {"zs": None, "lp": to_bits(t_b), "zs_note": note},
                     "after": {"zs": None, "lp": to_bits(t_a), "zs_note": note}},
        "shape": {"before": {"zs": to_bits(s_b), "lp": to_bits(s_b), "zs_note": None},
                  "after": {"zs": to_bits(s_a), "lp": to_bits(s_a), "zs_note": None}},
        "upload": {"before": {"zs": to_bits(c_b), "lp": None, "zs_note": None},
                   "after": {"zs": to_bits(c_a), "lp": None, "zs_note": None}}},
        "target_head": {"before": to_bits(t_b), "after": to_bits(t_a)}}
    results = {"datasets": ds, "target_head_acc": head, "summary": forgetting_summary(ds, head)}
    return results, per_image, (s_b, s_a, c_b, c_a, t_b, t_a)


def test_attach_intervals_fills_the_contract():
    r, pi, (s_b, s_a, c_b, c_a, t_b, t_a) = _results_and_vectors()
    attach_intervals(r, pi, seed=0)
    q, s, u = r["datasets"]["quadrant"], r["datasets"]["shape"], r["datasets"]["upload"]
    assert q["zs_note"].startswith("class prompts are indistinguishable")
    assert q["before"]["zs_acc"] is None and q["before"]["zs_acc_ci"] is None and q["delta_zs"] is None
    assert q["delta_zs_ci"] is None and q["n_test"] == 300
    assert q["before"]["lp_acc_ci"] == wilson(120, 300) and q["delta_lp_ci"][0] > 0
    assert s["before"]["zs_acc_ci"] == wilson(int(s_b.sum()), 500) and s["zs_note"] is None
    assert s["delta_zs"] == pytest.approx(-0.3) and s["delta_zs_ci"][1] < 0  # a real loss
    assert u["delta_zs_ci"][0] <= 0 <= u["delta_zs_ci"][1]  # one image of twelve: within noise
    assert u["delta_lp"] is None and u["delta_lp_ci"] is None and u["before"]["lp_acc_ci"] is None
    th = r["target_head_acc"]
    assert th["before_ci"] == wilson(120, 300) and th["after_ci"] == wilson(297, 300)
    assert th["delta_ci"] == paired_bootstrap_delta(t_b, t_a, seed=pytest.importorskip("zlib").crc32(b"0:target_head"))
    sm = r["summary"]
    lo, hi = sm["mean_delta_zs_controls_ci"]
    assert lo <= sm["mean_delta_zs_controls"] <= hi
    assert sm["mean_delta_lp_controls_ci"] is not None and sm["target_gain_ci"] == th["delta_ci"]
    assert sm["small_test_splits"] == ["upload"] and sm["unmeasurable_zs"] == ["quadrant"]
    again, pi2, _ = _results_and_vectors()
    assert attach_intervals(again, pi2, seed=0) == r  # seeded: the same interval every time


def test_without_per_image_every_interval_is_null_but_values_stay():
    r, _, _ = _results_and_vectors()
    attach_intervals(r, None, seed=0)
    assert r["datasets"]["shape"]["delta_zs"] == pytest.approx(-0.3)
    assert r["datasets"]["shape"]["delta_zs_ci"] is None and r["target_head_acc"]["delta_ci"] is None
    assert r["summary"]["mean_delta_zs_controls_ci"] is None


def _stages_with(zs_after, notes):
    stages = []
    heads, carried = [.9, .8, .95], [{}, {"quadrant": .85}, {"quadrant": .75, "count": .7}]
    for i in range(3):
        stages.append({
            "datasets": {k: {"role": "control", "zs_note": notes.get(k),
                             "before": {"zs_acc": None if k in notes else .25, "zs_ece": None, "lp_acc": None,
                                        "lp_ece": None},
                             "after": {"zs_acc": v, "zs_ece": None, "lp_acc": None, "lp_ece": None}}
                         for k, v in zs_after[i].items()},
            "target_head_acc": {"before": .25, "after": heads[i]}, "carried_heads_acc": carried[i],
            "curves": {}, "training": {"steps": 4}, "timing": {"train_s": 1.0, "eval_s": 1.0, "started_at": "t"}})
    return stages


def test_continual_transfer_leaves_out_unmeasurable_cells_and_says_so():
    from ldifs_engine import continual
    from ldifs_engine.spec import RunSpec

    spec = RunSpec.from_dict({"data": {"target": "quadrant", "sequence": ["count", "shape"], "controls": ["colour"]},
                              "optim": {"steps": 4}})
    note = "class prompts are indistinguishable to this model (all 4 classes give the same text embedding)"
    zs_after = [{"quadrant": None, "count": None, "shape": .2, "colour": .9},
                {"quadrant": None, "count": None, "shape": .25, "colour": .8},
                {"quadrant": None, "count": None, "shape": .7, "colour": .7}]
    c = continual.combine(spec, _stages_with(zs_after, {"quadrant": note, "count": note}), 3.0)["continual"]
    assert c["task_acc"][1] == [.9, None, .2]  # count's zero-shot before it is learned: a gap, not 25 %
    assert c["transfer"] == pytest.approx((.2 + .25) / 2)  # shape's cells only
    assert c["avg"] == pytest.approx(sum([.9, .2, .85, .8, .25, .75, .7, .95]) / 8)
    assert "count" in c["transfer_note"] and "indistinguishable" in c["transfer_note"]
    assert "shape" not in c["transfer_note"].split("(")[0]
    # two tasks, the second unmeasurable: no Transfer at all, and the note says why
    two = RunSpec.from_dict({"data": {"target": "quadrant", "sequence": ["count"], "controls": ["colour"]},
                             "optim": {"steps": 4}})
    c2 = continual.combine(two, _stages_with(zs_after, {"quadrant": note, "count": note})[:2], 2.0)["continual"]
    assert c2["transfer"] is None and c2["transfer_note"].startswith("Transfer is not measurable")
    measured = [{k: (.3 if v is None else v) for k, v in row.items()} for row in zs_after]
    assert continual.combine(spec, _stages_with(measured, {}), 3.0)["continual"]["transfer_note"] is None
