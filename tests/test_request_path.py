"""What every request pays before chatsite's own work: its thread crossings and its database
connection.

The SQLite backend (``chatsite.db.sqlite3``) keeps closed connections open for the next thread;
these tests prove that it hands one on only when that is safe. The served application
(``chatsite.asgi``) runs each request's middleware and view in one step on the request's thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection, connections, transaction

from chatsite.db.sqlite3.base import DatabaseWrapper, close_idle


@pytest.fixture
def database(tmp_path, django_db_blocker):
    """A pooled SQLite database of its own (whatever engine the suite runs on), keeping two.
    Not the suite's test database: pytest-django's guard is lifted for it alone."""
    with django_db_blocker.unblock():
        yield from _database(tmp_path)


def _database(tmp_path):
    settings = {**connection.settings_dict, "ENGINE": "chatsite.db.sqlite3",
                "NAME": str(tmp_path / "pooled.sqlite3"), "OPTIONS": {
                    "pool": 2, "timeout": 1, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}
    made = []

    def wrapper(**options) -> DatabaseWrapper:
        made.append(DatabaseWrapper(
            {**settings, "OPTIONS": {**settings["OPTIONS"], **options}},
            alias=f"pooled-{len(made)}"))
        return made[-1]

    first = wrapper()
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE note (text TEXT)")
    first.close()
    yield wrapper
    for each in made:
        each.close()
    close_idle()


def in_thread(function):
    """Run ``function`` on a thread of its own, as each request and generation does."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


@contextmanager
def atomic_on(wrapper: DatabaseWrapper):
    """``transaction.atomic`` on a wrapper that is not one of the settings' databases."""
    connections[wrapper.alias] = wrapper
    try:
        with transaction.atomic(using=wrapper.alias):
            yield
    finally:
        del connections[wrapper.alias]


def raw(wrapper: DatabaseWrapper):
    wrapper.ensure_connection()
    return wrapper.connection


def test_a_closed_sqlite_connection_is_handed_to_the_next_thread_instead_of_a_new_one(database):
    first = database()
    opened = in_thread(lambda: raw(first))
    first.close()

    second = database()
    assert in_thread(lambda: raw(second)) is opened
    with second.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM note")
        assert cursor.fetchone() == (0,)


def test_a_connection_closed_inside_its_transaction_is_rolled_back_before_it_is_handed_on(
        database):
    first = database()
    opened = raw(first)
    opened.execute("BEGIN")
    opened.execute("INSERT INTO note VALUES ('never committed')")
    first.close()

    second = database()
    assert raw(second) is opened
    assert not opened.in_transaction
    with second.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM note")
        assert cursor.fetchone() == (0,)
    # and it is back in autocommit: a write is kept without a commit of its own
    with second.cursor() as cursor:
        cursor.execute("INSERT INTO note VALUES ('kept')")
    second.close()
    third = database()
    with third.cursor() as cursor:
        cursor.execute("SELECT text FROM note")
        assert cursor.fetchall() == [("kept",)]


def test_a_connection_closed_inside_an_atomic_block_is_closed_for_good(database):
    first = database()
    with atomic_on(first):
        opened = raw(first)
        first.close()

    second = database()
    assert raw(second) is not opened


def test_no_more_connections_are_kept_than_the_pool_allows(database):
    wrappers = [database() for _ in range(4)]
    opened = [raw(wrapper) for wrapper in wrappers]
    for wrapper in wrappers:
        wrapper.close()

    again = [raw(database()) for _ in range(4)]
    reused = [each for each in again if any(each is old for old in opened)]
    assert len(reused) == 2


