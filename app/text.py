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
    "method.head_init": "Classifier starts from",
    "method.freeze_head": "Keep the classifier fixed",
    "optim.lr": "Step size (learning rate)",
    "optim.weight_decay": "Weight decay",
    "optim.batch_size": "Images per update (batch size)",
    "optim.micro_batch": "Micro-batch",
    "optim.steps": "Training length (steps)",
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
    "budget.enabled": "Find the best setting for a forgetting budget",
    "budget.max_forgetting_points": "Largest acceptable forgetting (points)",
    "budget.metric": "Forgetting measured as",
    "budget.search": "Setting to search",
    "budget.low": "Weakest setting tried",
    "budget.high": "Strongest setting tried",
    "budget.grid_points": "First-pass values",
    "budget.refine_steps": "Refinements at the boundary",
    "budget.plain": "Also try plain fine-tuning",
    "budget.max_trials": "At most this many fine-tunes",
    "budget.early_stop_margin_points": "Stop a trial early when over budget by (points)",
}

INFO_OVERRIDES: dict[str, str] = {
    "name": "Free text, shown in the job list and the report.",
    "backbone": "The CLIP model to fine-tune. The built-in model works offline; others are downloaded once.",
    "data.target": "The dataset the model is trained on.",
    "data.controls": "Datasets the model is NOT trained on; a drop here is forgetting.",
    "method.name": "How the model is fine-tuned. LDIFS keeps the model's features close to the original.",
    "optim.steps": "How many times the model is updated. Longer: better on the target, often more forgetting. "
    "Technical name: optimisation steps.",
    "optim.lr": "How big each update is. Too large can wreck the model; the preset's value suits the "
    "built-in model. Technical name: AdamW learning rate.",
    "optim.batch_size": "How many training images each update looks at. Technical name: effective batch size.",
    "method.head_init": "Where the classifier starts: from the class names' text prompts (zero-shot, 'zs') or "
    "from a linear probe fitted first ('lp', known as LP-FT).",
    "optim.epochs": "Passes over the training images. Leave 'Training length (steps)' empty to use this.",
    "eval.wise_ft_alphas": "Comma-separated numbers from 0 to 1, e.g. 0, 0.25, 0.5, 0.75, 1. Empty = off.",
    "priority": "Higher runs first among your queued jobs.",
    "budget.enabled": "Instead of one run, try several strengths of the method (and mixes with the original "
    "model) and recommend the one that learns the most while forgetting at most the points below.",
    "budget.max_forgetting_points": "How much accuracy you can afford to lose on what the model already knew, in "
    "percentage points (e.g. 2).",
}

# Method names and what they do, in plain words; the catalog's technical description is shown under
# Advanced. A method missing here keeps its catalog title and description.
METHOD_WORDS: dict[str, tuple[str, str]] = {
    "ce": ("Plain fine-tuning (cross-entropy)", "Learns the new task; nothing protects what the model knew. "
           "The baseline the others are measured against."),
    "ls": ("Plain fine-tuning, softer targets (label smoothing)", "Like plain fine-tuning, but the model is "
           "asked to be a little less sure of itself."),
    "l2sp": ("Stay close to the original weights (L2-SP)", "Learns the new task while a penalty keeps the "
             "model's weights near the original ones."),
    "ldifs": ("Keep the original features (LDIFS)", "Learns the new task while keeping what the model "
              "computes inside close to the original; usually forgets least."),
    "flyp": ("Fine-tune like CLIP was trained (FLYP)", "Trains the image and the text side together on "
             "captions of the new classes, the way the model was first trained."),
}

CHOICE_WORDS: dict[str, dict[str, str]] = {
    "method.head_init": {"zs": "class names' text prompts (zs)", "lp": "a linear probe fitted first (lp, LP-FT)"},
    "budget.metric": {"mean_zs_controls": "average over the control datasets",
                      "worst_zs_control": "the control dataset that lost the most"},
    "budget.search": {"alpha": "LDIFS strength (alpha)", "strength": "L2-SP strength",
                      "none": "none: only mix with the original model"},
    "optim.precision": {"auto": "automatic", "fp32": "full precision (fp32)", "bf16": "bfloat16 (bf16)",
                        "fp16": "half precision (fp16)"},
}

