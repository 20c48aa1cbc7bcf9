"""What the tabs share: the event visibility, job state names, handler binding and display names.

Uploads are stored under keys like ``upload:831d1c6a…``; a user should see the name they gave the
upload instead, everywhere (job list, report, compare). ``Names`` does that lookup once per request.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING

# Every UI event is reachable only from the page; the public, scriptable API lives in main._public_api.
PRIVATE: dict[str, Any] = dict(api_visibility="private")

ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, FAILED, CANCELLED, INTERRUPTED)
STOPPED = (CANCELLED, INTERRUPTED)

__all__ = ["ACTIVE", "CANCELLED", "DONE", "FAILED", "FINISHED", "INTERRUPTED", "PRIVATE", "QUEUED", "RUNNING",
           "STOPPED", "Names", "bind"]


def bind(fn: Callable, *bound: Any) -> Callable:
    """``fn`` with its first arguments fixed (usually the ``AppContext``), as a named plain function.

    Handlers live at module level as ``handler(ctx, *inputs, request)``; Gradio inspects the
    signature to inject ``gr.Request``, so the bound one exposes the remaining parameters only.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*bound, *args, **kwargs)

    sig = inspect.signature(fn)
    call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[len(bound):])  # type: ignore[attr-defined]
    return call


@dataclass(frozen=True)
class Names:
    """Display names of datasets and methods for one user (their uploads included)."""

    datasets: Mapping[str, str]
    methods: Mapping[str, str]

    @classmethod
    def load(cls, api: Any, user: str) -> Names:
        """Read the catalogs; a catalog that cannot be read leaves keys as they are."""
        try:
            ds = {str(d["key"]): str(d.get("title") or d.get("name") or d["key"]) for d in api.catalog_datasets(user)}
        except Exception:  # noqa: BLE001 — names are cosmetic; never hide a list because of them
            ds = {}
        try:
            ms = {str(m["name"]): short_method(m) for m in api.catalog_methods()}
        except Exception:  # noqa: BLE001
            ms = {}
        return cls(ds, ms)

    def dataset(self, key: Any) -> str:
        k = str(key or "")
        if k in self.datasets:
            return self.datasets[k]
        if " + " in k:  # a merge's targets, joined by the service layer
            return " + ".join(self.dataset(part) for part in k.split(" + "))
        return "your upload" if k.startswith("upload:") else k

    def method(self, name: Any) -> str:
        return self.methods.get(str(name or ""), str(name or ""))

    def title(self, job: Any) -> str:
        """A job's title; the generated ``"ldifs on upload:…"`` becomes ``"LDIFS on Cats and dogs"``."""
        raw = str(getattr(job, "title", "") or "")
        target = str(getattr(job, "target", "") or "")
        generated = f"{getattr(job, 'method', '')} on {target}"
        if not raw or raw == generated:
            return f"{self.method(job.method)} on {self.dataset(job.target)}"
        if getattr(job, "method", "") == "merge" and target and raw.endswith(f" of {target}"):
            return raw[: -len(target)] + self.dataset(target)  # "merge (…) of Position (quadrant) + Object count"
        return raw

    def run_label(self, job: Any) -> str:
        """The label of a finished run in the Report and Compare lists."""
        title, what = self.title(job), f"{self.method(job.method)} on {self.dataset(job.target)}"
        if title == what or (job.method == "merge" and title.endswith(f" of {self.dataset(job.target)}")):
            return f"{title} · {str(job.id)[:8]}"
        return f"{title} · {what} · {str(job.id)[:8]}"

    def run_choices(self, jobs: Iterable[Any]) -> list[tuple[str, str]]:
        return [(self.run_label(j), str(j.id)) for j in jobs]


def short_method(m: Mapping[str, Any]) -> str:
    """'Cross-entropy (plain fine-tuning)' → 'Cross-entropy': the list labels stay short."""
    title = str(m.get("title") or m.get("name") or "")
    return title.split(" (", 1)[0] or str(m.get("name", ""))
