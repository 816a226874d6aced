"""Live deltas of replies, from the generation thread to every stream view that tails them.

A generation ``open``s a reply, ``publish``es each piece of text and ``close``s it after the
final state is in the database. A stream view ``subscribe``s and gets a ``Subscription``: the text
known at subscription time (``snapshot``) and then ``Delta`` events (each with its offset into the
reply, so overlaps are dropped and nothing is missed) until ``End``.

Where the deltas come from, by where the reply is generated:

- in this process: straight from the generation thread (``LocalBroker``);
- in another process, with ``REDIS_URL`` set: Redis pub/sub (``RedisRelay``); the text so far is
  kept in a Redis string beside the channel, for subscribers that join mid-reply;
- in another process, without Redis: the database, polled by one thread per process every
  ``POLL_SECONDS`` for every reply tailed here (``DatabasePoller``).

Nothing another process needs lives only in this process's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
TEXT_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Delta:
    offset: int  # where ``text`` starts in the reply
    text: str


@dataclass(frozen=True)
class End:
    pass


class Subscription:
    """One stream view's feed of one reply.

    Producers (any thread) append events and wake the view's event loop at most once until it
    has taken them, so a burst of tokens costs one wake-up and one write, not one per token.
    """

    def __init__(self, message_id: int, on_close=None) -> None:
        self.message_id = message_id
        self.snapshot = ""
        self.known = 0  # how much of the reply the feed has delivered (used by the poller)
        self.local = False  # fed by a generation in this process
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending: list[Delta | End] = []
        self._wake_scheduled = False
        self._ready = asyncio.Event()

    def deliver(self, event: Delta | End) -> None:
        """Queue ``event``; callable from any thread."""
        with self._lock:
            self._pending.append(event)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the view's event loop is gone
            pass

    async def get_batch(self, timeout: float) -> list[Delta | End]:
        """Return every event queued so far, waiting up to ``timeout`` seconds for one."""
        deadline = self._loop.time() + timeout
        while True:
            with self._lock:
                if self._pending:
                    batch, self._pending = self._pending, []
                    self._wake_scheduled = False
                    self._ready.clear()
                    return batch
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                return []
            self._ready.clear()

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close(self)


@dataclass
class _Reply:
    parts: list[str] = field(default_factory=list)
    length: int = 0
    subscribers: set[Subscription] = field(default_factory=set)


class LocalBroker:
    """Replies generated in this process, and their subscribers here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[int, _Reply] = {}

    def open(self, message_id: int) -> None:
        with self._lock:
            self._replies.setdefault(message_id, _Reply())

    def publish(self, message_id: int, text: str) -> int:
        """Record and fan out ``text``; return its offset in the reply."""
        with self._lock:
            reply = self._replies.get(message_id)
            if reply is None:
                return -1
            event = Delta(reply.length, text)
            reply.parts.append(text)
            reply.length += len(text)
            subscribers = list(reply.subscribers)
        for subscriber in subscribers:
            subscriber.deliver(event)
        return event.offset

    def close(self, message_id: int) -> None:
        with self._lock:
            reply = self._replies.pop(message_id, None)
        if reply is not None:
            for subscriber in reply.subscribers:
                subscriber.deliver(End())

    def subscribe(self, message_id: int) -> Subscription | None:
        """Return a subscription to a reply generated in this process, or None."""
        with self._lock:
            reply = self._replies.get(message_id)
            if reply is None:
                return None
            subscription = Subscription(message_id, on_close=self._unsubscribe)
            subscription.local = True
            subscription.snapshot = "".join(reply.parts)
            reply.parts = [subscription.snapshot]
            reply.subscribers.add(subscription)
            return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            reply = self._replies.get(subscription.message_id)
            if reply is not None:
                reply.subscribers.discard(subscription)


