"""Results → plotly figures (app/charts.py): data arrays, gaps for missing values, escaped labels."""
from __future__ import annotations

import json
import math

import pytest

from app import charts, story, text

from .samples import HOSTILE, hostile_results, merge_results, partial_results, results


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_dumbbell_rows_and_values():
    fig = charts.dumbbell(results(), "zs_acc")
    before, after = _trace(fig, "Before fine-tuning"), _trace(fig, "After fine-tuning")
    assert list(before.y)[0] == "Quadrant · target"
    assert list(before.y)[1] == "Colour"  # controls sorted by change, worst first
    assert before.x[1] == pytest.approx(90.0) and after.x[1] == pytest.approx(79.0)
    assert after.marker.color[1] == charts.WORSE and after.marker.color[0] == charts.BETTER


def test_missing_values_are_gaps_not_zeros():
    r = partial_results()
    fig = charts.dumbbell(r, "zs_acc")
    after = _trace(fig, "After fine-tuning")
    i = list(after.y).index("Shape")
    assert after.x[i] is None
    assert any(a.text == "not measured" for a in fig.layout.annotations)
    bars = charts.delta_bars(r)
    j = list(bars.data[0].y).index("Shape")
    assert bars.data[0].x[j] is None and bars.data[0].x[j] != 0
    lp = charts.dumbbell(r, "lp_acc")
    k = list(_trace(lp, "Before fine-tuning").y).index("Size")
    assert _trace(lp, "Before fine-tuning").x[k] is None
    cur = charts.curves(r)
    colour = _trace(cur, "Colour")
    assert list(colour.y) == [90.0, None, 80.0] and colour.connectgaps is False


def test_delta_bars_sorted_and_coloured():
    fig = charts.delta_bars(results())
    bar = fig.data[0]
    xs = list(bar.x)
    assert xs == sorted(xs)
    assert xs[0] == pytest.approx(-11.0) and bar.marker.color[0] == charts.WORSE
    assert bar.marker.color[-1] == charts.BETTER


def test_wise_ft_only_when_computed():
    assert charts.wise_ft(partial_results()) is None
    fig = charts.wise_ft(results())
    assert list(fig.data[0].x) == [0.0, 0.5, 1.0]
    assert list(fig.data[0].y) == pytest.approx([31.0, 90.0, 97.0])
    assert list(fig.data[1].y) == pytest.approx([0.0, -1.0, -4.2])


def test_hostile_strings_are_escaped_in_every_figure():
    r = hostile_results()
    for _cap, fig in charts.report_figures(r):
        blob = fig.to_json()
        assert "<img" not in blob
    assert "&lt;img src=x onerror=alert(1)&gt;" in charts.delta_bars(r).to_json()
    runs = [charts.RunEntry("a" * 8, HOSTILE, r), charts.RunEntry("b" * 8, "ok", results())]
    for fig in (charts.compare_heatmap(runs), charts.tradeoff_scatter(runs)):
        assert "<img" not in fig.to_json()


def test_report_html_is_self_contained_and_escaped():
    page = charts.report_html(hostile_results(), HOSTILE)
    assert page.startswith("<!doctype html>")
    assert "<img" not in page
    # plotly.js is inlined (no <script src=…>), so the file opens offline; the library appears once
    assert "<script src=" not in page and "Plotly.newPlot" in page
    assert page.count("plotly.js v") <= 2


def test_live_training_chart():
    pts = [{"step": s, "total_steps": 10, "loss": 1.0 / s + 0.1, "task_loss": 1.0 / s, "reg_loss": 0.1, "lr": 1e-4}
           for s in range(1, 6)]
    fig = charts.live_training(pts, smoothing=0.0)
    names = [t.name for t in fig.data]
    assert {"Total loss", "Task loss", "Regulariser term", "Learning rate"} <= set(names)
    assert list(_trace(fig, "Task loss").y) == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert fig.layout.xaxis.range == (0, 10)
    ce = [dict(p, reg_loss=0.0) for p in pts]
    assert "Regulariser term" not in [t.name for t in charts.live_training(ce).data]
    assert charts.live_training([]).layout.annotations[0].text.startswith("Waiting")


def test_ema_and_downsample():
    assert charts.ema([1.0, None, 3.0], 0.0) == [1.0, None, 3.0]
    sm = charts.ema([1.0, 1.0, 1.0], 0.9)
    assert sm == pytest.approx([1.0, 1.0, 1.0])  # debiased: a constant stays constant
    pts = [{"step": i} for i in range(1, 10_001)]
    ds = charts.downsample(pts, 2000)
    assert len(ds) <= 2001 and ds[-1]["step"] == 10_000 and ds[0]["step"] == 1


