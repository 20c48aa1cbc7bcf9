"""Reading events.jsonl while it is written, and folding it into progress."""
from __future__ import annotations

import json

from tasks.events import Progress, event_log, format_event, read_new


def test_a_torn_last_line_is_left_for_the_next_read(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"t": 1, "type": "step", "step": 1}\nnot json\n{"t": 2, "type": "st')
    events, offset = read_new(p)
    assert [e["step"] for e in events] == [1]
    with open(p, "ab") as f:
        f.write(b'ep", "step": 2}\n')
    events, offset = read_new(p, offset)
    assert [e["step"] for e in events] == [2] and offset == p.stat().st_size
    assert read_new(p, offset) == ([], offset)
    assert read_new(tmp_path / "missing.jsonl", 0) == ([], 0)


def test_final_read_takes_a_complete_last_line_without_newline(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"t": 1, "type": "done"}')
    assert read_new(p)[0] == []
    assert [e["type"] for e in read_new(p, final=True)[0]] == ["done"]


def test_event_log_reads_incrementally(tmp_path):
    log = event_log(tmp_path)
    assert log.events() == []
    (tmp_path / "events.jsonl").write_text(json.dumps({"t": 1, "type": "start"}) + "\n")
    assert len(log.events()) == 1
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write(json.dumps({"t": 2, "type": "done"}) + "\n")
    assert [e["type"] for e in event_log(tmp_path).events()] == ["start", "done"]


def test_progress_folds_steps_checkpoints_backoffs_and_eta():
    p = Progress(tail_lines=3)
    p.apply([
        {"t": 100.0, "type": "start", "total_steps": 10},
        {"t": 100.0, "type": "step", "step": 1, "total_steps": 10, "samples_per_s": 50.0},
        {"t": 102.0, "type": "step", "step": 3, "total_steps": 10, "samples_per_s": 60.0},
        {"t": 102.0, "type": "checkpoint", "step": 3, "path": "checkpoints/step-00000003"},
        {"t": 102.5, "type": "oom_backoff", "step": 4, "micro_batch": 32, "accum": 2, "message": "OOM"},
        {"t": 102.6, "type": "log", "level": "warning", "message": "hello"},
    ])
    f = p.fields()
    assert (f["step"], f["total_steps"], f["samples_per_s"], f["checkpoint_step"]) == (3, 10, 60.0, 3)
    assert f["eta_s"] == 7.0  # 1 step/s, 7 to go
    assert f["backoffs"] == [{"t": 102.5, "step": 4, "micro_batch": 32, "accum": 2, "message": "OOM"}]
    assert len(f["log_tail"]) == 3 and f["log_tail"][-1].endswith("warning: hello")


def test_a_requested_stop_is_not_an_error():
    p = Progress()
    p.apply([{"t": 1, "type": "stopped", "step": 4, "checkpoint": "checkpoints/step-00000004"},
             {"t": 1, "type": "error", "kind": "Cancelled", "message": "stopped at step 4 on request"}])
    assert p.error is None and p.stopped and p.checkpoint_step == 4
    p.apply([{"t": 2, "type": "error", "kind": "Diverged", "message": "NaN"}])
    assert p.error["kind"] == "Diverged"


def test_format_event():
    assert format_event({"t": 0, "type": "step", "step": 1}) is None
    assert "error (Diverged): NaN" in format_event({"t": 0, "type": "error", "kind": "Diverged", "message": "NaN"})
    assert "resuming from step 50" in format_event({"t": 0, "type": "start", "resumed_from": 50, "total_steps": 9})
