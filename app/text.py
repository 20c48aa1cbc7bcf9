"""Every word the app shows a user, in one place: labels, help, glossary and the report headline.

User-supplied strings (run names, dataset titles, class names) only ever reach the page through
``md_escape`` (Markdown) or ``html_escape`` (plotly labels, HTML report): they are shown as text.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any

APP_TITLE = "LDIFS Studio"
TAGLINE = "Fine-tune a CLIP model, then see what it forgot."

MINUS = "\u2212"  # typographic minus: "−11.0" reads better than "-11.0"

# ---- escaping -------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~=$^])")


def md_escape(text: Any) -> str:
    """A user string made safe for Markdown: no markup, links, images or HTML survive."""
    s = " ".join(str(text).split())  # no newlines: a title cannot start a heading or a list
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def html_escape(text: Any) -> str:
    """A user string made safe for HTML and plotly text (plotly decodes entities back to text)."""
    return html.escape(str(text), quote=True)


def html_text(text: Any) -> str:
    """Escape for HTML element content only (messages in toasts): quotes stay readable."""
    return html.escape(str(text), quote=False)


# ---- number formatting ----------------------------------------------------------------------
def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pct(frac: float | None, digits: int = 0) -> str:
    """0.973 → '97 %'; missing → '—'."""
    if not _ok(frac):
        return "—"
    return f"{frac * 100:.{digits}f} %"


def points(delta_frac: float | None, digits: int = 1, sign: bool = True) -> str:
    """A change in accuracy (fraction) as percentage points: −0.11 → '−11.0'."""
    if not _ok(delta_frac):
        return "—"
    v = delta_frac * 100
    if abs(v) < 0.05 * 10 ** (1 - digits):
        v = 0.0
    s = f"{abs(v):.{digits}f}"
    if not sign:
        return s
    return ("+" if v > 0 else MINUS if v < 0 else "±") + s


def duration(seconds: float | None) -> str:
    """Seconds as '1 h 05 min', '4 min 10 s', '12 s'; missing → '—'."""
    if not _ok(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# ---- labels and help ------------------------------------------------------------------------
# Form labels keyed by spec path. Help (`info=`) comes from the spec's own field metadata, so the
# words live next to the validator; these override it where a non-programmer needs plainer words.
LABELS: dict[str, str] = {
    "name": "Run name",
    "backbone": "Model",
    "seed": "Random seed",
    "data.target": "Fine-tune on (target dataset)",
    "data.controls": "Measure forgetting on (control datasets)",
    "data.val_fraction": "Validation share",
    "data.max_train_samples": "Max training images",
    "data.max_eval_samples": "Max images per evaluation",
    "data.num_workers": "Data-loader workers",
    "method.name": "Method",
    "method.head_init": "Classifier head starts from",
    "method.freeze_head": "Freeze the classifier head",
    "optim.lr": "Learning rate",
    "optim.weight_decay": "Weight decay",
    "optim.batch_size": "Batch size",
    "optim.micro_batch": "Micro-batch",
    "optim.steps": "Training steps",
    "optim.epochs": "Epochs (instead of steps)",
    "optim.warmup_steps": "Warm-up steps",
    "optim.grad_clip": "Gradient clipping",
    "optim.precision": "Precision",
    "optim.checkpoint_every": "Checkpoint every (steps)",
    "optim.label_smoothing": "Label smoothing",
    "eval.zero_shot": "Zero-shot accuracy",
    "eval.linear_probe": "Linear-probe accuracy",
    "eval.ece": "Calibration (ECE)",
    "eval.curve_points": "Evaluations during training",
    "eval.wise_ft_alphas": "WiSE-FT mixing ratios",
    "eval.lp_max_train": "Max linear-probe training images",
    "priority": "Queue priority",
}

INFO_OVERRIDES: dict[str, str] = {
    "name": "Free text, shown in the job list and the report.",
    "backbone": "The CLIP model to fine-tune. The built-in model works offline; others are downloaded once.",
    "data.target": "The dataset the model is trained on.",
    "data.controls": "Datasets the model is NOT trained on; a drop here is forgetting.",
    "method.name": "How the model is fine-tuned. LDIFS keeps the model's features close to the original.",
    "optim.steps": "Number of weight updates. More steps: better target accuracy, often more forgetting.",
    "optim.epochs": "Passes over the training images. Leave 'Training steps' empty to use this.",
    "eval.wise_ft_alphas": "Comma-separated numbers from 0 to 1, e.g. 0, 0.25, 0.5, 0.75, 1. Empty = off.",
    "priority": "Higher runs first among your queued jobs.",
}

SECTION_TITLES = {
    "data": "Data",
    "method": "Classifier head",
    "optim": "Optimisation",
    "eval": "Evaluation",
    "": "Reproducibility",
}


def label_for(path: str) -> str:
    """The human label of a spec field (falls back to the field name in words)."""
    if path in LABELS:
        return LABELS[path]
    return path.rsplit(".", 1)[-1].replace("_", " ").capitalize()


# ---- glossary: what every number in the report means -----------------------------------------
GLOSSARY: dict[str, str] = {
    "zs_acc": "Zero-shot accuracy: the share of test images the model labels correctly by comparing each "
    "image with a text description of every class. No training on that dataset is involved, so it "
    "measures what the model already knows.",
    "lp_acc": "Linear-probe accuracy: the share of test images labelled correctly by a simple linear "
    "classifier trained on the model's image features. It measures whether the features still "
    "contain the information, even if the text side no longer matches.",
    "delta": "Change (points): accuracy after fine-tuning minus accuracy before, in percentage points. "
    "Negative = the model forgot something; positive = it got better there too.",
    "target_acc": "Target accuracy: accuracy on the dataset the model was fine-tuned on, with the "
    "classifier head that was trained along with it.",
    "mean_forgetting": "Average change on the control datasets (all evaluated datasets except the target). "
    "This is the run's forgetting in one number.",
    "worst": "Worst control: the control dataset whose zero-shot accuracy dropped most.",
    "verdict": "Verdict: the average change on the controls in words — little or no forgetting (0 to −1 "
    "points), some (down to −5), clear (down to −15), strong (below −15).",
    "ece": "Calibration error (ECE): how far the model's confidence is from its actual accuracy, "
    "0 = perfectly calibrated. Lower is better.",
    "wise_ft": "WiSE-FT: mixes the original and the fine-tuned weights, 0 = original model, 1 = fully "
    "fine-tuned. Intermediate mixes often keep most of the gain and forget less.",
    "pareto": "Pareto front: the runs no other run beats on both target gain and forgetting at once.",
    "target_gain": "Target gain: how many points accuracy on the target rose during fine-tuning.",
}

CHART_CAPTIONS = {
    "dumbbell": "Each row is a dataset: the grey dot is the accuracy before fine-tuning, the coloured "
    "dot after. Green = got better, red = got worse.",
    "delta": "Change in accuracy per dataset, in percentage points, sorted from worst to best.",
    "curves": "Zero-shot accuracy measured during training: which abilities faded, and when.",
    "wise_ft": GLOSSARY["wise_ft"],
    "continual": "Continual fine-tuning: one row per stage of the sequence. Below the diagonal, how well "
    "each task learned earlier is still solved by its own head; above it, zero-shot accuracy on tasks not "
    "yet learned. Transfer = zero-shot accuracy on tasks before they are learned, Avg = mean of the "
    "rows after each stage, Last = mean of the last row.",
    "live": "Training loss (task loss and the regulariser term) and learning rate over the whole run.",
    "heatmap": "Change in zero-shot accuracy for each run (rows) and dataset (columns). Red = forgot, "
    "blue = improved; blank = not measured.",
    "scatter": "Each dot is a run: further right = more gain on its target, higher = less forgetting. "
    "The line joins the runs nothing beats on both (the Pareto front).",
}

# ---- empty states and messages --------------------------------------------------------------
EMPTY_JOBS = "No runs yet — start one in **New run**."
EMPTY_REPORT = "No finished runs yet. When a run finishes, its forgetting report appears here."
EMPTY_COMPARE = "Pick two or more finished runs to compare them."
EMPTY_DATASETS = "You have not uploaded any datasets yet. Upload a zip with one folder per class."
SELECT_JOB = "Select a run in the table above to see its progress."
SIGN_IN = "Please sign in to use LDIFS Studio."

STATE_BADGES = {
    "QUEUED": "○ Queued",
    "RUNNING": "● Running",
    "DONE": "✓ Done",
    "FAILED": "✗ Failed",
    "CANCELLED": "■ Cancelled",
    "INTERRUPTED": "⚠ Interrupted",
}


def state_badge(state: str) -> str:
    return STATE_BADGES.get(state, state.title())


def progress_bar(step: int | None, total: int | None, width: int = 12) -> str:
    """A text progress bar, safe anywhere (no HTML): '██████░░░░░░ 50 %'."""
    if not total or step is None or total <= 0:
        return "—"
    frac = min(max(step / total, 0.0), 1.0)
    full = int(round(frac * width))
    return "█" * full + "░" * (width - full) + f" {frac * 100:.0f} %"


# ---- the report headline ---------------------------------------------------------------------
def _title(results: Mapping[str, Any], key: str) -> str:
    entry = (results.get("datasets") or {}).get(key) or {}
    return str(entry.get("title") or key)


def _delta(entry: Mapping[str, Any], metric: str) -> float | None:
    b = (entry.get("before") or {}).get(metric)
    a = (entry.get("after") or {}).get(metric)
    return a - b if _ok(a) and _ok(b) else None


def target_accuracy(results: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(before, after) accuracy on the target: the trained head's when known, else zero-shot."""
    head = results.get("target_head_acc") or {}
    b, a = head.get("before"), head.get("after")
    if _ok(b) and _ok(a):
        return b, a
    entry = (results.get("datasets") or {}).get(results.get("target")) or {}
    return (entry.get("before") or {}).get("zs_acc"), (entry.get("after") or {}).get("zs_acc")


