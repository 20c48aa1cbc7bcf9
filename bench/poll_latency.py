"""Benchmark: how fast job status answers while a job trains.

    python bench/poll_latency.py                      # real tiny engine training, 4 pollers, 60 s
    python bench/poll_latency.py --engine fake        # the tests' stand-in engine (no CPU load)
    python bench/poll_latency.py --via gradio         # the same questions through Gradio's event API

Starts the real app (``ldifs app``, its own process, password sign-in, embedded worker with one slot)
on a fresh ``LDIFS_HOME`` holding 41 jobs of one user: the first trains, 40 wait in the queue. Once the
engine reports training steps, ``--pollers`` threads, each signed in with its own session, alternate
``GET /api/jobs`` and ``GET /api/status/<the training job>`` back to back (``--interval`` adds a pause)
for ``--duration`` seconds. Prints per route: requests, errors, p50 / p95 / p99 / max latency in ms,
and how many training steps the engine made meanwhile (proof that it trained). Targets (issue 13) on a
2-core machine: /status p95 <= 100 ms, /jobs p95 <= 150 ms. Last line is machine-readable.

``--via gradio`` asks ``/gradio_api/call/jobs`` and ``/gradio_api/call/status`` instead (submit, then read
the event stream: what a gradio_client script pays), for comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAKE_ENGINE = ROOT / "tests" / "tasks" / "fake_engine.py"
USER = "bench"


def training_spec(steps: int) -> dict:
    """The quick demo on the built-in model, long enough to train through the whole measurement."""
    return {"name": "bench: training", "backbone": "concept-clip-tiny", "seed": 0,
            "data": {"target": "quadrant", "controls": ["shape", "colour"], "max_eval_samples": 200},
            "method": {"name": "ldifs", "head_init": "zs", "params": {"alpha": 10.0}},
            "optim": {"steps": steps, "batch_size": 32, "checkpoint_every": steps, "warmup_steps": 1},
            "eval": {"linear_probe": False, "curve_points": 0}}


def queued_spec(i: int) -> dict:
    spec = training_spec(200)
    spec.update(name=f"bench: waiting {i}", seed=i)
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(q / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def _peak_rss_mb(pid: int) -> str:
    """Peak resident memory of a process (Linux ``VmHWM``), or "?" elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return str(int(line.split()[1]) // 1024)
    except OSError:
        pass
    return "?"


def wait_for(pred, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"bench: gave up waiting for {what} after {timeout:.0f} s")


class Poller(threading.Thread):
    def __init__(self, url: str, password: str, job_id: str, deadline: float, interval: float, via: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, timeout=30)
        r = self.client.post("/login", data={"username": USER, "password": password})
        r.raise_for_status()
        self.job_id, self.deadline, self.interval, self.via = job_id, deadline, interval, via
        self.ms: dict[str, list[float]] = {"jobs": [], "status": []}
        self.errors: dict[str, int] = {"jobs": 0, "status": 0}

    def _json(self, route: str) -> bool:
        r = (self.client.get("/api/jobs") if route == "jobs" else self.client.get(f"/api/status/{self.job_id}"))
        return r.status_code == 200 and bool(r.json())

    def _gradio(self, route: str) -> bool:
        data = [""] if route == "jobs" else [self.job_id]
        r = self.client.post(f"/gradio_api/call/{route}", json={"data": data})
        if r.status_code != 200:
            return False
        r = self.client.get(f"/gradio_api/call/{route}/{r.json()['event_id']}")
        return r.status_code == 200 and "event: complete" in r.text

    def run(self) -> None:
        ask = self._json if self.via == "json" else self._gradio
        route = "jobs"
        while time.monotonic() < self.deadline:
            t0 = time.perf_counter()
            try:
                ok = ask(route)
            except httpx.HTTPError:
                ok = False
            elapsed = (time.perf_counter() - t0) * 1000
            if ok:
                self.ms[route].append(elapsed)
            else:
                self.errors[route] += 1
            route = "status" if route == "jobs" else "jobs"
            if self.interval:
                time.sleep(self.interval)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["real", "fake"], default="real",
                    help="real: the tiny CLIP trains on CPU (default); fake: the tests' stand-in engine")
    ap.add_argument("--via", choices=["json", "gradio"], default="json", help="which API the pollers use")
    ap.add_argument("--pollers", type=int, default=4)
    ap.add_argument("--queued", type=int, default=40, help="jobs waiting behind the training one")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of polling")
    ap.add_argument("--interval", type=float, default=0.0, help="pause between one poller's requests (s)")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ldifs-bench-"))
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "LDIFS_HOME": str(home), "LDIFS_AUTH": f"{USER}:{password}", "LDIFS_WORKERS": "1",
           "LDIFS_MAX_QUEUED_PER_USER": str(args.queued + 10), "LDIFS_MAX_RUNNING_PER_USER": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "LDIFS_POLL_S": "0.5", "LDIFS_KILL_GRACE_S": "2",
           "LDIFS_STOP_TIMEOUT_S": "20"}
    for k in ("LDIFS_QUEUE_URL", "LDIFS_AUTH_FILE", "LDIFS_ENGINE_CMD", "LDIFS_GPU_IDS"):
        env.pop(k, None)
    if args.engine == "fake":
        env.update(LDIFS_ENGINE_CMD=f"{sys.executable} {FAKE_ENGINE}", FAKE_STEP_S="0.05")
    os.environ.clear()
    os.environ.update(env)  # tasks.api below writes into the same LDIFS_HOME the app serves
    sys.path.insert(0, str(ROOT))
    from tasks import api
    from tasks.settings import get_settings
    from tasks.store import open_store

    steps = 1_000_000
    train_id = api.submit(USER, training_spec(steps), priority=10)
    api.submit_many(USER, [queued_spec(i) for i in range(args.queued)])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t_start = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "app", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(home / "app.log", "wb"), start_new_session=True)
    try:
        def up() -> bool:
            if server.poll() is not None:
                raise SystemExit(f"bench: the app exited ({server.returncode}); see {home / 'app.log'}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/api/jobs", timeout=5).status_code == 401
            return False

        wait_for(up, args.startup_timeout, "the app to answer")
        print(f"app up after {time.monotonic() - t_start:.1f} s", flush=True)
        wait_for(lambda: api.get_job(USER, train_id).step > 0, args.startup_timeout, "the first training step")
        print(f"training after {time.monotonic() - t_start:.1f} s", flush=True)
        step0 = api.get_job(USER, train_id).step
        load0 = os.getloadavg()[0]

        deadline = time.monotonic() + args.duration
        pollers = [Poller(url, password, train_id, deadline, args.interval, args.via) for _ in range(args.pollers)]
        for p in pollers:
            p.start()
        for p in pollers:
            p.join()
        view = api.get_job(USER, train_id)
        load1 = os.getloadavg()[0]
        web_rss = _peak_rss_mb(server.pid)
        waiting = sum(1 for j in api.list_jobs(USER, limit=1000) if j.state == "QUEUED")
    finally:
        with contextlib.suppress(Exception):
            api.cancel(USER, train_id, mode="kill")
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        with contextlib.suppress(Exception):  # an engine the worker could not stop in time
            rec = open_store(get_settings()).record(USER, train_id)
            if rec.get("pgid"):
                os.killpg(rec["pgid"], signal.SIGKILL)

    print(f"engine={args.engine} via={args.via} pollers={args.pollers} duration={args.duration:.0f}s "
          f"interval={args.interval}s cpus={os.cpu_count()} load(1m) {load0:.1f} -> {load1:.1f}")
    print(f"training job: {view.state}, {view.step - step0} steps during the measurement; {waiting} jobs queued; "
          f"web process peak RSS {web_rss} MB (the engine is a child of its own)")
    summary = []
    for route in ("jobs", "status"):
        ms = sorted(m for p in pollers for m in p.ms[route])
        errors = sum(p.errors[route] for p in pollers)
        p50, p95, p99 = (percentile(ms, q) for q in (50, 95, 99))
        print(f"/{route:<7} n={len(ms):<6} errors={errors:<3} p50={p50:7.1f} ms  p95={p95:7.1f} ms  "
              f"p99={p99:7.1f} ms  max={(ms[-1] if ms else float('nan')):7.1f} ms  {len(ms) / args.duration:6.1f} req/s")
        summary.append(f"{route}_p50={p50:.1f} {route}_p95={p95:.1f} {route}_p99={p99:.1f} {route}_errors={errors}")
    print(" ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
