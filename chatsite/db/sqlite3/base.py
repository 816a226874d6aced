"""Django's SQLite backend, with the connections it closes kept open for the next user.

Every request, generation thread and flusher pass of chatsite runs on a thread of its own, and
Django opens each thread a new connection and closes it after. Opening one is not cheap on
SQLite: beyond the file, the first statement reads the whole schema, and Django registers its
functions and runs its PRAGMAs — about 1.7 ms of CPU each time here, a third of a bare request.
This backend keeps up to ``OPTIONS["pool"]`` closed connections per database file and hands them
to the next thread that connects, as Django's PostgreSQL backend does with ``OPTIONS["pool"]``.

A connection goes back to the pool only as a new one would come out of it:

- closed outside an atomic block, with no error recorded on it, by the process that opened it;
- its cursors closed (a query read halfway, say by a download the client left, would otherwise
  keep its snapshot of the database and its read lock) and its open transaction rolled back;
- for the same file with the same settings (a database removed and made again under its name is
  a new inode: the old file's connections are closed, not handed on);
- and it is set up again when handed out: Django's PRAGMAs and ``init_command`` run once more,
  so that nothing a user changed (``PRAGMA foreign_keys = OFF`` during a migration) carries over.

In-memory databases are never pooled. Creating or destroying a test database closes the idle
connections first, as closing the pool does on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

from django.db.backends.sqlite3 import base, creation


class DatabaseCreation(creation.DatabaseCreation):
    def _create_test_db(self, *args, **kwargs):
        self.connection.close_pool()
        return super()._create_test_db(*args, **kwargs)

    def _destroy_test_db(self, test_database_name, verbosity):
        self.connection.close_pool()
        super()._destroy_test_db(test_database_name, verbosity)
        # SQLite removes a WAL database's -wal and -shm files when its last connection closes,
        # but not once the database file is gone: a connection a thread still holds (one that
        # never closed it) would leave them behind, one pair per test run.
        if test_database_name and not self.is_in_memory_db(test_database_name):
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{test_database_name}{suffix}")


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    # (file, inode, settings) → idle connections, newest last; one lock for all; made anew in a
    # forked child, which must neither use nor hand on its parent's connections.
    _idle: dict[tuple, list] = {}
    _idle_lock = threading.Lock()

    pool_size = 0
    _settings_key = ""
    _pool_key: tuple | None = None  # the open connection's, if it may go back to the pool
    _opened_by = 0  # the pid that opened or took the open connection
    _cursors: weakref.WeakSet | None = None  # the open connection's, closed before it is kept

    def get_connection_params(self):
        params = super().get_connection_params()
        self.pool_size = max(0, int(params.pop("pool", 0) or 0))
        self._settings_key = repr((sorted(params.items()), self.init_commands))
        return params

    @property
    def pool(self) -> bool:
        """Whether closed connections are kept (the name Django's PostgreSQL backend uses)."""
        return bool(self.settings_dict["OPTIONS"].get("pool")) and not self.is_in_memory_db()

    def _file_key(self, database) -> tuple | None:
        if not self.pool_size or self.is_in_memory_db():
            return None
        try:
            return str(database), os.stat(database).st_ino, self._settings_key
        except (OSError, TypeError, ValueError):
            return None

    def get_new_connection(self, conn_params):
        key = self._file_key(conn_params["database"])
        connection = None
        if key is not None:
            with self._idle_lock:
                connection = self._take(key)
        if connection is not None:
            try:
                self._set_up(connection)
            except Exception:  # noqa: BLE001 (unusable: a new one instead)
                connection.close()
                connection = None
        if connection is None:
            connection = super().get_new_connection(conn_params)
            key = self._file_key(conn_params["database"])  # the file exists now
        self._pool_key = key
        self._opened_by = os.getpid()
        self._cursors = weakref.WeakSet()
        return connection

    def _take(self, key: tuple):
        """Return an idle connection for ``key``, closing those of a file that was replaced."""
        replaced = [other for other in self._idle if other[0] == key[0] and other != key]
        for other in replaced:
            for connection in self._idle.pop(other):
                connection.close()
        idle = self._idle.get(key)
        return idle.pop() if idle else None

    def _set_up(self, connection) -> None:
        """Run again what Django runs on a new connection (but its functions, which stay)."""
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                connection.execute(init_command)

    def create_cursor(self, name=None):
        cursor = super().create_cursor(name)
        if self._pool_key is not None:
            self._cursors.add(cursor)
        return cursor

    def _close(self):
        connection, key = self.connection, self._pool_key
        self._pool_key = None
        if (connection is None or key is None or self.in_atomic_block or self.errors_occurred
                or self._opened_by != os.getpid()):
            return super()._close()
        try:
            for cursor in list(self._cursors):
                cursor.close()
            if connection.in_transaction:
                connection.rollback()
            same_file = self._file_key(key[0]) == key
        except Exception:  # noqa: BLE001 (unusable: closed below, for good)
            same_file = False
        if same_file:
            with self._idle_lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self.pool_size:
                    idle.append(connection)
                    self.connection = None
                    return None
        return super()._close()

    def close_pool(self) -> None:
        """Close the idle connections of this process (all its files: test databases are made
        and dropped rarely)."""
        close_idle()


def close_idle() -> None:
    """Close every idle connection of this process."""
    with DatabaseWrapper._idle_lock:
        idle, DatabaseWrapper._idle = DatabaseWrapper._idle, {}
    for connections in idle.values():
        for connection in connections:
            connection.close()


def _forget_in_child() -> None:
    """In a forked child: a new lock, and none of the parent's connections (dropped, not
    closed: closing another process's SQLite connection is not safe either)."""
    DatabaseWrapper._idle_lock = threading.Lock()
    parents = DatabaseWrapper._idle
    DatabaseWrapper._idle = {}
    _inherited.append(parents)  # kept referenced: collecting them would close them


_inherited: list = []
os.register_at_fork(after_in_child=_forget_in_child)
