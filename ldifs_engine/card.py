"""A Hugging Face model card and a folder ready for upload, from a finished run (or merge) folder.

``write_card(run_dir, out)`` writes:

- ``open_clip_model.safetensors`` — the full fine-tuned (or merged) CLIP weights, and
  ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``): the two names open_clip looks for, so
  ``open_clip.create_model_and_transforms("hf-hub:user/name")`` (or ``"local-dir:OUT"``) loads it;
- ``head.safetensors`` — the target's trained classifier (a linear layer on the L2-normalised image
  embedding), ``heads/`` for a merge, ``adapter.safetensors`` when the run exported a LoRA adapter;
- ``results.json`` — the run's full numbers, and ``README.md`` — the card: YAML front matter
  (``model-index`` results for the target and every control, base model, license placeholder, tags,
  method and parameters) and a body with the plain-language headline, the forgetting table (the same
  numbers as ``results.json``) and how to load the weights.

The headline's wording is the report's (``app/story.py``); the caller passes it in (the ``ldifs``
command and the web app do), so the engine does not carry a second wording of the same story.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import LdifsError

WEIGHTS_NAME = "open_clip_model.safetensors"  # open_clip's HF_SAFE_WEIGHTS_NAME
CONFIG_NAME = "open_clip_config.json"  # open_clip's HF_CONFIG_NAME
LICENSE_PLACEHOLDER = "other"  # set the real license before publishing: the base model's terms apply
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class CardError(LdifsError):
    """A run folder a card cannot be made from (unfinished, no weights)."""

    exit_code = 2
    exit_meaning = "the run cannot be shared"


def check_repo_id(repo_id: str) -> str:
    """``user/name`` as the Hub spells repositories, or ``CardError`` saying what is allowed."""
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith(".git"):
        raise CardError(f"repo: {str(repo_id)[:100]!r} is not allowed; expected user/name (letters, digits, "
                        "'-', '_', '.'; at most 96 characters each)")
    return repo_id


def read_results(run_dir: Path) -> dict:
    from .results import read_finished

    return read_finished(run_dir, str(run_dir), CardError)


def open_clip_config(backbone: str) -> dict:
    """``{"model_cfg", "preprocess_cfg"}`` of a catalog backbone, as open_clip's hub loader reads it."""
    import open_clip

    from .backbones import BACKBONES, _add_builtin_configs, quick_gelu_for

    info = BACKBONES.get(backbone)
    _add_builtin_configs()
    cfg = dict(open_clip.get_model_config(info.arch) or {})
    if not cfg:
        raise CardError(f"backbone {backbone!r}: open_clip has no config for {info.arch!r}")
    if quick_gelu_for(info):
        cfg["quick_gelu"] = True
    tag = (open_clip.get_pretrained_cfg(info.arch, info.pretrained) or {}) if info.pretrained else {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    pre = {"size": size, "mean": list(tag.get("mean", open_clip.OPENAI_DATASET_MEAN)),
           "std": list(tag.get("std", open_clip.OPENAI_DATASET_STD)),
           "interpolation": tag.get("interpolation", "bicubic"), "resize_mode": tag.get("resize_mode", "shortest")}
    return {"model_cfg": cfg, "preprocess_cfg": pre}


def base_model(backbone: str) -> str | None:
    """The Hub repository of the pre-trained weights, where open_clip names one (``None`` for built-ins)."""
    import open_clip

    from .backbones import BACKBONES

    info = BACKBONES.get(backbone)
    if not info.pretrained:
        return None
    hub = (open_clip.get_pretrained_cfg(info.arch, info.pretrained) or {}).get("hf_hub") or ""
    return hub.strip("/") or None


# ---- the numbers -------------------------------------------------------------------------------------
def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def _change(v: Any, ci: Any) -> str:
    if not isinstance(v, (int, float)):
        return "—"
    s = f"{100 * v:+.1f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        s += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return s


# "Before/After" are the trained classifier's accuracy on a "(trained classifier)" row, zero-shot on the others
# (headed "Zero-shot …", the classifier's row read as a zero-shot number).
TABLE_HEAD = ("Dataset", "Role", "Before", "After", "Change [95 % CI]",
              "Linear probe before", "Linear probe after", "Linear probe change [95 % CI]")


def forgetting_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """The card's table: the target's trained classifier first, then every dataset (accuracy %, changes in
    points with their 95 % intervals; — where a number was not measured or is not measurable)."""
    th = results.get("target_head_acc") or {}
    rows = [[f"{_title(results, results.get('target'))} (trained classifier)", "target", _pct(th.get("before")),
             _pct(th.get("after")), _change(_delta(th.get("after"), th.get("before")), th.get("delta_ci")),
             "", "", ""]]
    for t in ((results.get("merge") or {}).get("tasks") or [])[1:]:  # a merge's other runs' classifiers
        rows.append([f"{t.get('title') or t['dataset']} (trained classifier of run {t.get('run')})", "sequence",
                     _pct(t.get("before")), _pct(t.get("merged")), _change(_delta(t.get("merged"), t.get("before")), None),
                     "", "", ""])
    for key, d in (results.get("datasets") or {}).items():
        b, a = d.get("before") or {}, d.get("after") or {}
        rows.append([str(d.get("title") or key), str(d.get("role")), _pct(b.get("zs_acc")), _pct(a.get("zs_acc")),
                     _change(_delta(a.get("zs_acc"), b.get("zs_acc")), d.get("delta_zs_ci")),
                     _pct(b.get("lp_acc")), _pct(a.get("lp_acc")),
                     _change(_delta(a.get("lp_acc"), b.get("lp_acc")), d.get("delta_lp_ci"))])
    return rows


def _delta(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _title(results: Mapping[str, Any], key: Any) -> str:
    return str(((results.get("datasets") or {}).get(key) or {}).get("title") or key)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---- the front matter --------------------------------------------------------------------------------
def _metric(value: Any, name: str) -> dict | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return {"type": "accuracy", "value": round(100 * float(value), 2), "name": name}


def _result(task: str, task_name: str, key: str, title: str, metrics: list) -> dict | None:
    metrics = [m for m in metrics if m]
    if not metrics:
        return None
    return {"task": {"type": task, "name": task_name},
            "dataset": {"type": key, "name": title, "split": "test"}, "metrics": metrics}


def model_index(results: Mapping[str, Any], name: str) -> list[dict]:
    """``model-index``: the target's (and a merge's every task's) classifier, zero-shot on every control."""
    out = []
    tasks = (results.get("merge") or {}).get("tasks")
    if tasks:
        heads = [(t["dataset"], t.get("title") or t["dataset"], t.get("before"), t.get("merged")) for t in tasks]
    else:
        th = results.get("target_head_acc") or {}
        heads = [(results["target"], _title(results, results["target"]), th.get("before"), th.get("after"))]
    for key, title, before, after in heads:
        out.append(_result("image-classification", "Image classification (trained classifier)", key, title,
                           [_metric(after, "Accuracy after fine-tuning"),
                            _metric(before, "Accuracy before fine-tuning")]))
    for key, d in (results.get("datasets") or {}).items():
        if d.get("role") != "control":
            continue
        out.append(_result("zero-shot-image-classification", "Zero-shot image classification", key,
                           str(d.get("title") or key),
                           [_metric((d.get("after") or {}).get("zs_acc"), "Zero-shot accuracy after fine-tuning"),
                            _metric((d.get("before") or {}).get("zs_acc"), "Zero-shot accuracy of the pre-trained model"),
                            _metric((d.get("after") or {}).get("lp_acc"), "Linear-probe accuracy after fine-tuning")]))
    return [{"name": name, "results": [r for r in out if r]}]


def front_matter(results: Mapping[str, Any], name: str) -> dict:
    spec = results.get("spec") or {}
    method = spec.get("method") or {}
    meta: dict[str, Any] = {"library_name": "open_clip", "license": LICENSE_PLACEHOLDER,
                            "license_name": "set-before-publishing",
                            "pipeline_tag": "zero-shot-image-classification"}
    base = base_model(str(results.get("backbone") or spec.get("backbone")))
    if base:
        meta["base_model"] = base
    meta["tags"] = [t for t in ("clip", "open_clip", "ldifs-studio", "concept-forgetting",
                                str(results.get("method") or method.get("name") or ""),
                                (results.get("merge") or {}).get("method", "").replace("_", "-")) if t]
    meta["ldifs"] = {"backbone": results.get("backbone") or spec.get("backbone"), "target": results.get("target"),
                     "method": method.get("name") or results.get("method"), "params": method.get("params") or {},
                     "head_init": method.get("head_init"), "seed": spec.get("seed"),
                     "spec_hash": results.get("spec_hash"), "results_schema": results.get("schema")}
    if results.get("merge"):
        m = results["merge"]
        for k in ("params", "head_init"):
            meta["ldifs"].pop(k)
        meta["ldifs"]["merge"] = {"method": m.get("method"), "lambda": m.get("chosen_lambda"),
                                  "runs": [t.get("run") for t in m.get("tasks") or []]}
    meta["model-index"] = model_index(results, name)
    return meta


# ---- the card and the folder -------------------------------------------------------------------------------
def card_text(results: Mapping[str, Any], *, name: str, headline: str | None, repo_id: str | None,
              has_head: bool, has_adapter: bool) -> str:
    """The whole ``README.md``: front matter, headline, table, how to load."""
    import yaml

    fm = yaml.safe_dump(front_matter(results, name), sort_keys=False, allow_unicode=True)
    where = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    parts = [f"---\n{fm}---", f"# {name}", headline or "",
             _about(results),
             "## What it gained and what it forgot",
             "*Before* / *After*: the trained classifier's accuracy on a row marked *(trained classifier)*, "
             "zero-shot accuracy (text prompts alone) on the others; the linear probe is a fresh linear classifier "
             "fitted on the image features. "
             "Accuracy in %, changes in points with their 95 % intervals (Wilson for accuracies, paired bootstrap "
             "over the same test images for changes); — = not measured, or not measurable (see `zs_note` in "
             "`results.json`). *target* = the task fine-tuned on, *control* = a dataset it was not trained on: "
             "a drop there is forgetting.",
             markdown_table(forgetting_rows(results)),
             "## How to load",
             _loading(where, repo_id, has_head, has_adapter),
             "## Files",
             "`open_clip_model.safetensors` (weights), `open_clip_config.json` (architecture and preprocessing), "
             + ("`head.safetensors` (the target classifier), " if has_head else "")
             + ("`adapter.safetensors` (the LoRA adapter alone), " if has_adapter else "")
             + "`results.json` (every number above, schema `ldifs.results/1`).",
             "*License: a placeholder (`other`). Set it before publishing: the pre-trained model's terms apply to "
             "these weights.*"]
    return "\n\n".join(p for p in parts if p) + "\n"


def _about(results: Mapping[str, Any]) -> str:
    spec = results.get("spec") or {}
    method = spec.get("method") or {}
    m = results.get("merge")
    if m:
        runs = ", ".join(f"{t.get('run')} ({t.get('method')} on {t.get('dataset')})" for t in m.get("tasks") or [])
        return (f"A merge ({str(m.get('method')).replace('_', ' ')}, λ = {m.get('chosen_lambda')}, chosen on "
                f"{m.get('selected_on')} images) of {runs}, on backbone `{results.get('backbone')}`; made with "
                "LDIFS Studio.")
    params = ", ".join(f"{k} = {v}" for k, v in (method.get("params") or {}).items()) or "defaults"
    steps = (results.get("training") or {}).get("steps")
    return (f"Fine-tuned from `{results.get('backbone') or spec.get('backbone')}` on **{_title(results, results.get('target'))}** "
            f"with `{method.get('name') or results.get('method')}` ({params}; head init "
            f"{method.get('head_init', '—')}" + (f", {steps} steps" if steps else "") + f", seed {spec.get('seed')}) "
            "in LDIFS Studio.")


def _loading(where: str, repo_id: str | None, has_head: bool, has_adapter: bool) -> str:
    head = ""
    if has_head:
        fetch = f'hf_hub_download("{repo_id}", "head.safetensors")' if repo_id else '"PATH/TO/THIS/FOLDER/head.safetensors"'
        head = ("\n\n# the target classifier: a linear layer on the L2-normalised image embedding\n"
                + ("from huggingface_hub import hf_hub_download\n" if repo_id else "")
                + "from safetensors.torch import load_file\n"
                f"head = load_file({fetch})  # weight [classes, dim], bias [classes]\n"
                "with torch.no_grad():\n"
                "    emb = torch.nn.functional.normalize(model.encode_image(images), dim=-1)\n"
                "    logits = emb @ head[\"weight\"].t() + head[\"bias\"]")
    code = ("```python\nimport open_clip\nimport torch\n\n"
            f'model, _, preprocess = open_clip.create_model_and_transforms("{where}")\n'
            f'tokenizer = open_clip.get_tokenizer("{where}")\nmodel.eval()' + head + "\n```")
    note = ("\n\nThe LoRA adapter alone is in `adapter.safetensors` (pairs `<weight>.lora_A` / `.lora_B`); the "
            "weights above already have it folded in." if has_adapter else "")
    return code + note


def _write_folded(adapter: Path, backbone: str, target: Path, label: str) -> None:
    from .backbones import load_backbone
    from .checkpoint import save_tensors_atomic
    from .merge import MergeError, fold_adapter

    base = load_backbone(backbone).state_dict()
    try:
        state = fold_adapter(adapter, base, label)
    except MergeError as e:
        raise CardError(str(e)) from None
    save_tensors_atomic(target, state, metadata={"backbone": backbone, "lora": "folded"})


def write_card(run_dir: str | Path, out: str | Path, *, headline: str | None = None, repo_id: str | None = None,
               name: str | None = None) -> Path:
    """Write the upload folder ``out`` for the finished run (or merge) in ``run_dir``; returns ``out/README.md``."""
    from .files import atomic_write_bytes

    run_dir, out = Path(run_dir), Path(out)
    if repo_id is not None:
        check_repo_id(repo_id)
    results = read_results(run_dir)
    final = run_dir / "final"
    has_adapter = (final / "adapter.safetensors").is_file()
    if not (final / "model.safetensors").is_file() and not has_adapter:
        raise CardError(f"run {run_dir}: has no final weights (final/model.safetensors or a LoRA adapter)")
    out.mkdir(parents=True, exist_ok=True)
    backbone = str(results.get("backbone") or (results.get("spec") or {}).get("backbone"))
    config = open_clip_config(backbone)
    if (final / "model.safetensors").is_file():
        shutil.copyfile(final / "model.safetensors", out / WEIGHTS_NAME)
    else:  # the run exported its LoRA adapter only: the card carries the full model, adapter folded in
        _write_folded(final / "adapter.safetensors", backbone, out / WEIGHTS_NAME, str(run_dir))
    atomic_write_bytes(out / CONFIG_NAME, json.dumps(config, indent=2).encode())
    has_head = (final / "head.safetensors").is_file()
    if has_head:
        shutil.copyfile(final / "head.safetensors", out / "head.safetensors")
    if (final / "heads").is_dir():
        shutil.copytree(final / "heads", out / "heads", dirs_exist_ok=True)
    if has_adapter:
        shutil.copyfile(final / "adapter.safetensors", out / "adapter.safetensors")
    shutil.copyfile(run_dir / "results.json", out / "results.json")
    name = name or (repo_id.split("/")[1] if repo_id else None) or str(results.get("name") or "ldifs-studio-run")
    text = card_text(results, name=name, headline=headline, repo_id=repo_id, has_head=has_head, has_adapter=has_adapter)
    return atomic_write_bytes(out / "README.md", text.encode("utf-8"))