class _Fanout:
    """Subscriptions by message id, shared by the feeds of replies generated elsewhere."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribers: dict[int, set[Subscription]] = {}

    def add(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscribers.setdefault(subscription.message_id, set()).add(subscription)

    def remove(self, subscription: Subscription) -> None:
        with self.lock:
            subscribers = self.subscribers.get(subscription.message_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self.subscribers[subscription.message_id]

    def of(self, message_id: int) -> list[Subscription]:
        with self.lock:
            return list(self.subscribers.get(message_id, ()))

    def watched(self) -> list[int]:
        with self.lock:
            return list(self.subscribers)


class DatabasePoller(_Fanout):
    """Tail replies generated by other processes through the database (no Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def subscribe(self, message_id: int) -> Subscription:
        subscription = Subscription(message_id, on_close=self.remove)
        self.add(subscription)
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reply-poller", daemon=True)
                self._thread.start()
        return subscription

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self.poll()
            except Exception:
                logger.exception("Polling replies failed; retrying")
                connection.close()

    def poll(self) -> None:
        from .models import Message

        watched = self.watched()
        if not watched:
            connection.close()  # idle: hold no database connection
            return
        rows = Message.objects.filter(pk__in=watched).values_list("pk", "content", "status")
        found = set()
        for pk, content, status in rows:
            found.add(pk)
            final = status not in Message.UNFINISHED
            for subscription in self.of(pk):
                if len(content) > subscription.known:
                    subscription.deliver(Delta(subscription.known, content[subscription.known:]))
                    subscription.known = len(content)
                if final:
                    subscription.deliver(End())
        for pk in set(watched) - found:  # deleted
            for subscription in self.of(pk):
                subscription.deliver(End())


class RedisRelay(_Fanout):
    """Carry deltas between processes through Redis pub/sub."""

    def __init__(self, url: str, prefix: str = "chatsite") -> None:
        super().__init__()
        import redis

        self.prefix = f"{prefix}:reply:"

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ready = threading.Event()

    # Publishing side (generation threads).
    def publish(self, message_id: int, offset: int, text: str) -> None:
        key = f"{self.prefix}{message_id}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.append(f"{key}:text", text)
            pipe.expire(f"{key}:text", TEXT_TTL_SECONDS)
            pipe.publish(key, json.dumps({"o": offset, "t": text}))
            pipe.execute()
        except Exception as exc:
            logger.warning("Publishing to Redis failed for reply %s: %s", message_id, exc)

    def close(self, message_id: int) -> None:
        key = f"{self.prefix}{message_id}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.publish(key, json.dumps({"end": True}))
            pipe.delete(f"{key}:text")
            pipe.execute()
        except Exception as exc:
            logger.warning("Publishing the end of reply %s to Redis failed: %s", message_id, exc)

    # Subscribing side (stream views).
    def subscribe(self, message_id: int) -> Subscription:
        self._ensure_listener()
        subscription = Subscription(message_id, on_close=self.remove)
        self.add(subscription)  # before reading the text: later deltas are not missed
        try:
            text = self._redis.get(f"{self.prefix}{message_id}:text")
        except Exception as exc:
            logger.warning("Reading reply %s from Redis failed: %s", message_id, exc)
            text = None
        subscription.snapshot = text.decode("utf-8") if text else ""
        return subscription

    def _ensure_listener(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._ready.clear()
                self._thread = threading.Thread(target=self._listen, name="redis-relay",
                                                daemon=True)
                self._thread.start()
        self._ready.wait(5)

    def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(f"{self.prefix}*")
                pubsub.get_message(timeout=1)  # the subscription confirmation
                self._ready.set()
                while True:
                    item = pubsub.get_message(timeout=1)
                    if item and item.get("type") == "pmessage":
                        self._dispatch(item["channel"], item["data"])
            except Exception as exc:
                logger.warning("Redis relay lost its connection (%s); reconnecting", exc)
                self._ready.set()
                time.sleep(1)
            finally:
                pubsub.close()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            message_id = int(channel.decode()[len(self.prefix):])
        except ValueError:
            return
        subscribers = self.of(message_id)
        if not subscribers:
            return
        payload = json.loads(data)
        event = End() if payload.get("end") else Delta(payload["o"], payload["t"])
        for subscription in subscribers:
            subscription.deliver(event)


class Watchdog:
    """Once per keep-alive interval and per process: mark replies whose process died as
    interrupted, and end the Redis feeds of replies that are final in the database (their end
    message may never come). One query for all viewers, instead of one per viewer."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reply-watchdog",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(max(0.2, settings.CHATSITE_KEEPALIVE_SECONDS))
            try:
                self.check()
            except Exception:
                logger.exception("Checking tailed replies failed; retrying")
            finally:
                connection.close()

    def check(self) -> None:
        from .models import Message
        from .services import reply_reap_stale

        relay, poller = self._broker.relay, self._broker.poller
        watched = (relay.watched() if relay else []) + poller.watched()
        if not watched:
            return
        reply_reap_stale()
        if relay is None:
            return  # the poller sees final replies itself
        relayed = relay.watched()
        unfinished = set(
            Message.objects.filter(pk__in=relayed, status__in=Message.UNFINISHED)
            .values_list("pk", flat=True)
        )
        for message_id in set(relayed) - unfinished:
            for subscription in relay.of(message_id):
                subscription.deliver(End())


class Broker:
    """The facade generation and stream views use."""

    def __init__(self, redis_url: str = "") -> None:
        self.local = LocalBroker()
        self.relay = RedisRelay(redis_url, settings.CHATSITE_REDIS_PREFIX) if redis_url else None
        self.poller = DatabasePoller()
        self.watchdog = Watchdog(self)

    def open(self, message_id: int) -> None:
        self.local.open(message_id)

    def publish(self, message_id: int, text: str) -> None:
        offset = self.local.publish(message_id, text)
        if self.relay is not None and offset >= 0:
            self.relay.publish(message_id, offset, text)

    def close(self, message_id: int) -> None:
        self.local.close(message_id)
        if self.relay is not None:
            self.relay.close(message_id)

    def subscribe(self, message_id: int) -> Subscription:
        """Return a feed of reply ``message_id``, wherever it is generated."""
        subscription = self.local.subscribe(message_id)
        if subscription is not None:
            return subscription
        self.watchdog.ensure_running()
        if self.relay is not None:
            return self.relay.subscribe(message_id)
        return self.poller.subscribe(message_id)


_broker: Broker | None = None
_broker_lock = threading.Lock()


def get_broker() -> Broker:
    global _broker
    with _broker_lock:
        if _broker is None:
            _broker = Broker(settings.REDIS_URL)
        return _broker
