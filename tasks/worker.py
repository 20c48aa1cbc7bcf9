"""Running the job consumer: ``ldifs worker`` (a process of its own) or embedded in the web app.

Thread workers, one per GPU slot, each supervising an engine child process; the consumer itself
never touches CUDA. At start the reaper recovers jobs whose worker died and re-enqueues lost queue
messages; it then runs every ``reaper_interval_s``.

Stopping: SIGINT (Ctrl-C, ``KillSignal=SIGINT``) is graceful — every running engine is asked to save a
checkpoint and exit, its job becomes INTERRUPTED and is re-queued, then the process exits. SIGTERM does
the same but SIGKILLs engines that have not exited after ``kill_grace_s``. A second SIGINT leaves at
once; the reaper of the next worker then stops the orphaned engines and resumes their jobs.
"""
from __future__ import annotations

import logging
import sys
import threading
import time

from huey.consumer import Consumer, ConsumerStopped

from . import budget, jobs, queue, reaper, servers  # budget: drives forgetting-budget searches as jobs end
from .db import redact
from .settings import Settings, get_settings
from .store import open_store

log = logging.getLogger("ldifs.worker")


class JobConsumer(Consumer):
    """A huey consumer whose stop first asks running engines to checkpoint, and whose workers wait out an
    unreachable queue (``servers.consumer_classes``)."""

    def __init__(self, huey, *, settings: Settings | None = None, **options):
        self.worker_class, self.scheduler_class = servers.consumer_classes(settings or get_settings())
        super().__init__(huey, **options)

    def stop(self, graceful: bool = False) -> None:
        jobs.begin_shutdown(fast=not graceful)
        # Always wait for the workers: they return once their engines have checkpointed (or were killed).
        super().stop(graceful=True)


def _consumer(settings: Settings, workers: int | None) -> JobConsumer:
    huey = queue.get_huey()
    queue.register_tasks(huey)
    if huey.immediate:
        raise RuntimeError("the job queue is in immediate mode; a consumer cannot run")
    return JobConsumer(
        huey, workers=workers or settings.workers, worker_type="thread", periodic=False,
        initial_delay=min(0.1, settings.queue_poll_max_s), backoff=1.5, max_delay=settings.queue_poll_max_s,
        flush_locks=True, settings=settings)


def _recover_at_start(settings: Settings) -> None:
    recovered = reaper.reap_once(settings)
    if recovered:
        log.warning("recovered %d job(s) whose worker had died: %s", len(recovered), ", ".join(recovered))
    reaper.recover_queue(settings)
    budget.advance_all(settings, open_store(settings))  # a search whose worker died between two trials goes on


def run_consumer(workers: int | None = None, *, settings: Settings | None = None) -> None:
    """Run the consumer in this (main) thread until SIGINT / SIGTERM."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jobs.reset_shutdown()
    try:  # an unreachable database or queue: one line per retry, not a crash
        servers.wait_for_servers(settings, queue.get_huey())
    except KeyboardInterrupt:
        log.info("worker: stopped while waiting for the servers")
        return
    servers.check_runs_volume(settings)  # refuses to start (one line) unless the shared runs folder is visible
    consumer = _consumer(settings, workers)
    log.info("worker: %d slot(s), GPUs %s, queue %s", consumer.workers, ", ".join(settings.gpu_ids) or "auto",
             redact(settings.queue_url) if settings.queue_url else settings.queue_path)
    from .api import startup_warnings

    for line in startup_warnings():  # a CPU-only torch on a GPU box, bad operator backbones: one line each
        log.warning("%s", line)
    _recover_at_start(settings)
    periodic = reaper.Reaper(settings).start()
    try:
        consumer.run()  # the process's entry point: huey's SIGINT / SIGTERM handlers are installed here
    finally:
        periodic.stop()


class EmbeddedConsumer:
    """A consumer running in a background thread of another program (the web app)."""

    def __init__(self, consumer: JobConsumer, settings: Settings):
        self.consumer, self.settings = consumer, settings
        self._reaper = reaper.Reaper(settings)
        self._thread = threading.Thread(target=self._run, name="ldifs-consumer", daemon=True)

    def _run(self) -> None:
        try:
            if not servers.wait_for_servers(self.settings, self.consumer.huey, self.consumer.stop_flag):
                return
            _recover_at_start(self.settings)
            self._reaper.start()
            self._serve()
        except Exception:
            log.exception("embedded job consumer stopped with an error")

    def _serve(self) -> None:
        """``Consumer.run()`` without its signal handlers: the host program's process owns its signals
        (and only the main thread could install any). Returns once the consumer is stopped."""
        c = self.consumer
        c.scheduler.start()
        for _, worker in c.worker_threads:
            worker.start()
        health_check_ts = time.monotonic()
        while True:
            try:
                health_check_ts = c.loop(health_check_ts)
            except ConsumerStopped:
                return

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Checkpoint running jobs (they resume when a worker next runs) and stop."""
        self._reaper.stop()
        self.consumer.stop(graceful=graceful)
        self._thread.join(timeout)


def start_embedded_consumer(workers: int | None = None, *, settings: Settings | None = None) -> EmbeddedConsumer:
    """Start a consumer in a daemon thread (no signal handlers); call ``.stop()`` when the app exits."""
    settings = settings or get_settings()
    open_store(settings)  # a damaged job store stops the start with its one line, not the thread silently
    jobs.reset_shutdown()
    handle = EmbeddedConsumer(_consumer(settings, workers), settings)
    handle._thread.start()
    return handle


if __name__ == "__main__":  # python -m tasks.worker [workers]
    run_consumer(int(sys.argv[1]) if len(sys.argv) > 1 else None)