SECTION_TITLES = {
    "data": "Data",
    "method": "Classifier head",
    "optim": "Optimisation",
    "eval": "Evaluation",
    "": "Reproducibility",
    "budget": "Forgetting budget search",
    "params": "Method settings",
}


def label_for(path: str) -> str:
    """The human label of a spec field (falls back to the field name in words)."""
    if path in LABELS:
        return LABELS[path]
    return path.rsplit(".", 1)[-1].replace("_", " ").capitalize()


# ---- glossary: what every number in the report means -----------------------------------------
GLOSSARY: dict[str, str] = {
    "zs_acc": "The share of test images the model labels correctly by comparing each image with a text "
    "description of every class. No training on that dataset is involved, so it measures what the model "
    "already knows.",
    "lp_acc": "The share of test images labelled correctly by a simple linear classifier fitted on the "
    "model's image features. It shows whether the features still hold the information, even if the text "
    "side no longer matches.",
    "delta": "Accuracy after fine-tuning minus accuracy before, in percentage points. Negative = the model "
    "forgot something; positive = it got better there too.",
    "interval": "The range the true value lies in with 95 % confidence, given how many test images there "
    "were. For a change it comes from re-sampling the same test images before and after (paired bootstrap).",
    "noise": "The interval of a change includes 0: with this many test images the change cannot be told "
    "apart from chance.",
    "small_test": "Fewer than 200 test images: one image more or less right moves the accuracy by half a "
    "point or more, so small differences mean little.",
    "unmeasurable": "For some datasets the model's text side cannot tell the classes apart (their class "
    "names give identical prompts), so zero-shot accuracy would only show which class is listed first. "
    "Such values are left out (a gap, with the reason) instead of shown as a number.",
    "target_acc": "Accuracy on the dataset the model was fine-tuned on, measured with the classifier that "
    "was trained along with it (what fine-tuning optimises); zero-shot when the run has none.",
    "mean_forgetting": "The average change of zero-shot accuracy on the control datasets (every evaluated "
    "dataset except the target). This is the run's forgetting in one number.",
    "worst": "The control dataset whose zero-shot accuracy dropped most.",
    "verdict": "The average change on the controls in words: little or no forgetting (0 to −1 points), some "
    "(down to −5), clear (down to −15), strong (below −15); 'within noise' when its interval includes 0.",
    "reference": "When you also ran plain fine-tuning (cross-entropy) on the same target with the same model, "
    "the verdict says which share of that run's loss this run avoided.",
    "ece": "How far the model's confidence is from its actual accuracy, 0 = perfectly calibrated; lower is "
    "better. For the linear probe it is measured after fitting one temperature on held-out images.",
    "wise_ft": "Mixes the original and the fine-tuned weights, 0 = original model, 1 = fully fine-tuned. "
    "Intermediate mixes often keep most of the gain and forget less.",
    "pareto": "The runs no other run beats on both target gain and forgetting at once.",
    "target_gain": "How many points the target accuracy rose during fine-tuning.",
    "seeds": "A run repeated with different random seeds; the report shows the mean and the standard "
    "deviation (sd) across the repeats.",
}

