"""What every request pays before chatsite's own work: its thread crossings and its database
connection.

The SQLite backend (``chatsite.db.sqlite3``) keeps closed connections open for the next thread;
these tests prove that it hands one on only when that is safe. The served application
(``chatsite.asgi``) runs each request's middleware and view in one step on the request's thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from django.db import connection, connections, transaction

from chatsite.db.sqlite3.base import DatabaseWrapper


@pytest.fixture
def database(tmp_path, django_db_blocker):
    """A pooled SQLite database of its own (whatever engine the suite runs on), keeping two.
    Not the suite's test database: pytest-django's guard is lifted for it alone."""
    with django_db_blocker.unblock():
        yield from _database(tmp_path)


def _database(tmp_path):
    settings = {**connection.settings_dict, "ENGINE": "chatsite.db.sqlite3",
                "NAME": str(tmp_path / "pooled.sqlite3"), "OPTIONS": {"pool": 2}}
    made = []

    def wrapper() -> DatabaseWrapper:
        made.append(DatabaseWrapper(settings, alias=f"pooled-{len(made)}"))
        return made[-1]

    first = wrapper()
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE note (text TEXT)")
    first.close()
    yield wrapper
    for each in made:
        each.close()
    DatabaseWrapper.close_idle()


def in_thread(function):
    """Run ``function`` on a thread of its own, as each request and generation does."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


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
    connections[first.alias] = first
    try:
        with transaction.atomic(using=first.alias):
            opened = raw(first)
            first.close()
    finally:
        del connections[first.alias]

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
