"""The UI code stays readable (issue 14): the tab modules share one definition of the event visibility and
the job state names (function length is checked for every package in tests/test_function_size.py)."""
from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def test_tabs_share_private_and_state_names():
    for f in sorted((APP / "tabs").glob("*.py")):
        src = f.read_text(encoding="utf-8")
        assert 'dict(api_visibility="private")' not in src or f.name == "common.py", f
    jobs = (APP / "tabs" / "jobs.py").read_text(encoding="utf-8")
    for state in ("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "INTERRUPTED"):
        assert f'"{state}"' not in jobs, state  # the constants from tasks.store, not string literals
