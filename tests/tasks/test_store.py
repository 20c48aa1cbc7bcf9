"""The job store's state machine, owner scoping and quotas (no engine, no queue), on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
import uuid

import pytest

from tasks.store import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    InvalidState,
    JobNotFound,
    JobStore,
    QuotaExceeded,
)


@pytest.fixture
def make_store(tmp_path, db_url):
    """Open the test's store (again): each call is a separate connection pool, like another process."""
    opened = []

    def make() -> JobStore:
        s = JobStore(tmp_path / "jobs.sqlite3", db_url=db_url)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def new_job(store, owner="alice", max_queued=100, **kw):
    job_id = uuid.uuid4().hex
    row = {"id": job_id, "spec": {"optim": {"steps": 3}}, "spec_hash": "h" * 64, "title": "t", "method": "ce",
           "target": "quadrant", "run_dir": f"/nonexistent/{job_id}", **kw}
    return store.create(owner, [row], max_queued=max_queued)[0]


def claim(store, view, owner="alice", attempts=0, max_running=10):
    return store.claim(owner, view.id, attempts, max_running=max_running, host="h", worker_pid=1)


def test_new_job_is_queued_with_a_snapshot(store):
    v = new_job(store)
    assert (v.state, v.attempts, v.step, v.backoffs) == (QUEUED, 0, 0, [])
    assert v.spec == {"optim": {"steps": 3}} and v.created_at > 0 and v.started_at is None
    assert v.to_dict()["resumable"] is False


def test_other_users_job_is_not_found_like_a_missing_one(store):
    v = new_job(store, owner="alice")
    for owner, job_id in [("bob", v.id), ("alice", uuid.uuid4().hex), ("alice", "../../etc/passwd"), ("alice", None)]:
        with pytest.raises(JobNotFound):
            store.get(owner, job_id)
    with pytest.raises(JobNotFound):
        store.request_cancel("bob", v.id)
    with pytest.raises(JobNotFound):
        store.requeue("bob", v.id, max_queued=10, has_checkpoint=True)
    assert store.list("bob") == []
    assert store.get("alice", v.id).state == QUEUED  # bob's attempts changed nothing


def test_claim_is_compare_and_set_on_state_and_attempt(store):
    v = new_job(store)
    assert claim(store, v) == "claimed"
    assert claim(store, v) == "lost"  # duplicate message
    r = store.get("alice", v.id)
    assert (r.state, r.attempts) == (RUNNING, 1)
    assert store.claim("bob", v.id, 0, max_running=10, host="h", worker_pid=1) == "lost"


