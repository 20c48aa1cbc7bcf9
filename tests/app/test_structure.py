"""The UI code stays readable (issue 14): no function in app/ longer than about 100 lines, and the
tab modules share one definition of the event visibility and the job state names."""
from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
MAX_LINES = 100


def test_no_function_in_the_app_is_longer_than_100_lines():
    long = []
    for f in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{f.relative_to(APP.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_tabs_share_private_and_state_names():
    for f in sorted((APP / "tabs").glob("*.py")):
        src = f.read_text(encoding="utf-8")
        assert 'dict(api_visibility="private")' not in src or f.name == "common.py", f
    jobs = (APP / "tabs" / "jobs.py").read_text(encoding="utf-8")
    for state in ("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "INTERRUPTED"):
        assert f'"{state}"' not in jobs, state  # the constants from tasks.store, not string literals
