"""An in-memory stand-in for ``tasks.api`` (CONTRACTS §4) for UI tests that need no worker.

Jobs advance with wall-clock time: a job runs ``run_s`` seconds after it is submitted, emits step
metrics, then finishes with a results dict built from ``tests.app.samples``.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from ldifs_engine.errors import SpecError
from tasks.api import InvalidState, JobNotFound, JobView

from . import samples


# The very classes of ``tasks.api``: tests/app/test_fake_api.py checks that this stand-in keeps its names
# and signatures.
def job_view(**fields: Any) -> JobView:
    """A ``tasks.api.JobView`` with the fields a fresh job has, overridden by ``fields``."""
    fresh = dict(priority=0, created_at=0.0, started_at=None, finished_at=None, attempts=0, heartbeat_at=None,
                 step=0, total_steps=None, eta_s=None, samples_per_s=None, checkpoint_step=None, message="")
    return JobView(**{**fresh, **fields})


_BACKBONES = [
    {"key": "concept-clip-tiny", "title": "Concept CLIP (built-in, offline)", "needs_download": False,
     "builtin": True, "description": "A tiny CLIP.", "tags": ["builtin", "offline"]},
    {"key": "ViT-B-32/openai", "title": "ViT-B/32 · OpenAI (the paper's)", "needs_download": True,
     "builtin": False, "description": "open_clip ViT-B-32.", "tags": ["download"]},
]
_METHODS = [
    {"name": "ce", "title": "Cross-entropy (plain fine-tuning)", "description": "The baseline that forgets.",
     "params": []},
    {"name": "ldifs", "title": "LDIFS (feature-space distance)", "description": "Preserves what the model knew.",
     "params": [{"name": "alpha", "type": "float", "default": 10.0, "help": "Weight of the feature-distance term.",
                 "min": 0.0, "max": 1e9},
                {"name": "normalize", "type": "str", "default": "tokens", "help": "Normalisation axis.",
                 "choices": ["tokens", "channels"]}]},
    {"name": "l2sp", "title": "L2-SP (weight anchor)", "description": "Keeps weights near the pre-trained ones.",
     "params": [{"name": "strength", "type": "float", "default": 0.5, "help": "a in a·Σ‖w − w0‖².", "min": 0.0}]},
]
_DATASETS = [
    {"key": k, "title": t, "num_classes": n, "source": "builtin", "available": True, "description": "",
     "how_to_get": "", "tags": ["concept-world"]}
    for k, t, n in [("quadrant", "Position (quadrant)", 4), ("shape", "Shape", 6), ("colour", "Colour", 8),
                    ("pattern", "Fill pattern", 4), ("size", "Size", 2), ("count", "Object count", 4)]
]


class FakeApi:
    """Same function names and signatures as ``tasks.api``."""

    JobNotFound = JobNotFound

    def __init__(self, run_s: float = 6.0, total_steps: int = 60):
        self.run_s, self.total_steps = run_s, total_steps
        self.jobs: dict[str, JobView] = {}
        self.cancelled: dict[str, str] = {}
        self.lock = threading.Lock()
        self.export_dir = Path(tempfile.mkdtemp(prefix="ldifs-fake-export-"))
        self.uploads: dict[str, dict[str, list[dict]]] = {}
        self.warnings: list[str] = []
        self.results_for: dict[str, dict] = {}

    # ---- jobs ----
    def submit(self, user: str, spec: Any, *, priority: int = 0) -> str:
        if isinstance(spec, str):
            import yaml

            spec = yaml.safe_load(spec)
        problems = self.validate_spec(spec)
        if problems:
            raise SpecError(problems)
        jid = uuid.uuid4().hex[:12]
        spec = copy.deepcopy(spec)
        now = time.time()
        method, target = spec.get("method", {}).get("name", "ce"), spec.get("data", {}).get("target")
        title = spec.get("name") or f"{method} on {target}"
        self.jobs[jid] = job_view(id=jid, owner=user, state="QUEUED", spec=spec, spec_hash="0" * 64, title=title,
                                 method=spec.get("method", {}).get("name", "ce"),
                                 target=spec.get("data", {}).get("target", "quadrant"), priority=priority,
                                 created_at=now, total_steps=self.total_steps)
        return jid

    def submit_many(self, user: str, specs: list, *, priority: int = 0) -> list[str]:
        for s in specs:
            p = self.validate_spec(s)
            if p:
                raise SpecError(p)
        return [self.submit(user, s, priority=priority) for s in specs]

    def _advance(self, j: JobView) -> JobView:
        if j.state not in ("QUEUED", "RUNNING"):
            return j
        age = time.time() - j.created_at
        if j.id in self.cancelled:
            return j
        if age < 0.5:
            return j
        frac = min((age - 0.5) / self.run_s, 1.0)
        step = int(frac * self.total_steps)
        if frac >= 1.0:
            j = replace(j, state="DONE", step=self.total_steps, finished_at=time.time(), eta_s=0.0,
                        result_path="results.json", started_at=j.created_at + 0.5)
        else:
            j = replace(j, state="RUNNING", step=step, started_at=j.created_at + 0.5, heartbeat_at=time.time(),
                        eta_s=(1 - frac) * self.run_s, samples_per_s=512.0, checkpoint_step=(step // 20) * 20 or None)
        self.jobs[j.id] = j
        return j

    def _own(self, user: str, job_id: str) -> JobView:
        j = self.jobs.get(job_id)
        if j is None or j.owner != user:
            raise JobNotFound(f"job {job_id!r} not found")
        return self._advance(j)

    def list_jobs(self, user: str, *, states=None, limit: int = 200) -> list[JobView]:
        out = [self._advance(j) for j in self.jobs.values() if j.owner == user]
        if states:
            out = [j for j in out if j.state in states]
        return sorted(out, key=lambda j: j.created_at, reverse=True)[:limit]

    def get_job(self, user: str, job_id: str) -> JobView:
        return self._own(user, job_id)

    def cancel(self, user: str, job_id: str, mode: str = "stop") -> JobView:
        j = self._own(user, job_id)
        if j.state not in ("QUEUED", "RUNNING"):
            raise InvalidState(f"job {job_id} is {j.state}; only queued or running jobs can be stopped")
        self.cancelled[job_id] = mode
        j = replace(j, state="CANCELLED", finished_at=time.time(),
                    message="stopped, checkpoint saved" if mode == "stop" else "killed")
        self.jobs[job_id] = j
        return j

    def cancel_group(self, user: str, job_id: str, mode: str = "stop") -> list[str]:
        group = self._own(user, job_id).group
        if not group:
            raise InvalidState("this run is not part of a group (seeds or a forgetting-budget search)")
        ids = [j.id for j in self.jobs.values() if j.owner == user and j.group == group
               and self._advance(j).state in ("QUEUED", "RUNNING")]
        return [self.cancel(user, i, mode).id for i in ids]

    def resume(self, user: str, job_id: str) -> JobView:
        j = self._own(user, job_id)
        if j.state not in ("CANCELLED", "INTERRUPTED", "FAILED"):
            raise InvalidState(f"job {job_id} is {j.state}; only stopped jobs can be resumed")
        self.cancelled.pop(job_id, None)
        j = replace(j, state="QUEUED", created_at=time.time(), attempts=j.attempts + 1)
        self.jobs[job_id] = j
        return j

    def group_results(self, user: str, group: str) -> dict[str, Any]:
        views = [self._advance(j) for j in self.jobs.values() if j.owner == user and j.group == group]
        jobs = [{"id": v.id, "seed": v.spec.get("seed"), "state": v.state, "title": v.title,
                 "results": self.get_results(user, v.id) if v.state == "DONE" else None} for v in views]
        done = [j["results"] for j in jobs if j["results"] is not None]
        return {"group": group, "jobs": jobs, "n_done": len(done), "n_total": len(jobs), "aggregate": None}

    def budget_results(self, user: str, group: str) -> dict[str, Any] | None:
        """A budget search over the fake jobs of ``group`` (their specs carry ``budget``), judged by the engine."""
        from ldifs_engine.budget import budget_document, recommended_spec
        from ldifs_engine.spec import RunSpec

        views = [self._advance(j) for j in self.jobs.values() if j.owner == user and j.group == group]
        if not views:
            raise JobNotFound(f"no group {group!r}")
        if "budget" not in views[0].spec:
            return None
        spec = RunSpec.from_dict(views[0].spec)
        done = [(v.id, self.get_results(user, v.id)) for v in views if v.state == "DONE"]
        doc = budget_document(spec, done, complete=len(done) == len(views))
        rec = doc["recommended"]
        return {"group": group, "spec": spec.to_dict(), "search": "alpha", "document": doc,
                "recommended_spec": recommended_spec(spec.to_dict(), rec) if rec else None,
                "complete": doc["complete"], "trials": [{"id": v.id, "state": v.state, "title": v.title,
                                                         "value": None} for v in views]}

    def job_metrics(self, user: str, job_id: str, *, after_step: int = 0) -> list[dict]:
        j = self._own(user, job_id)
        out = []
        for s in range(max(after_step + 1, 1), j.step + 1):
            lr = 1e-4 * 0.5 * (1 + math.cos(math.pi * s / self.total_steps))
            out.append({"type": "step", "t": j.created_at + s, "step": s, "total_steps": self.total_steps,
                        "loss": 2.0 / (1 + s / 10) + 0.05, "task_loss": 2.0 / (1 + s / 10), "reg_loss": 0.05,
                        "lr": lr, "samples_per_s": 512.0, "micro_batch": 64, "accum": 1})
        return out

    def job_events(self, user: str, job_id: str, *, kinds=None, tail=None) -> list[dict]:
        ev = self.job_metrics(user, job_id)
        return ev[-tail:] if tail else ev

    def job_logs(self, user: str, job_id: str, n: int = 40) -> list[str]:
        j = self._own(user, job_id)
        return [f"step {s}/{self.total_steps}" for s in range(max(1, j.step - n + 1), j.step + 1)] or ["waiting…"]

    def get_results(self, user: str, job_id: str) -> dict | None:
        j = self._own(user, job_id)
        if j.state != "DONE":
            return None
        if job_id in self.results_for:  # a test's own results for this run
            return copy.deepcopy(self.results_for[job_id])
        if j.method == "merge":  # the sample merge, its tasks named after the runs picked
            r = samples.merge_results()
            for task, run_id in zip(r["merge"]["tasks"], (j.spec.get("merge") or {}).get("jobs") or []):
                task["run"] = self.jobs[run_id].title
            return r
        r = samples.results(target=j.target, method=j.method)
        r["spec"] = j.spec
        if j.method == "ce":  # make CE forget more, so compare charts have something to show
            for e in r["datasets"].values():
                if e["role"] == "control":
                    e["after"]["zs_acc"] = max(0.0, e["after"]["zs_acc"] - 0.08)
        return r

    def get_per_image(self, user: str, job_id: str) -> dict | None:
        """Per-image scores that reproduce the results' accuracies on 400 shared test images (the first
        round(acc · 400) images right), so two runs' difference can be computed as for real runs."""
        r = self.get_results(user, job_id)
        if r is None:
            return None

        def bits(acc: Any) -> str | None:
            return None if not isinstance(acc, (int, float)) else "1" * round(acc * 400) + "0" * (400 - round(acc * 400))

        ds = {k: {side: {h: bits((e.get(side) or {}).get(f"{h}_acc")) for h in ("zs", "lp")}
                  for side in ("before", "after")} for k, e in (r.get("datasets") or {}).items()}
        head = r.get("target_head_acc") or {}
        return {"schema": "ldifs.per_image/1", "datasets": ds,
                "target_head": {side: bits(head.get(side)) for side in ("before", "after")}}

    def compare_runs(self, user: str, job_a: str, job_b: str) -> dict:
        from tasks.differences import run_difference

        res = {j: self.get_results(user, j) for j in (job_a, job_b)}
        if any(v is None for v in res.values()):
            raise InvalidState("a run has no results yet")
        out = run_difference(res[job_a], self.get_per_image(user, job_a), res[job_b], self.get_per_image(user, job_b))
        return {**out, "a": job_a, "b": job_b}

    def export_artifact(self, user: str, job_id: str, kind: str) -> Path:
        r = self.get_results(user, job_id)
        if r is None:
            raise InvalidState("the run has not finished")
        d = Path(tempfile.mkdtemp(dir=self.export_dir))
        if kind == "results":
            p = d / f"{job_id}-results.json"
            p.write_text(json.dumps(r))
        elif kind == "csv":
            p = d / f"{job_id}-results.csv"
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["dataset", "role", "zs_before", "zs_after"])
            for k, e in r["datasets"].items():
                w.writerow([k, e["role"], e["before"].get("zs_acc"), e["after"].get("zs_acc")])
            p.write_text(buf.getvalue())
        elif kind == "yaml":
            p = d / f"{job_id}-spec.yaml"
            p.write_text(json.dumps(r["spec"]))
        elif kind == "checkpoint":
            p = d / f"{job_id}-model.safetensors"
            p.write_bytes(b"\0" * 64)
        else:
            raise SpecError(f"kind: {kind!r} is not one of checkpoint, results, csv, yaml")
        return p

    # ---- merging and sharing (tasks/sharing.py) ----
    def submit_merge(self, user: str, job_ids: Any, *, method: str = "task_arithmetic", lambdas: Any = None,
                     ties_keep: float | None = None, name: str | None = None, priority: int = 0) -> str:
        ids = list(dict.fromkeys(job_ids or []))
        if not 2 <= len(ids) <= 8:
            raise SpecError(f"jobs: pick 2 to 8 different finished runs to merge, got {len(ids)}")
        views = [self._own(user, i) for i in ids]
        if any(v.state != "DONE" for v in views):
            raise InvalidState("only finished runs can be merged")
        jid = uuid.uuid4().hex[:12]
        target = " + ".join(v.target for v in views)
        self.jobs[jid] = job_view(id=jid, owner=user, state="QUEUED", spec={"kind": "merge", "merge": {
            "jobs": ids, "method": method, "lambdas": lambdas}}, spec_hash="0" * 64,
            title=name or f"merge ({method.replace('_', ' ')}) of {target}", method="merge", target=target,
            priority=priority, created_at=time.time(), total_steps=self.total_steps)
        return jid

    def hub_token_configured(self) -> bool:
        return bool(getattr(self, "hub_token", False))

    def push_to_hub(self, user: str, job_id: str, repo_id: str, *, headline: str | None = None,
                    private: bool = True, priority: int = 0) -> str:
        if not self.hub_token_configured():
            raise InvalidState("push: no Hugging Face token is configured on the server (HF_TOKEN); download the "
                               "model card folder instead, or on the command line `ldifs card RUN_DIR --out DIR`")
        view = self._own(user, job_id)
        jid = uuid.uuid4().hex[:12]
        self.pushes = [*getattr(self, "pushes", []), {"job": job_id, "repo": repo_id, "headline": headline}]
        self.jobs[jid] = job_view(id=jid, owner=user, state="QUEUED", spec={"kind": "push", "push": {
            "job": job_id, "repo": repo_id, "private": private}}, spec_hash="0" * 64,
            title=f"push {view.title} to {repo_id}", method="push", target=repo_id, priority=priority,
            created_at=time.time(), total_steps=self.total_steps)
        return jid

    def model_card(self, user: str, job_id: str, *, headline: str | None = None) -> Path:
        if self.get_results(user, job_id) is None:
            raise InvalidState("the run has not finished")
        p = Path(tempfile.mkdtemp(dir=self.export_dir)) / f"{job_id}-model-card.zip"
        p.write_bytes(b"PK\x05\x06" + b"\0" * 18)
        self.cards = [*getattr(self, "cards", []), {"job": job_id, "headline": headline}]
        return p

    def status_dict(self, user: str, job_id: str) -> dict:
        d = self._own(user, job_id).to_dict()
        d.pop("spec", None)
        return d

    def job_summaries(self, user: str, *, states=None, limit: int = 200) -> list[dict]:
        out = []
        for j in self.list_jobs(user, states=states, limit=limit):
            d = j.to_dict()
            d.pop("spec", None)
            out.append(d)
        return out

    # ---- catalogs ----
    def catalog_backbones(self) -> list[dict]:
        return copy.deepcopy(_BACKBONES)

    def startup_warnings(self) -> list[str]:
        return list(self.warnings)

    def catalog_methods(self) -> list[dict]:
        return copy.deepcopy(_METHODS)

    def catalog_datasets(self, user: str) -> list[dict]:
        return copy.deepcopy(_DATASETS) + copy.deepcopy(self.list_user_datasets(user))

    def validate_spec(self, spec_dict: Any) -> list[str]:
        if not isinstance(spec_dict, dict):
            return ["spec: expected a mapping"]
        p = []
        data = spec_dict.get("data") or {}
        keys = {d["key"] for d in self.catalog_datasets("any")} | {
            d["key"] for ds in self.uploads.values() for d in ds}
        if data.get("target") not in keys:
            p.append(f"data.target: unknown dataset {data.get('target')!r}")
        if data.get("target") in (data.get("controls") or []):
            p.append(f"data.controls: the target {data.get('target')!r} cannot also be a control dataset")
        o = spec_dict.get("optim") or {}
        if (o.get("steps") is None) == (o.get("epochs") is None):
            p.append("optim.steps: give exactly one of optim.steps and optim.epochs")
        lr = o.get("lr", 1e-5)
        if not isinstance(lr, (int, float)) or lr <= 0:
            p.append(f"optim.lr: {lr!r} is out of range; allowed: a number > 0 and <= 1")
        return p

    # ---- datasets ----
    def import_dataset(self, user: str, zip_path: Any, name: str | None = None, **kwargs: Any) -> dict:
        key = "upload:" + uuid.uuid4().hex
        entry = {"key": key, "title": name or "my dataset", "num_classes": 2, "source": "upload",
                 "available": True, "classnames": ["cat", "dog"], "templates": ["a photo of a {}."],
                 "counts": {"cat": 5, "dog": 5}}
        self.uploads.setdefault(user, []).append(entry)
        return {"key": key, "title": entry["title"], "classes": 2, "images": 10, "skipped": [], "warnings": []}

    def list_user_datasets(self, user: str, **kwargs: Any) -> list[dict]:
        return copy.deepcopy(self.uploads.get(user, []))

    def show_dataset(self, user: str, key: str, **kwargs: Any) -> dict:
        for d in self.catalog_datasets(user):
            if d["key"] == key:
                return {**d, "classnames": d.get("classnames", ["a", "b"]), "templates": d.get("templates", ["{}"])}
        raise SpecError(f"dataset: unknown dataset {key!r}")

    def update_dataset(self, user: str, key: str, classnames: list[str] | None = None,
                       templates: list[str] | None = None, **kwargs: Any) -> dict:
        for d in self.uploads.get(user, []):
            if d["key"] == key:
                if classnames is not None:
                    d["classnames"] = list(classnames)
                if templates is not None:
                    d["templates"] = list(templates)
                return copy.deepcopy(d)
        raise SpecError(f"dataset: {key!r} is not one of your uploads")