def test_concurrent_claims_have_one_winner(store):
    v = new_job(store)
    results = []
    threads = [threading.Thread(target=lambda: results.append(claim(store, v))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["claimed"] + ["lost"] * 7


def test_progress_and_finish_only_apply_to_the_current_attempt(store):
    v = new_job(store)
    claim(store, v)
    assert store.progress("alice", v.id, 1, step=2, total_steps=3, backoffs=[{"micro_batch": 32}])
    assert not store.progress("alice", v.id, 7, step=99)  # a stale attempt
    with pytest.raises(ValueError):
        store.progress("alice", v.id, 1, state=DONE)  # transitions are not progress
    assert not store.finish("alice", v.id, 2, DONE, message="x")
    # the worker passes every progress field it knows; finish's own columns (eta, phase) win
    assert store.finish("alice", v.id, 1, DONE, message="ok", result_path="/r.json", eta_s=3.0, phase="train")
    r = store.get("alice", v.id)
    assert (r.state, r.step, r.backoffs, r.message, r.result_path) == (DONE, 2, [{"micro_batch": 32}], "ok", "/r.json")
    assert (r.eta_s, r.phase) == (None, "done")
    assert r.finished_at is not None
    assert not store.finish("alice", v.id, 1, FAILED, message="late")  # DONE is final
    with pytest.raises(ValueError):
        store.finish("alice", v.id, 1, QUEUED, message="no")


def test_crashes_are_retried_up_to_max_attempts_then_failed(store):
    v = new_job(store)
    outcomes = []
    for attempt in range(3):
        assert claim(store, v, attempts=attempt) == "claimed"
        outcomes.append(store.interrupt("alice", v.id, attempt + 1, message="killed.", crashed=True, max_attempts=3,
                                        eta_s=5.0, phase="train", step=attempt))
    assert outcomes == ["requeue", "requeue", "failed"]
    r = store.get("alice", v.id)
    assert r.state == FAILED and "Gave up after 3" in r.message
    assert (r.eta_s, r.phase, r.step) == (None, None, 2)


def test_clean_shutdowns_do_not_use_up_attempts(store):
    v = new_job(store)
    for attempt in range(5):
        claim(store, v, attempts=attempt)
        assert store.interrupt("alice", v.id, attempt + 1, message="shutdown", crashed=False,
                               max_attempts=2) == "requeue"
    assert store.get("alice", v.id).state == INTERRUPTED


def test_cancel_queued_is_immediate_and_running_sets_a_flag(store):
    q = new_job(store)
    view, was_waiting = store.request_cancel("alice", q.id)
    assert was_waiting and view.state == CANCELLED
    assert claim(store, q) == "lost"  # a revoke that raced still cannot start it

    r = new_job(store)
    claim(store, r)
    view, was_waiting = store.request_cancel("alice", r.id, "stop")
    assert not was_waiting and view.state == RUNNING and view.cancel_requested == "stop"
    store.request_cancel("alice", r.id, "kill")
    store.request_cancel("alice", r.id, "stop")
    assert store.cancel_mode("alice", r.id) == "kill"  # never softened
    assert store.interrupt("alice", r.id, 1, message="x", crashed=True, max_attempts=3) == "cancelled"
    with pytest.raises(InvalidState):
        store.request_cancel("alice", r.id)
    with pytest.raises(InvalidState):
        store.request_cancel("alice", new_job(store).id, "nuke")


def test_requeue_rules(store):
    done = new_job(store)
    claim(store, done)
    store.finish("alice", done.id, 1, DONE, message="ok")
    with pytest.raises(InvalidState):
        store.requeue("alice", done.id, max_queued=10, has_checkpoint=True)

    failed = new_job(store)
    claim(store, failed)
    store.finish("alice", failed.id, 1, FAILED, message="boom")
    with pytest.raises(InvalidState, match="checkpoint"):
        store.requeue("alice", failed.id, max_queued=10, has_checkpoint=False)
    v = store.requeue("alice", failed.id, max_queued=10, has_checkpoint=True)
    assert (v.state, v.attempts, v.finished_at) == (QUEUED, 1, None)
    assert claim(store, v, attempts=1) == "claimed"

    cancelled = new_job(store)
    store.request_cancel("alice", cancelled.id)
    assert store.requeue("alice", cancelled.id, max_queued=10, has_checkpoint=False).state == QUEUED


def test_queue_quota(store):
    for _ in range(2):
        new_job(store, max_queued=2)
    with pytest.raises(QuotaExceeded, match="at most 2"):
        new_job(store, max_queued=2)
    new_job(store, owner="bob", max_queued=2)  # per user
    assert len(store.list("alice")) == 2


def test_parallel_creates_cannot_overshoot_the_quota(make_store):
    make_store()
    ok, refused = [], []

    def submit():
        s = make_store()  # its own connection, like another process
        try:
            ok.append(new_job(s, max_queued=5))
        except QuotaExceeded:
            refused.append(1)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 5 and len(refused) == 7
    assert len(make_store().list("alice")) == 5


def test_running_quota_is_checked_at_claim(store):
    a, b = new_job(store), new_job(store)
    assert claim(store, a, max_running=1) == "claimed"
    assert claim(store, b, max_running=1) == "quota"
    assert store.get("alice", b.id).state == QUEUED


def test_list_newest_first_with_state_filter_and_limit(store):
    ids = [new_job(store).id for _ in range(3)]
    store.request_cancel("alice", ids[0])
    assert [v.id for v in store.list("alice")] == ids[::-1]
    assert [v.id for v in store.list("alice", states=["cancelled"])] == [ids[0]]
    assert len(store.list("alice", limit=1)) == 1
    with pytest.raises(InvalidState):
        store.list("alice", states=["sleeping"])


def test_the_database_uses_wal(store):
    if store.backend != "sqlite":
        pytest.skip("SQLite only")
    assert store._con().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rollback_journal_for_shared_filesystems(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3", journal_mode="delete")
    assert s._con().execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with pytest.raises(ValueError):
        JobStore(tmp_path / "other.sqlite3", journal_mode="memory")


def test_parallel_claims_cannot_overshoot_the_running_quota(make_store):
    first = make_store()
    views = [new_job(first) for _ in range(6)]
    results = []

    def claim_one(v):
        results.append(claim(make_store(), v, max_running=2))

    threads = [threading.Thread(target=claim_one, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["claimed"] * 2 + ["quota"] * 4
    assert len(first.list("alice", states=[RUNNING])) == 2


def test_migrations_are_applied_once_and_recorded(make_store):
    from tasks.store import MIGRATIONS

    a = make_store()
    new_job(a)
    b = make_store()  # a second start finds the schema current and keeps the data
    versions = [r[0] for r in b._con().execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == sorted(v for v, _, _ in MIGRATIONS)
    assert len(b.list("alice")) == 1


def test_each_migration_has_its_own_number(tmp_path):
    from tasks.db import SqliteDatabase
    from tasks.store import MIGRATIONS

    versions = [v for v, _, _ in MIGRATIONS]
    assert len(set(versions)) == len(versions)
    twice = [(1, "a", "CREATE TABLE a (x TEXT)"), (1, "b", "CREATE TABLE b (x TEXT)")]
    with pytest.raises(ValueError, match=r"\[1\] used twice"):
        SqliteDatabase(tmp_path / "x.sqlite3").migrate(twice)


def test_a_store_newer_than_the_code_is_refused(make_store):
    from ldifs_engine.errors import LdifsError

    a = make_store()
    a._con().execute("INSERT INTO schema_version (version) VALUES (?)", (10_000,))
    with pytest.raises(LdifsError, match="schema version 10000, newer"):
        make_store()


def test_an_unreachable_database_server_is_one_line_without_the_password(tmp_path):
    from tests.servers import free_port

    from tasks.store import StoreUnavailable

    url = f"postgresql://ldifs:s3cret@127.0.0.1:{free_port()}/ldifs"  # nothing listens there
    with pytest.raises(StoreUnavailable) as e:
        JobStore(db_url=url)
    msg = str(e.value)
    assert "\n" not in msg and "s3cret" not in msg
    assert msg.startswith("cannot reach the job store (PostgreSQL at 127.0.0.1:") and "refused" in msg.lower()
