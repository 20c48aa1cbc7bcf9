"""The worker embedded in another program leaves that program's signal handlers alone."""
from __future__ import annotations

import signal

from tasks import api, queue
from tasks.store import DONE

from .conftest import spec, wait_for


def test_embedded_consumer_installs_no_signal_handlers(home):
    from tasks.worker import start_embedded_consumer

    queue.set_huey(None)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    handle = start_embedded_consumer()  # from the main thread, where it could install them
    try:
        job_id = api.submit("alice", spec(steps=2))
        wait_for(lambda: api.get_job("alice", job_id).state == DONE, timeout=20)
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        handle.stop()
    assert not handle.running
