"""What every relay backend shares: viewers here of replies generated elsewhere, by message id."""

from __future__ import annotations

import threading

from ..feed import Feed


class Fanout:
    """Feeds by message id; a backend delivers to them, the watchdog ends them."""

    # Whether text must be handed over as it is generated (Redis); the others read the database.
    carries_text = False

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.feeds: dict[int, set[Feed]] = {}

    def add(self, feed: Feed) -> None:
        with self.lock:
            self.feeds.setdefault(feed.message_id, set()).add(feed)

    def remove(self, feed: Feed) -> bool:
        """Drop ``feed``; return whether it was its reply's last one here."""
        with self.lock:
            feed.closed = True
            feeds = self.feeds.get(feed.message_id)
            if feeds is None:
                return False
            feeds.discard(feed)
            if feeds:
                return False
            del self.feeds[feed.message_id]
            return True

    def of(self, message_id: int) -> list[Feed]:
        with self.lock:
            return list(self.feeds.get(message_id, ()))

    def watched(self) -> list[int]:
        with self.lock:
            return list(self.feeds)

    def available(self) -> bool:
        return True

    def subscribe(self, message_id: int) -> Feed:
        feed = Feed(message_id, on_close=self.remove)
        self.add(feed)
        return feed

    # Generating side: what a process does with its replies' text for viewers elsewhere.
    def publish(self, message_id: int, offset: int, text: str) -> None:
        pass

    def close(self, message_id: int) -> None:
        pass

    # Stop from another process: the database flag is the truth (``cancel_requested``); a
    # backend may carry the request faster than the database could be polled.
    def request_stop(self, message_id: int) -> None:
        pass

    def stops_requested(self, message_ids: list[int]) -> set[int]:
        """Return which of the replies generated here another process asked to stop.

        One process serves everything (in-process relay): a Stop always reaches the reply
        directly, so there is nothing to look for."""
        return set()


def stops_in_database(message_ids: list[int]) -> set[int]:
    from ...models import Message

    return set(Message.objects.filter(pk__in=message_ids, cancel_requested=True)
               .values_list("pk", flat=True))