def test_pareto_front():
    pts = [(10, -5), (20, -10), (5, -1), (8, -6), (20, -12)]
    assert charts.pareto_front(pts) == [2, 0, 1]
    assert charts.pareto_front([(1, 1)]) == [0]


def test_compare_heatmap_centred_on_zero_with_gaps():
    a = charts.RunEntry("run-a", "CE", results(method="ce"))
    p = partial_results()
    b = charts.RunEntry("run-b", "LDIFS", p)
    fig = charts.compare_heatmap([a, b])
    hm = fig.data[0]
    assert hm.zmid == 0 and hm.zmin == -hm.zmax
    cols = list(hm.x)
    assert hm.z[1][cols.index("Shape")] is None  # not measured → blank, not 0
    assert hm.z[0][cols.index("Colour")] == pytest.approx(-11.0)
    assert "★" in hm.text[0][cols.index("Quadrant")]


def test_tradeoff_scatter_has_front_and_stable_colours():
    good = results()
    bad = results(method="ce")
    for e in bad["datasets"].values():
        if e["role"] == "control":
            e["after"]["zs_acc"] -= 0.1
    runs = [charts.RunEntry("ldifs1", "LDIFS", good), charts.RunEntry("ce1", "CE", bad)]
    fig = charts.tradeoff_scatter(runs)
    dots = [t for t in fig.data if t.mode == "markers+text"]
    assert len(dots) == 2
    assert dots[0].y[0] > dots[1].y[0]  # LDIFS forgets less
    c1 = charts.run_colours(["ldifs1", "ce1"])
    c2 = charts.run_colours(["ldifs1", "ce1"])
    assert c1 == c2 and len(set(c1.values())) == 2
    assert charts.run_colours(["x"] * 1)["x"] == charts.run_colours(["x", "y"])["x"]


def test_report_table_rows():
    rows = charts.report_table(partial_results())
    shape = next(r for r in rows if r[0] == "Shape" and r[1] == "Zero-shot")
    assert shape[3] == "—" and shape[4] == "—"
    # the target's trained classifier first: the same numbers as the headline and the cards
    assert rows[0][:4] == ["Quadrant (target)", "Trained classifier", "31.0 %", "97.0 %"]
    assert not any(r[0] == "Size" and r[1] == "Linear probe" for r in rows)  # never computed: left out


def test_report_table_unmeasurable_and_intervals():
    r = results()
    r["datasets"]["count"].update(zs_note="class prompts are indistinguishable to this model", delta_zs_ci=None)
    r["datasets"]["count"]["before"]["zs_acc"] = r["datasets"]["count"]["after"]["zs_acc"] = None
    r["datasets"]["colour"]["delta_zs_ci"] = [-0.15, -0.07]
    r["datasets"]["shape"]["delta_zs_ci"] = [-0.06, 0.01]
    rows = {(row[0], row[1]): row for row in charts.report_table(r)}
    assert rows[("Count", "Zero-shot")][2] == "not measurable"
    assert "indistinguishable" in rows[("Count", "Zero-shot")][5]
    assert rows[("Colour", "Zero-shot")][5] == "−15.0 to −7.0"
    assert rows[("Shape", "Zero-shot")][5].endswith("(within noise)")
    fig = charts.dumbbell(r)
    note = next(a for a in fig.layout.annotations if a.text == "not measurable")
    assert "class prompts" in note.hovertext and "Count: class prompts" in fig.layout.title.subtitle.text
    bars = charts.delta_bars(r)
    i = list(bars.data[0].y).index("Colour")
    assert bars.data[0].error_x.array[i] == pytest.approx(4.0) and bars.data[0].error_x.arrayminus[i] == pytest.approx(4.0)


def test_dumbbell_after_is_never_the_before_grey():
    r = results()
    r["datasets"]["size"]["after"]["zs_acc"] = r["datasets"]["size"]["before"]["zs_acc"]  # no change
    fig = charts.dumbbell(r)
    after = _trace(fig, "After fine-tuning")
    i = list(after.y).index("Size")
    assert after.marker.color[i] == charts.SAME != charts.BEFORE
    assert _trace(fig, "Before fine-tuning").marker.symbol == "circle-open"


