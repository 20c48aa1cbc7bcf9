"""Static checks of the shape of the code: import direction and unsafe calls."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def files(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def offending(pkg: str, banned: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for f in files(pkg):
        if f.name in skip:
            continue
        for name in imports(f):
            if name.split(".")[0] in banned or name in banned:
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    return bad


def test_engine_knows_nothing_of_service_or_ui():
    assert offending("ldifs_engine", ("tasks", "app", "gradio", "huey", "plotly")) == []


def test_tasks_does_not_import_the_ui():
    assert offending("tasks", ("app", "gradio", "plotly")) == []


def test_app_does_no_tensor_work():
    # app/cli.py is the top of the house and may compose engine commands; the web UI may not.
    assert offending("app", ("torch", "torchvision", "open_clip", "safetensors", "numpy"), skip=("cli.py",)) == []
    engine_imports = [
        f"{f.relative_to(ROOT)} imports {n}" for f in files("app") if f.name != "cli.py" for n in imports(f)
        if n.startswith("ldifs_engine") and n not in ("ldifs_engine.spec", "ldifs_engine.errors", "ldifs_engine.presets", "ldifs_engine")
    ]
    assert engine_imports == []


def test_no_unsafe_torch_load():
    for pkg in ("ldifs_engine", "tasks", "app"):
        for f in files(pkg):
            text = f.read_text(encoding="utf-8")
            assert "weights_only=False" not in text, f
            tree = ast.parse(text)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                        getattr(node.func.value, "id", None) == "torch":
                    kws = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                    assert kws.get("weights_only") is True, f"{f}: torch.load without weights_only=True"
