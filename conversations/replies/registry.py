"""The live registry: the replies this process generates, each the one owner of its text and of
the viewers here that follow it.

A generation thread ``append``s each piece of text; the registry hands it, with its offset, to
every local viewer and to the relay (for viewers in other processes). A viewer that subscribes
here gets the text so far and every later piece, with no round trip through Redis or the
database. The flusher reads what it has not yet written (``unflushed``) and marks it written.
"""

from __future__ import annotations

import threading
import time

from .feed import Delta, End, Feed


class LiveReply:
    """The live state of one reply in this process."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.lock = threading.Lock()
        self.parts: list[str] = []
        self.length = 0
        self.flushed = 0  # how much of the text the database has
        self.viewers: set[Feed] = set()
        self.final = False  # being finished: the flusher leaves it to the final write
        self.ended = False  # finished: its last state is stored and its viewers told
        self.cancelled = threading.Event()
        self.stream = None  # the upstream ChatStream, once opened
        self.lease_renewed = time.monotonic()
        self.upstream_called = False  # whether a request was sent upstream
        self.refused = False  # the provider refused it before any text: nothing to charge
        self.prompt_estimate = 0
        self.prices = None  # its model's prices when it was sent (usage.Prices), for its cost
        self.relay = None  # where text goes for viewers in other processes
        self.language = None  # the member's page's language, for what the reply says to them

    def append(self, text: str) -> None:
        """Add ``text`` to the reply and hand it to every viewer."""
        with self.lock:
            offset = self.length
            self.parts.append(text)
            self.length += len(text)
            viewers = self.viewers
        if viewers:
            event = Delta(offset, text)
            for viewer in viewers:  # never changed in place (copy on write), so no copy here
                viewer.deliver(event)
        if self.relay is not None:
            self.relay.publish(self.message_id, offset, text)

    def has_text(self) -> bool:
        return self.length > 0

    def text(self) -> str:
        with self.lock:
            return self._joined()

    def _joined(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def unflushed(self) -> tuple[int, str]:
        """Return (offset, text) the database does not have yet."""
        with self.lock:
            if self.flushed >= self.length:
                return self.flushed, ""
            return self.flushed, self._joined()[self.flushed:]

    def cancel(self) -> None:
        self.cancelled.set()
        stream = self.stream
        if stream is not None:
            stream.close()

    def subscribe(self) -> Feed:
        """Return a feed of the text so far (``snapshot``) and every later piece; a reply that
        has ended already (its last state is stored) puts ``End`` in the feed at once."""
        feed = Feed(self.message_id, on_close=self._unsubscribe)
        with self.lock:
            feed.snapshot = self._joined()
            ended = self.ended
            if not ended:
                self.viewers = self.viewers | {feed}  # copy on write: append() iterates unlocked
        if ended:
            feed.deliver(End())
        return feed

    def _unsubscribe(self, feed: Feed) -> None:
        with self.lock:
            self.viewers = self.viewers - {feed}

    def end(self) -> None:
        """Tell every viewer here that the reply is final (its last state is stored)."""
        with self.lock:
            self.final = self.ended = True
            viewers, self.viewers = self.viewers, set()
        for viewer in viewers:
            viewer.deliver(End())
        if self.relay is not None:
            self.relay.close(self.message_id)


_replies: dict[int, LiveReply] = {}
_lock = threading.Lock()


def add(reply: LiveReply) -> bool:
    """Register ``reply``; return False if one with its id is live here already."""
    with _lock:
        if reply.message_id in _replies:
            return False
        _replies[reply.message_id] = reply
        return True


def remove(message_id: int) -> None:
    with _lock:
        _replies.pop(message_id, None)


def get(message_id: int) -> LiveReply | None:
    return _replies.get(message_id)


def all_live() -> list[LiveReply]:
    with _lock:
        return list(_replies.values())


def count() -> int:
    return len(_replies)