def test_scatter_near_identical_runs_stay_apart_and_readable():
    a, b = results(), results()
    b["datasets"]["colour"]["after"]["zs_acc"] -= 0.0001  # a hair more forgetting …
    b["target_head_acc"]["after"] = 0.9705  # … for a hair more gain: both on the Pareto front
    runs = [charts.RunEntry("a" * 8, "LDIFS one", a), charts.RunEntry("b" * 8, "LDIFS two", b),
            charts.RunEntry("c" * 8, "CE", results(method="ce"))]
    fig = charts.tradeoff_scatter(runs)
    dots = [t for t in fig.data if t.mode == "markers+text"]
    assert dots[0].textposition != dots[1].textposition  # labels of near-identical runs do not coincide
    assert dots[0].x[0] != dots[1].x[0]  # nor do the markers
    lo, hi = fig.layout.xaxis.range
    assert hi - lo >= 5.0  # no zoom to a fraction of a point
    assert fig.data[-1].name == "Pareto front"  # drawn last, on top of the markers


def test_figures_serialise_to_json():
    for _cap, fig in charts.report_figures(results()):
        json.loads(fig.to_json())
    assert not any(isinstance(v, float) and math.isnan(v) for v in charts.delta_bars(partial_results()).data[0].x
                   if v is not None)


def _continual() -> dict:
    """The sample results as a continual run: shape fine-tuned first, then quadrant."""
    r = results()
    r["datasets"]["shape"]["role"] = "sequence"
    r["continual"] = {"sequence": ["shape", "quadrant"], "reference": "previous", "datasets": list(r["datasets"]),
                      "task_acc": [[0.80, 0.26], [0.95, 0.30], [0.70, 0.97]], "zs_acc": [],
                      "transfer": 0.30, "avg": 0.73, "last": 0.835, "stages": []}
    return r


def test_continual_matrix_only_for_sequences_and_in_percent():
    assert charts.continual_matrix(results()) is None
    fig = charts.continual_matrix(_continual())
    hm = fig.data[0]
    assert list(hm.z[2]) == pytest.approx([70.0, 97.0]) and list(hm.y)[0] == "Pre-trained"
    assert hm.text[2][0].endswith("●") and not hm.text[1][1].endswith("●")  # learned tasks are marked
    assert "Last 84 %" in fig.layout.title.text
    assert any(f is not None and f.data and f.data[0].type == "heatmap" for _, f in charts.report_figures(_continual()))


def test_tasks_learned_earlier_are_not_counted_as_forgetting():
    r = _continual()
    rows = {row.key: row for row in charts.dataset_rows(r)}
    assert rows["shape"].role == "sequence" and "learned earlier" in rows["shape"].label
    s = story.forgetting_summary(r)
    assert "shape" not in s["deltas"] and s["n"] == 4
    assert story.headline(r).startswith("Continual fine-tuning on *Shape* → *Quadrant*.")


def _unmeasurable_target() -> dict:
    """The demo's case: zero-shot on the target is not measurable (its prompts give one embedding)."""
    r = results()
    q = r["datasets"]["quadrant"]
    q["zs_note"] = "class prompts are indistinguishable to this model (all 4 classes give the same text embedding)"
    q["before"]["zs_acc"] = q["after"]["zs_acc"] = None
    return r


@pytest.mark.parametrize("chart", [charts.dumbbell, charts.delta_bars])
def test_not_measurable_note_stays_inside_the_plot_and_the_reason_is_under_the_title(chart):
    """The full reason, centred in the row, ran over the target's row label (and off a phone's screen):
    now a short note from the plot's left edge, the reason on hover and wrapped under the title."""
    fig = chart(_unmeasurable_target())
    note = next(a for a in fig.layout.annotations if a.y == "Quadrant · target")
    assert note.text == "not measurable" and "indistinguishable" in note.hovertext
    assert (note.xref, note.x, note.xanchor) == ("x domain", 0, "left")  # starts inside the plot, runs right
    lines = fig.layout.title.subtitle.text.split("<br>")
    assert "Quadrant: class prompts are indistinguishable" in " ".join(lines)
    assert max(len(s) for s in lines) <= 44  # fits a 390 px phone
    assert fig.layout.margin.t >= 60 + 17 * len(lines)  # room for it above the plot


def test_dumbbell_keeps_the_target_first_and_explains_only_drawn_colours():
    fig = charts.dumbbell(_unmeasurable_target())
    assert list(fig.layout.yaxis.categoryarray)[0] == "Quadrant · target"  # not sunk to the bottom
    assert "After: no change" not in {t.name for t in fig.data}  # the gap row has no "after" dot


def test_delta_bar_labels_sit_on_the_free_side_of_zero():
    r = results()
    r["datasets"]["size"]["after"]["zs_acc"] = 0.7  # a gain next to the losses
    fig = charts.delta_bars(r)
    labels = next(t for t in fig.data if getattr(t, "mode", None) == "text")
    pos = dict(zip(labels.y, labels.textposition))
    assert pos["Colour"] == "middle right" and pos["Size"] == "middle left"
    assert set(labels.x) == {0.0} and fig.data[0].textposition == "none"


