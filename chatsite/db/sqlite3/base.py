"""Django's SQLite backend, with the connections it closes kept open for the next user.

Every request, generation thread and flusher pass of chatsite runs on a thread of its own, and
Django opens each thread a new connection and closes it after. Opening one is not cheap on
SQLite: beyond the file, the first statement reads the whole schema, and Django registers its
functions and runs its PRAGMAs — about 1.8 ms of CPU each time here, a third of a bare request.
This backend keeps up to ``OPTIONS["pool"]`` closed connections per database file (idle, each
left in autocommit with no transaction open) and hands them to the next thread that connects,
the way Django's PostgreSQL backend does with ``OPTIONS["pool"]``.

A connection is taken back only when it is safe to share: outside an atomic block, its
transaction rolled back, in the process that opened it, and to the same file (a test database
deleted and created again under the same name is a new file; its old connections are dropped).
In-memory databases are never pooled.
"""

from __future__ import annotations

import os
import threading

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    # (database file, its inode) → idle connections, newest last; and the pid that opened them.
    _idle: dict[tuple[str, int], list] = {}
    _idle_pid = os.getpid()
    _idle_lock = threading.Lock()

    pool_size = 0
    _pool_key: tuple[str, int] | None = None  # the open connection's file, if it may be pooled

    def get_connection_params(self):
        params = super().get_connection_params()
        self.pool_size = max(0, int(params.pop("pool", 0) or 0))
        return params

    def _file_key(self, database) -> tuple[str, int] | None:
        if not self.pool_size or self.is_in_memory_db():
            return None
        try:
            return str(database), os.stat(database).st_ino
        except (OSError, TypeError, ValueError):
            return None

    def get_new_connection(self, conn_params):
        key = self._file_key(conn_params["database"])
        connection = None
        if key is not None:
            with self._idle_lock:
                self._forget_inherited()
                idle = self._idle.get(key)
                if idle:
                    connection = idle.pop()
        if connection is None:
            connection = super().get_new_connection(conn_params)
            key = self._file_key(conn_params["database"])  # the file exists now
        self._pool_key = key
        return connection

    def _close(self):
        connection, key = self.connection, self._pool_key
        self._pool_key = None
        if connection is None or key is None or self.in_atomic_block:
            return super()._close()
        try:
            if connection.in_transaction:
                connection.rollback()
            same_file = self._file_key(key[0]) == key
        except Exception:  # noqa: BLE001 (unusable: closed below, for good)
            same_file = False
        if same_file:
            with self._idle_lock:
                self._forget_inherited()
                idle = self._idle.setdefault(key, [])
                if len(idle) < self.pool_size:
                    idle.append(connection)
                    self.connection = None
                    return None
        return super()._close()

    @classmethod
    def _forget_inherited(cls) -> None:
        """Drop (without closing: they are the parent's) connections a forked child inherited."""
        if cls._idle_pid != os.getpid():
            cls._idle = {}
            cls._idle_pid = os.getpid()

    @classmethod
    def close_idle(cls) -> None:
        """Close every idle connection of this process (tests that remove a database file)."""
        with cls._idle_lock:
            cls._forget_inherited()
            idle, cls._idle = cls._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
