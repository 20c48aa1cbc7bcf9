"""The huey instance: SQLite by default, FIFO within a priority, signed messages, Redis by URL."""
from __future__ import annotations

import importlib.util

import pytest
from huey import SqliteHuey

from tasks import queue
from tasks.settings import get_settings, load_settings


def test_default_is_sqlite_under_home_fifo_with_priorities(home):
    huey = queue.get_huey()
    assert isinstance(huey, SqliteHuey) and huey.storage.filename == str(get_settings().queue_path)
    ids = {name: queue.enqueue_run_job("alice", name * 32, 0, priority=p)
           for name, p in [("a", 0), ("b", 5), ("c", 0), ("d", 5)]}
    order = []
    while (task := huey.dequeue()) is not None:
        order.append(task.args[1][0])
    assert order == ["b", "d", "a", "c"]  # higher priority first, then first come first served
    assert len(set(ids.values())) == 4


def test_revoked_message_does_not_run(manual):
    task_id = queue.enqueue_run_job("alice", "a" * 32, 0)
    queue.revoke(task_id)
    assert manual.is_revoked(manual.pending()[0])


def test_messages_can_be_signed(home, monkeypatch):
    from huey.serializer import SignedSerializer

    monkeypatch.setenv("LDIFS_QUEUE_SECRET", "s3cret")
    get_settings.cache_clear()
    huey = queue.make_huey(get_settings())
    assert isinstance(huey.serializer, SignedSerializer)
    data = huey.serializer.serialize(("alice", "x"))
    with pytest.raises(ValueError, match="mismatch"):
        huey.serializer.deserialize(data[:-1] + bytes([data[-1] ^ 1]))  # tampered


def test_redis_url_selects_a_priority_redis_huey(tmp_path):
    s = load_settings({"LDIFS_HOME": str(tmp_path), "LDIFS_QUEUE_URL": "redis://localhost:6399/0",
                       "LDIFS_QUEUE_SECRET": "x" * 32})
    if importlib.util.find_spec("redis") is None:
        from ldifs_engine.errors import SpecError

        with pytest.raises(SpecError, match="redis"):
            queue.make_huey(s)
    else:
        from huey import PriorityRedisHuey

        assert isinstance(queue.make_huey(s), PriorityRedisHuey)


def test_a_bad_queue_url_is_rejected(tmp_path):
    from ldifs_engine.errors import SpecError

    with pytest.raises(SpecError, match="LDIFS_QUEUE_URL"):
        load_settings({"LDIFS_HOME": str(tmp_path), "LDIFS_QUEUE_URL": "amqp://x"})


@pytest.mark.parametrize("secret", [None, "", "short"])
def test_a_redis_queue_without_a_real_secret_is_refused(tmp_path, secret):
    from ldifs_engine.errors import SpecError

    env = {"LDIFS_HOME": str(tmp_path), "LDIFS_QUEUE_URL": "redis://:pw@localhost:6399/0"}
    if secret is not None:
        env["LDIFS_QUEUE_SECRET"] = secret
    with pytest.raises(SpecError, match="LDIFS_QUEUE_SECRET: a Redis queue needs a secret of at least 16"):
        load_settings(env)


def test_the_redis_password_stays_out_of_settings_repr(tmp_path):
    s = load_settings({"LDIFS_HOME": str(tmp_path), "LDIFS_QUEUE_URL": "redis://:hunter2hunter2@q:6379/0",
                       "LDIFS_QUEUE_SECRET": "s" * 32, "LDIFS_DB_URL": "postgresql://u:pgpass@db/ldifs"})
    assert "hunter2" not in repr(s) and "pgpass" not in repr(s) and "sss" not in repr(s)
