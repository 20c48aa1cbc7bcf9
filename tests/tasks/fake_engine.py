"""A stand-in for ``python -m ldifs_engine run`` that follows the run-directory contract (§1) in
milliseconds and without torch: events, atomic checkpoints, results.json, STOP/SIGINT → exit 3,
``--resume`` from the newest complete checkpoint, and exit codes.

Its "training" is deterministic: ``state`` accumulates a value per step, so a run that is interrupted
and resumed ends with the same numbers as an uninterrupted one only if no step is lost or repeated.

Fault injection by environment variable (read by the test that sets it):
  FAKE_STEP_S=0.01          sleep per step
  FAKE_FAIL=code:step:kind:message   emit ``error`` and exit with code at that step (kind "" = no event,
                            a traceback on stderr instead)
  FAKE_OOM_AT=3,5           out-of-memory back-off at these steps (exit 6 once micro-batch 1 fails)
  FAKE_SELF_KILL_AT=4       SIGKILL itself at step 4 (first attempt only)
  FAKE_HANG_AT=4            stop emitting anything at step 4 (first attempt only)
  FAKE_IGNORE_STOP=1        ignore STOP and SIGINT (only SIGKILL ends it)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

STOP = {"requested": False}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["run"])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    spec = json.loads(Path(args.spec).read_text())
    optim = spec["optim"]
    total, every = int(optim.get("steps") or 10), int(optim.get("checkpoint_every") or 5)
    batch = int(optim.get("batch_size") or 8)
    micro = int(optim.get("micro_batch") or batch)
    step_s = float(os.environ.get("FAKE_STEP_S", "0.01"))
    ignore_stop = os.environ.get("FAKE_IGNORE_STOP") == "1"
    (workdir / "fake-env.json").write_text(json.dumps(
        {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "LDIFS_CACHE_DIR", "LDIFS_HOME", "LDIFS_DATASETS_DIR")}))
    first_attempt = not (workdir / ".fake-attempted").exists()
    (workdir / ".fake-attempted").touch()

    def on_sigint(signum, frame):
        if ignore_stop:
            return
        if STOP["requested"]:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        STOP["requested"] = True

    signal.signal(signal.SIGINT, on_sigint)
    events = open(workdir / "events.jsonl", "a", encoding="utf-8")

    def emit(type_: str, **fields) -> None:
        events.write(json.dumps({"t": round(time.time(), 3), "type": type_, **fields}) + "\n")
        events.flush()

    step, state = 0, 0.0
    resumed_from = None
    if args.resume:
        found = latest(workdir)
        if found is not None:
            saved = json.loads((found / "state.json").read_text())
            step, state, micro = saved["step"], saved["state"], saved["micro_batch"]
            resumed_from = step
    emit("start", total_steps=total, resumed_from=resumed_from, pid=os.getpid(), device="cpu")
    emit("phase", phase="load", message="fake backbone")
    fail = os.environ.get("FAKE_FAIL", "")
    fail_code, fail_step, fail_kind, fail_msg = (fail.split(":", 3) + ["", "", "", ""])[:4] if fail else (0, -1, "", "")
    oom_at = {int(x) for x in os.environ.get("FAKE_OOM_AT", "").split(",") if x}
    kill_at = int(os.environ.get("FAKE_SELF_KILL_AT", "-1")) if first_attempt else -1
    hang_at = int(os.environ.get("FAKE_HANG_AT", "-1")) if first_attempt else -1
    emit("phase", phase="train", message=f"{total} steps")
    last_ckpt = step if resumed_from is not None else None
    while step < total:
        if fail and int(fail_step) == step:
            if fail_kind:
                emit("error", kind=fail_kind, message=fail_msg)
            else:
                print("Traceback (most recent call last):\n  ...\nRuntimeError: " + fail_msg, file=sys.stderr)
            return int(fail_code)
        # As the real engine's StopFlag: the STOP file alone does not count as a first SIGINT, so the
        # worker's one SIGINT arriving after the file was seen is not taken as a second (abort).
        if STOP["requested"] or ((workdir / "STOP").exists() and not ignore_stop):
            if last_ckpt != step:
                save(workdir, step, state, micro)
                emit("checkpoint", step=step, path=f"checkpoints/step-{step:08d}")
            emit("stopped", step=step, checkpoint=f"checkpoints/step-{step:08d}")
            emit("error", kind="Cancelled", message=f"stopped at step {step} on request")  # as the engine does
            return 3
        if step == hang_at:
            while True:
                time.sleep(1)
        if step + 1 in oom_at:
            oom_at.discard(step + 1)
            if micro == 1:
                emit("error", kind="OutOfMemory", message="out of memory at micro-batch 1; use a smaller model")
                return 6
            micro //= 2
            emit("oom_backoff", step=step + 1, micro_batch=micro, accum=max(1, batch // micro),
                 message="CUDA out of memory (fake)")
        time.sleep(step_s)
        step += 1
        state += (step % 7) * 0.25 + step * 1e-3
        emit("step", step=step, total_steps=total, loss=1.0 / (1 + step), task_loss=1.0 / (1 + step),
             reg_loss=0.0, lr=1e-3, samples_per_s=batch / max(step_s, 1e-3), micro_batch=micro,
             accum=max(1, batch // micro))
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step % every == 0 or step == total:
            save(workdir, step, state, micro)
            last_ckpt = step
            emit("checkpoint", step=step, path=f"checkpoints/step-{step:08d}")
    results = {"schema": "ldifs.results/1", "spec": spec, "summary": {"target_gain": 0.5, "mean_delta_zs_controls": -0.02},
               "training": {"steps": total, "micro_batch": micro, "final_loss": 1.0 / (1 + total)},
               "fake_state": round(state, 9), "fake_nice": os.nice(0)}  # its CPU priority, once fully running
    if spec.get("budget"):  # a budget trial: forgetting falls with alpha on a known curve (5 points at alpha 70)
        alpha = float(spec["method"]["params"].get("alpha", 10.0))
        forgets, acc = 0.4 / (1 + alpha / 10), 1.0 - 0.3 * alpha / (alpha + 300)
        results.update(target="quadrant", target_head_acc={"before": 0.4, "after": acc},
                       datasets={"quadrant": {"role": "target", "title": "Quadrant", "n_test": 400}})
        results["summary"].update(mean_delta_zs_controls=-forgets,
                                  worst_control={"dataset": "shape", "delta_zs": -2 * forgets})
        results["training"]["stopped_early"] = None
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(results))
    os.replace(tmp, workdir / "results.json")
    emit("phase", phase="done", message="finished")
    emit("done", results="results.json")
    return 0


def latest(workdir: Path) -> Path | None:
    done = [d for d in (workdir / "checkpoints").glob("step-*") if (d / "COMPLETE").exists() and "tmp" not in d.name]
    return max(done, key=lambda d: int(d.name.split("-")[1]), default=None)


def save(workdir: Path, step: int, state: float, micro: int) -> None:
    final = workdir / "checkpoints" / f"step-{step:08d}"
    tmp = workdir / "checkpoints" / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "state.json").write_text(json.dumps({"step": step, "state": state, "micro_batch": micro}))
    (tmp / "COMPLETE").touch()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


if __name__ == "__main__":
    sys.exit(main())
