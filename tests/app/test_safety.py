"""Static guards: tab handlers never build filesystem paths from what a browser sends (U10)."""
from __future__ import annotations

import ast
from pathlib import Path

TABS = Path(__file__).resolve().parents[2] / "app" / "tabs"


def _calls(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" \
                if isinstance(f, ast.Attribute) else "?"
            out.append(name)
    return out


def test_tabs_never_open_or_join_paths():
    for f in sorted(TABS.glob("*.py")):
        calls = _calls(f)
        for banned in ("open", "Path", "os.path.join", "shutil.copy", "os.remove", "os.open"):
            assert banned not in calls, f"{f.name} calls {banned}"


def test_no_user_string_is_interpolated_into_gr_html():
    # gr.HTML does not sanitise: only report.stat_cards_html and jobs.progress_html feed it, and both escape.
    for f in sorted(TABS.glob("*.py")):
        text = f.read_text(encoding="utf-8")
        assert "sanitize_html=False" not in text, f.name
