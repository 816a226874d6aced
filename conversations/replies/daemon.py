"""A background thread a process runs once: started on first need, started again if it died."""

from __future__ import annotations

import threading
from collections.abc import Callable


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
                self._thread = threading.Thread(target=self.target, name=self.name, daemon=True)
                self._thread.start()
