"""The service layer is light: listing, submitting and serving never load the tensor libraries.

``ldifs jobs``, ``ldifs status``, ``ldifs submit`` and the web process (``app.main`` with the app built on
the real ``tasks.api``) run in a fresh interpreter; afterwards ``sys.modules`` must hold no torch,
torchvision or open_clip. Tensor work belongs in the engine child the worker starts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "open_clip")

SERVICE_PATHS = """
import contextlib, io, json, sys
from pathlib import Path

import app.cli, app.main, tasks.api as api

def cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = app.cli.main([*argv, "--user", "alice"])
    assert code == 0, (argv, code)
    return out.getvalue()

spec = Path(sys.argv[1])
job_id = cli("submit", str(spec)).strip()
listed = json.loads(cli("jobs", "--json"))
status = json.loads(cli("status", job_id[:8], "--json"))
cli("jobs")
# the web process at start: the app on the real service API, and what its pages load first
app.main.build_app(default_user="alice")
catalogs = (api.catalog_backbones(), api.catalog_methods(), api.catalog_datasets("alice"),
            api.list_user_datasets("alice"))
assert api.validate_spec({"data": {"target": "nope"}})
print(json.dumps({"job": job_id, "listed": [j["id"] for j in listed], "status": status["state"],
                  "catalogs": [len(c) for c in catalogs],
                  "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


@pytest.mark.slow  # a fresh interpreter imports gradio (seconds on a busy machine)
def test_service_layer_and_web_process_import_no_tensor_library(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text((ROOT / "examples" / "quick.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {**os.environ, "LDIFS_HOME": str(tmp_path / "home"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("LDIFS_QUEUE_URL", None)
    out = subprocess.run([sys.executable, "-c", SERVICE_PATHS, str(spec)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["listed"] == [report["job"]] and report["status"] == "QUEUED"
    assert all(report["catalogs"][:3]), report  # backbones, methods and datasets were really listed
    assert report["heavy"] == [], f"the service layer imported {report['heavy']}"


def test_catalog_modules_stay_importable_without_torch():
    """Each module that registers catalog entries at import, on its own (a quick, gradio-free check)."""
    code = ("import sys\n"
            "import ldifs_engine.backbones, ldifs_engine.methods, ldifs_engine.spec, ldifs_engine.data\n"
            "import ldifs_engine.data.manifest, ldifs_engine.data.ingest, tasks.uploads, tasks.cli_datasets\n"
            "from ldifs_engine.data import DATASETS\n"
            "assert DATASETS.get('quadrant').classnames and DATASETS.get('imagenet').templates\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""


def test_listing_jobs_loads_only_the_job_store(tmp_path):
    """``ldifs jobs`` / ``status`` read the store and nothing else: no queue client (huey pulls in redis and
    psycopg), no UI, no numpy — what keeps them well under a second (bench figures in the README)."""
    code = ("import contextlib, io, sys\n"
            "import app.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert app.cli.main(['jobs', '--json', '--user', 'alice']) == 0\n"
            "    assert app.cli.main(['status', '0123456789abcdef', '--user', 'alice']) != 0\n"
            f"print(','.join(m for m in {HEAVY + ('numpy', 'huey', 'gradio', 'PIL')!r} if m in sys.modules))")
    env = {**os.environ, "LDIFS_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""