CHART_CAPTIONS = {
    "budget": "Each marker is a setting the search tried (filled: fine-tuned; hollow: mixed with the original "
    "model; ×: stopped early because it already forgot too much); green = within the budget, red = over. The "
    "dotted red line is the budget, the dashed line joins the best trade-offs, the star is the recommendation.",
    "dumbbell": "Each row is a dataset: the hollow grey circle is the accuracy before fine-tuning, the filled "
    "dot after (green = better, red = worse, blue = no change); whiskers show 95 % intervals.",
    "delta": "Change in accuracy per dataset, in percentage points, from worst to best; whiskers show 95 % "
    "intervals (a whisker across 0 = within noise).",
    "curves": "Zero-shot accuracy measured during training: which abilities faded, and when.",
    "wise_ft": GLOSSARY["wise_ft"],
    "merge": "What each λ on the grid kept, on the test images. Top: each run's task scored with that run's own "
    "classifier on the merged weights (dotted: its accuracy in its own run). Bottom: the mean change in zero-shot "
    "accuracy on the controls. The dashed line is the λ kept: the best mean task accuracy on the runs' held-out "
    "validation images (the subtitle says when a run held none out and the test images were used), so it need not "
    "be the highest point of these test curves.",
    "continual": "Continual fine-tuning: one row per stage of the sequence. Below the diagonal, how well "
    "each task learned earlier is still solved by its own classifier; above it, zero-shot accuracy on tasks "
    "not yet learned. Transfer = zero-shot accuracy on tasks before they are learned, Avg = mean of the "
    "rows after each stage, Last = mean of the last row.",
    "live": "Training loss (task loss and the regulariser term) and learning rate over the whole run.",
    "heatmap": "Change in zero-shot accuracy for each run (rows) and dataset (columns). Red = forgot, "
    "blue = improved; blank = not measured or not measurable.",
    "scatter": "Each marker is a run: further right = more gain on its target, higher = less forgetting; "
    "whiskers show 95 % intervals. The dashed line joins the runs nothing beats on both (the Pareto front).",
    "differences": "Each run minus the reference (the first plain fine-tuning run picked, else the first run), "
    "on the test images both were scored on: a positive change difference means it forgot less. In brackets "
    "the 95 % interval of the difference itself (paired over the same images, so it is much narrower than "
    "the two runs' own intervals); an interval that contains 0 is within noise.",
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


# ---- the report's words ------------------------------------------------------------------------
TABLE_CAPTION = ("**Trained classifier**: the target's own classifier, trained along with the model · "
                 "**Zero-shot**: accuracy from text prompts alone · **Linear probe**: accuracy of a simple "
                 "classifier fitted on the image features · **Change**: after − before, in percentage points, "
                 "with its 95 % interval · **ECE**: calibration error, lower is better. "
                 "*Not measurable* means the number would be meaningless; the reason is in the row.")

GLOSSARY_NAMES = {"zs_acc": "Zero-shot accuracy", "lp_acc": "Linear-probe accuracy", "delta": "Change (points)",
                  "interval": "95 % interval", "noise": "Within noise", "small_test": "Small test set",
                  "unmeasurable": "Not measurable", "target_acc": "Target accuracy (card)",
                  "mean_forgetting": "Average change on controls (card)", "worst": "Worst control (card)",
                  "verdict": "Verdict (card)", "reference": "Kept … of what plain fine-tuning lost",
                  "ece": "Calibration error (ECE)", "wise_ft": "WiSE-FT", "pareto": "Pareto front",
                  "target_gain": "Target gain", "seeds": "Repeats over seeds (mean ± sd)"}


def glossary_items() -> list[tuple[str, str]]:
    """(the words the report shows, what they mean) for the in-app and the offline glossary."""
    return [(GLOSSARY_NAMES.get(k, k.replace("_", " ").capitalize()), v) for k, v in GLOSSARY.items()]


def run_facts(results: Mapping[str, Any], method_title: str = "") -> str:
    """'LDIFS · model concept-clip-tiny · 300 steps · seed 0' under the run's title (escaped)."""
    spec = results.get("spec") or {}
    parts = [method_title or str(results.get("method") or "")]
    if spec.get("backbone"):
        parts.append(f"model {spec['backbone']}")
    steps = ((results.get("training") or {}).get("steps") or (spec.get("optim") or {}).get("steps"))
    if steps:
        parts.append(f"{steps} training steps")
    if spec.get("seed") is not None:
        parts.append(f"seed {spec['seed']}")
    return md_escape(" · ".join(p for p in parts if p))


def budget_note(spec: Mapping[str, Any]) -> str:
    """What starting a forgetting-budget search does, in plain words (New run's pre-flight panel)."""
    b = spec.get("budget") or {}
    pts = b.get("max_forgetting_points")
    most = b.get("max_trials", 10)
    return (f"This starts a **forgetting-budget search**: up to {most} fine-tunes of different strengths, queued "
            f"one after the other as a group in Jobs. Each is also mixed with the original model. The Report then "
            f"recommends the setting that learns the most while forgetting at most "
            f"{pts if pts is not None else '?'} points.")
