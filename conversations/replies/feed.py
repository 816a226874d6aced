"""A viewer's feed of one reply: events pushed from any thread, taken in batches by an event loop.

Events are ``Delta(offset, text)`` (``text`` starts at ``offset`` in the reply, so a viewer drops
what it has seen and notices what it missed), ``End()`` (the reply is final in the database) and
``Lost()`` (the relay that fed it lost its connection: follow the database instead).

Producers wake the viewer's event loop at most once until it has taken what is queued, so a
burst of tokens costs one wake-up and one write, not one per token; the wait is a plain future,
not a task per wait, and its timeout one timer per feed, set again only when it goes off (not a
timer per wait: a reply's viewer waits once per token).
"""

from __future__ import annotations

import asyncio
import threading
from typing import NamedTuple


class Delta(NamedTuple):
    offset: int  # where ``text`` starts in the reply
    text: str


class _Signal:
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class End(_Signal):
    """The reply is final in the database."""


class Lost(_Signal):
    """The relay lost its connection: the viewer should follow the database instead."""


Event = Delta | End | Lost


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Feed:
    """One stream view's feed of one reply."""

    __slots__ = ("message_id", "snapshot", "known", "closed", "awaiting_snapshot", "_on_close",
                 "_loop", "_lock", "_pending", "_waiter", "_wait_until", "_timer", "__weakref__")

    def __init__(self, message_id: int, on_close=None) -> None:
        self.message_id = message_id
        self.snapshot = ""  # the text known when the feed was opened (replies live here)
        self.known = 0  # how much of the reply the database poller has delivered
        self.closed = False
        self.awaiting_snapshot = False  # relayed: no delta before the text so far
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._waiter: asyncio.Future | None = None
        self._wait_until = 0.0  # when the current wait times out (event loop clock)
        self._timer: asyncio.TimerHandle | None = None

    def deliver(self, event: Event) -> None:
        """Queue ``event``; callable from any thread."""
        with self._lock:
            self._pending.append(event)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the view's event loop is gone
                pass

    async def get_batch(self, timeout: float) -> list[Event]:
        """Return every event queued so far, waiting up to ``timeout`` seconds for one."""
        with self._lock:
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            waiter = self._waiter = self._loop.create_future()
        self._wait_until = self._loop.time() + timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._wait_until, self._time_out)
        await waiter
        with self._lock:
            self._waiter = None
            batch, self._pending = self._pending, []
        return batch

    def _time_out(self) -> None:
        """Wake a wait that has lasted its timeout; set the timer again for a later one."""
        self._timer = None
        waiter = self._waiter
        if waiter is None:
            return  # nobody waits: the next wait sets the timer
        if self._loop.time() >= self._wait_until:
            _wake(waiter)
        else:
            self._timer = self._loop.call_at(self._wait_until, self._time_out)

    def close(self) -> None:
        """Stop following the reply (called on the viewer's event loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_close is not None:
            self._on_close(self)
