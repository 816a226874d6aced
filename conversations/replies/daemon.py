"""The background threads a process runs once (the flusher, the watchdog, the database poller):
started on first need, started again if one died, ended together before the database goes away
(``stop_all``: the end of a test run)."""

from __future__ import annotations

import threading
from collections.abc import Callable

_stopping = threading.Event()
_started: list[threading.Thread] = []
_started_lock = threading.Lock()


def pause(seconds: float) -> bool:
    """Wait ``seconds``; return False once ``stop_all`` was called: the loop should end."""
    return not _stopping.wait(seconds)


def start(name: str, target: Callable[[], None]) -> threading.Thread | None:
    """Start ``target`` in a daemon thread ``name`` (none once ``stop_all`` was called)."""
    with _started_lock:
        if _stopping.is_set():
            return None
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        _started[:] = [t for t in _started if t.is_alive()] + [thread]
        return thread


def stop_all(timeout: float = 5.0) -> None:
    """End the background threads, each at its next pause, and wait for them: none holds or
    opens a database connection afterwards."""
    _stopping.set()
    with _started_lock:
        threads = list(_started)
    for thread in threads:
        thread.join(timeout)


class Daemon:
    """One daemon thread running ``target``; ``ensure_running()`` is cheap once it runs."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name = name
        self.target = target
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = start(self.name, self.target)