def test_a_database_file_made_anew_under_the_same_name_gets_new_connections(database, tmp_path):
    first = database()
    opened = raw(first)
    first.close()
    (tmp_path / "pooled.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"pooled.sqlite3{suffix}").unlink(missing_ok=True)
    made_anew = sqlite3.connect(tmp_path / "pooled.sqlite3")
    made_anew.execute("CREATE TABLE other (text TEXT)")
    made_anew.close()

    second = database()
    assert raw(second) is not opened
    with second.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert cursor.fetchall() == [("other",)]  # the new file, not the old one's table


def test_a_query_left_half_read_does_not_hold_its_snapshot_for_the_next_thread(
        database, tmp_path):
    """A download the client left, say: its query read halfway would keep an old snapshot of
    the database, and the next thread could neither see new rows nor write."""
    first = database()
    with first.cursor() as cursor:
        cursor.executemany("INSERT INTO note VALUES (%s)", [("one",), ("two",), ("three",)])
    reading = first.cursor()
    reading.execute("SELECT text FROM note")
    reading.fetchone()
    opened = first.connection
    first.close()

    writer = sqlite3.connect(tmp_path / "pooled.sqlite3")
    writer.execute("INSERT INTO note VALUES ('four')")
    writer.commit()
    writer.close()

    second = database()
    assert raw(second) is opened
    with second.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM note")
        assert cursor.fetchone() == (4,)
    with atomic_on(second):
        with second.cursor() as cursor:
            cursor.execute("INSERT INTO note VALUES ('five')")


def test_a_connection_handed_on_checks_foreign_keys_again(database):
    first = database()
    opened = raw(first)
    first.disable_constraint_checking()  # as a migration does, and may not undo if it fails
    first.close()

    second = database()
    assert raw(second) is opened
    with second.cursor() as cursor:
        cursor.execute("PRAGMA foreign_keys")
        assert cursor.fetchone() == (1,)


def test_a_connection_that_saw_a_database_error_is_closed_for_good(database):
    first = database()
    opened = raw(first)
    with pytest.raises(DatabaseError):
        with first.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
    first.close()

    assert raw(database()) is not opened


def test_connections_opened_with_other_settings_are_not_handed_on(database):
    first = database(timeout=2)
    opened = raw(first)
    first.close()

    assert raw(database()) is not opened


def test_destroying_a_test_database_closes_its_idle_connections_and_leaves_no_files(
        database, tmp_path):
    first = database()
    with first.cursor() as cursor:
        cursor.execute("INSERT INTO note VALUES ('one')")
    first.close()
    assert (tmp_path / "pooled.sqlite3-wal").exists()  # held open by the idle connection

    first.creation._destroy_test_db(str(tmp_path / "pooled.sqlite3"), verbosity=0)

    assert sorted(path.name for path in tmp_path.iterdir() if "pooled" in path.name) == []


def test_destroying_a_test_database_another_connection_holds_leaves_no_files(database, tmp_path):
    """A thread that never closed its connection still holds the database when it is dropped:
    SQLite then leaves the -wal and -shm files, which go with the database all the same."""
    first = database()
    held = sqlite3.connect(tmp_path / "pooled.sqlite3")
    held.execute("INSERT INTO note VALUES ('one')")
    held.commit()
    try:
        first.creation._destroy_test_db(str(tmp_path / "pooled.sqlite3"), verbosity=0)
        assert sorted(path.name for path in tmp_path.iterdir() if "pooled" in path.name) == []
    finally:
        held.close()


def test_a_forked_child_neither_uses_nor_hands_on_its_parents_connections(database):
    parent = database()
    in_use = raw(parent)
    idle_wrapper = database()
    idle = raw(idle_wrapper)
    idle_wrapper.close()  # idle in the parent's pool

    child = os.fork()
    if child == 0:  # the child: report by exit status only
        try:
            parent.close()  # the parent's connection in use: closed, not kept
            fresh = raw(database())
            os._exit(0 if fresh is not in_use and fresh is not idle else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    for _ in range(200):  # up to 10 s
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked child did not finish")
    assert os.waitstatus_to_exitcode(status) == 0
    assert raw(database()) is idle  # the parent's pool is its own still


def test_an_in_memory_database_is_never_pooled():
    settings = {**connection.settings_dict, "ENGINE": "chatsite.db.sqlite3",
                "NAME": ":memory:", "OPTIONS": {"pool": 2}}
    wrapper = DatabaseWrapper(settings, alias="memory")
    assert wrapper._file_key(":memory:") is None


@pytest.mark.django_db(transaction=True)
def test_a_request_runs_its_middleware_and_view_in_one_step_on_its_thread():
    """Django's own ASGI handler builds the chain for the event loop, and crosses from the
    loop to a thread and back three times a request; chatsite's builds it as under WSGI (one
    synchronous chain) and crosses once. The request is still served whole."""
    from chatsite.asgi import application

    assert not asyncio.iscoroutinefunction(application._middleware_chain)

    async def serve() -> list[dict]:
        sent, asked = [], []

        async def receive():
            if asked:  # the body was read: no disconnect while the response is sent
                await asyncio.Event().wait()
            asked.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/healthz", "raw_path": b"/healthz",
                 "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
                 "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8000), "asgi": {"version": "3.0"}}
        await application(scope, receive, send)
        return sent

    sent = asyncio.run(serve())
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"Content-Security-Policy"]  # the whole chain ran