def _budget_doc() -> dict:
    def cand(alpha, mix, acc, forgets, early=False, run="j1"):
        return {"params": {"alpha": alpha}, "wise_ft_alpha": mix, "target_acc": acc, "forgetting_points": forgets,
                "mean_delta_zs_controls": -forgets / 100, "worst_delta_zs_control": None, "run": run,
                "within_budget": forgets <= 2 and not early, "early_stopped": early,
                "setting": f"LDIFS with alpha {alpha}" + (f", mix {mix}" if mix is not None else "")}
    cands = [cand(0, None, 0.99, 30.0, early=True), cand(100, None, 0.97, 3.0), cand(100, 0.5, 0.9, 1.5),
             cand(1000, None, 0.93, 1.0, run="j2"), cand(100, 0.0, 0.4, 0.0)]
    return {"max_forgetting_points": 2.0, "metric": "mean_zs_controls", "recommended": cands[3],
            "candidates": cands, "target_acc_before": 0.4}


def test_the_budget_chart_draws_the_budget_line_the_front_and_the_recommendation():
    doc = _budget_doc()
    fig = charts.budget_chart(doc, lambda c: c["setting"])
    names = [t.name for t in fig.data]
    assert names[:3] == ["Fine-tuned", "Mixed with the original (WiSE-FT)", "Stopped early (over budget)"]
    assert "Pareto front" in names and names[-1] == "Recommended"
    star = fig.data[-1]
    assert star.x[0] == pytest.approx(53.0) and star.y[0] == pytest.approx(-1.0)  # gain 93 − 40, forgot 1 point
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.y) == [0.0, -1.0, -3.0]  # the 0.5 mix is dominated; the stopped-early trial is left out
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert any(s.y0 == -2.0 and s.y1 == -2.0 for s in lines)  # the budget
    rows = charts.budget_table(doc, lambda c: c["setting"])
    assert rows[0][0] == "LDIFS with alpha 1000" and rows[0][4] == "recommended"
    assert [r[4] for r in rows].count("stopped early") == 1 and rows[1][3] == "no"


def test_a_merge_shows_what_each_lambda_kept_instead_of_training_curves():
    r = merge_results()
    assert charts.merge_lambdas(results()) is None  # an ordinary run has no λ sweep
    fig = charts.merge_lambdas(r)
    quadrant, count = _trace(fig, "Quadrant"), _trace(fig, "Count")
    assert list(quadrant.x) == [0.0, 0.5, 1.0] and list(quadrant.y) == pytest.approx([31.0, 85.0, 95.0])
    assert list(count.y)[:2] == pytest.approx([50.0, 60.0]) and count.y[2] is None and not count.connectgaps
    own = [t for t in fig.data if t.legendgroup == "Count" and not t.showlegend and t.mode == "lines"]
    assert [list(t.y) for t in own] == [[90.0, 90.0]]  # dotted: the accuracy in its own run
    assert list(_trace(fig, "Control change").y) == pytest.approx([0.0, -7.0, -20.0])
    chosen = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert chosen and {s.x0 for s in chosen} == {0.5}  # the λ kept, on both panels
    assert any(a.text == "kept: λ = 0.5" for a in fig.layout.annotations)
    assert "on the held-out validation images" in fig.layout.title.subtitle.text.replace("<br>", " ")
    test_only = charts.merge_lambdas(merge_results("test")).layout.title.subtitle.text
    assert "on the test images" in test_only.replace("<br>", " ")
    figs = dict((cap, f) for cap, f in charts.report_figures(r))
    assert text.CHART_CAPTIONS["merge"] in figs and text.CHART_CAPTIONS["curves"] not in figs


def test_a_merges_offline_report_has_each_task_and_the_lambda_chart():
    r = merge_results()
    r["merge"]["tasks"][1]["title"] = HOSTILE
    assert charts.merge_table(results()) == []
    assert charts.merge_table(r)[0] == ["Quadrant", "trained head", "31.0 %", "99.0 %", "85.0 % [80.0 %, 90.0 %]"]
    page = charts.report_html(r, "merge")
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Each run's task in the merge (λ = 0.5)" in page
    assert "<td>85.0&nbsp;% [80.0&nbsp;%, 90.0&nbsp;%]</td>" in page and "What each λ kept" in page
    assert "Accuracy during training" not in page
    assert "−4.2 points for the merge; −30.0 (quadrant run), −20.0 (count run) in the runs" in page