def forgetting_summary(results: Mapping[str, Any], metric: str = "zs_acc") -> dict[str, Any]:
    """Mean change over the control datasets where both sides exist, the worst one, and the gaps.

    Computed from ``datasets`` (not ``summary``) so the sentence and the charts always agree.
    """
    deltas: dict[str, float] = {}
    missing: list[str] = []
    for key, entry in (results.get("datasets") or {}).items():
        if entry.get("role") in ("target", "sequence") or key == results.get("target"):
            continue  # forgetting is measured on controls only, not on tasks fine-tuned on
        d = _delta(entry, metric)
        if d is None:
            missing.append(key)
        else:
            deltas[key] = d
    mean = sum(deltas.values()) / len(deltas) if deltas else None
    worst = min(deltas, key=deltas.get) if deltas else None
    return {"mean": mean, "n": len(deltas), "worst": worst, "worst_delta": deltas.get(worst) if worst else None,
            "missing": missing, "deltas": deltas}


def headline(results: Mapping[str, Any], markup: str = "md") -> str:
    """The report's first sentence(s), for someone who reads only this; ``markup`` is "md" or "html".

    "Fine-tuning on *quadrant* raised its accuracy from 31 % to 97 %; the model lost on average
    4.2 points on the 5 other datasets, worst *colour* −11.0."
    """
    def em(raw: str) -> str:
        return f"<em>{html_escape(raw)}</em>" if markup == "html" else f"*{md_escape(raw)}*"

    target = results.get("target") or ""
    tname = _title(results, target) if target else "the target"
    before, after = target_accuracy(results)
    if _ok(before) and _ok(after):
        verb = "raised" if after > before + 5e-4 else "lowered" if after < before - 5e-4 else "kept"
        if verb == "kept":
            first = f"Fine-tuning on {em(tname)} kept its accuracy at {pct(after)}"
        else:
            first = f"Fine-tuning on {em(tname)} {verb} its accuracy from {pct(before)} to {pct(after)}"
    elif _ok(after):
        first = f"After fine-tuning on {em(tname)} its accuracy is {pct(after)}"
    else:
        first = f"Fine-tuning on {em(tname)}: the target accuracy was not measured"

    s = forgetting_summary(results)
    if s["n"] == 0:
        second = ("no other datasets were measured, so forgetting is unknown" if not s["missing"]
                  else f"forgetting was not measured on the {len(s['missing'])} other datasets")
    else:
        others = f"{s['n']} other dataset" + ("s" if s["n"] != 1 else "")
        mean = s["mean"]
        if abs(mean) < 5e-4:
            second = f"the model held steady on the {others} (average change ±0.0 points)"
        elif mean < 0:
            second = f"the model lost on average {points(-mean, sign=False)} points on the {others}"
        else:
            second = f"the model gained on average {points(mean, sign=False)} points on the {others}"
        wd = s["worst_delta"]
        if s["n"] > 1 and wd is not None and wd < -5e-4:
            second += f", worst {em(_title(results, s['worst']))} {points(wd)}"
        if s["missing"]:
            second += f" ({len(s['missing'])} more not measured)"
    seq = (results.get("continual") or {}).get("sequence") or []
    if len(seq) > 1:  # say what came before the last task, and where the per-task story is
        first = f"Continual fine-tuning on {' → '.join(em(_title(results, k)) for k in seq)}. Its last stage: " \
            + first[0].lower() + first[1:]
        second += "; the accuracy matrix below shows every task after every stage"
    return f"{first}; {second}."


# (lowest mean change on the controls, in points, that still earns the label), best first
VERDICTS: tuple[tuple[float, str], ...] = (
    (-1.0, "Little or no forgetting"),
    (-5.0, "Some forgetting"),
    (-15.0, "Clear forgetting"),
    (-float("inf"), "Strong forgetting"),
)


def verdict(results: Mapping[str, Any]) -> str:
    """A few-word reading of the mean forgetting for the report's summary card (``VERDICTS``)."""
    s = forgetting_summary(results)
    if s["mean"] is None:
        return "Unknown"
    m = s["mean"] * 100
    return next(label for floor, label in VERDICTS if m >= floor)
