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
import queue
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, new viewers follow the database this long
TEXT_TTL_SECONDS = 3600
END_TTL_SECONDS = 300


@dataclass(frozen=True)
class Delta:
    offset: int  # where ``text`` starts in the reply
    text: str


@dataclass(frozen=True)
class End:
    pass


@dataclass(frozen=True)
class Lost:
    """The relay lost its connection: the viewer should follow the database instead."""


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
        self.closed = False
        self.awaiting_snapshot = False  # relayed: no delta before the text so far
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending: list[Delta | End] = []
        self._wake_scheduled = False
        self._ready = asyncio.Event()

    def deliver(self, event: Delta | End | Lost) -> None:
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

    def remove(self, subscription: Subscription) -> bool:
        """Drop ``subscription``; return whether it was its reply's last one here."""
        with self.lock:
            subscription.closed = True
            subscribers = self.subscribers.get(subscription.message_id)
            if subscribers is None:
                return False
            subscribers.discard(subscription)
            if subscribers:
                return False
            del self.subscribers[subscription.message_id]
            return True

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


@dataclass
class _Outgoing:
    """Text of one reply waiting for the relay writer's next round trip."""

    offset: int = -1
    parts: list[str] = field(default_factory=list)
    end: bool = False


class RedisRelay(_Fanout):
    """Carry deltas between processes through Redis pub/sub.

    Publishing: generation threads hand their text to one writer thread per process and never
    wait on Redis. Each round trip sends everything queued since the previous one: per reply,
    one APPEND to the reply's text key (for viewers that join mid-reply) and one PUBLISH of the
    concatenated delta, so a busy process sends fewer, larger messages.

    Subscribing: the listener thread SUBSCRIBEs to a reply's channel when this process gets its
    first viewer of it and UNSUBSCRIBEs after the last, so a process only parses the replies it
    shows. Once a channel is confirmed, the listener reads the text so far and hands it to the
    new viewers as a delta from offset 0 before any message it reads afterwards: nothing falls
    between the snapshot and the live deltas (overlaps are dropped by offset). Stream views
    never touch Redis themselves: their event loop does no network I/O here.
    """

    def __init__(self, url: str, prefix: str = "chatsite") -> None:
        super().__init__()
        import redis

        self.prefix = f"{prefix}:reply:"
        self._control = f"{prefix}:relay-control:{uuid.uuid4().hex}"
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._start_lock = threading.Lock()
        # Writer side.
        self._outbox_lock = threading.Lock()
        self._outbox: dict[int, _Outgoing] = {}
        self._outbox_ready = threading.Event()
        self._wake_listener = False
        self._writer: threading.Thread | None = None
        # Listener side: requests from other threads; the rest is the listener thread's own.
        self._requests: queue.SimpleQueue[tuple[str, int, Subscription | None]] = (
            queue.SimpleQueue()
        )
        self._listener: threading.Thread | None = None
        self._down_until = 0.0

    def available(self) -> bool:
        """Return whether Redis answered lately: while it does not, viewers follow the
        database (``DatabasePoller``) instead."""
        return time.monotonic() >= self._down_until

    def mark_down(self) -> None:
        self._down_until = time.monotonic() + REDIS_RETRY_SECONDS

    def _channel(self, message_id: int) -> str:
        return f"{self.prefix}{message_id}"

    def _ensure_threads(self) -> None:
        writer, listener = self._writer, self._listener
        if writer is not None and listener is not None and writer.is_alive() and (
            listener.is_alive()
        ):
            return  # the common case, once per token: no lock
        with self._start_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever,
                                                name="redis-relay-writer", daemon=True)
                self._writer.start()
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen_forever,
                                                  name="redis-relay", daemon=True)
                self._listener.start()

    # Publishing side (generation threads queue; the writer thread sends).
    def publish(self, message_id: int, offset: int, text: str) -> None:
        with self._outbox_lock:
            outgoing = self._outbox.get(message_id)
            if outgoing is None or outgoing.end:
                self._outbox[message_id] = _Outgoing(offset, [text])
            else:
                outgoing.parts.append(text)
        self._ensure_threads()
        self._outbox_ready.set()

    def close(self, message_id: int) -> None:
        with self._outbox_lock:
            self._outbox.setdefault(message_id, _Outgoing()).end = True
        self._ensure_threads()
        self._outbox_ready.set()

    def _write_forever(self) -> None:
        while True:
            self._outbox_ready.wait()
            with self._outbox_lock:
                self._outbox_ready.clear()
                batch, self._outbox = self._outbox, {}
                wake, self._wake_listener = self._wake_listener, False
            try:
                self._send(batch, wake)
            except Exception as exc:
                logger.warning("Publishing %s replies to Redis failed: %s", len(batch), exc)
                self.mark_down()
                time.sleep(1)  # Redis is down: viewers elsewhere fall back to the database

    def _send(self, batch: dict[int, _Outgoing], wake: bool) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for message_id, outgoing in batch.items():
            channel = self._channel(message_id)
            if outgoing.parts:
                text = "".join(outgoing.parts)
                pipe.append(f"{channel}:text", text)
                pipe.expire(f"{channel}:text", TEXT_TTL_SECONDS)
                pipe.publish(channel, json.dumps({"o": outgoing.offset, "t": text}))
            if outgoing.end:
                # The flag tells viewers whose channel is confirmed later that it ended.
                pipe.set(f"{channel}:end", b"1", ex=END_TTL_SECONDS)
                pipe.publish(channel, json.dumps({"end": True}))
                pipe.delete(f"{channel}:text")
        if wake:
            pipe.publish(self._control, b"")
        if len(pipe):
            pipe.execute()

    # Subscribing side (stream views ask; the listener thread does the work).
    def subscribe(self, message_id: int) -> Subscription:
        subscription = Subscription(message_id, on_close=self.remove)
        subscription.awaiting_snapshot = True
        # Watched at once, so the watchdog ends it even if Redis cannot be reached.
        self.add(subscription)
        self._requests.put(("attach", message_id, subscription))
        with self._outbox_lock:
            self._wake_listener = True
        self._ensure_threads()
        self._outbox_ready.set()
        return subscription

    def remove(self, subscription: Subscription) -> bool:
        last = super().remove(subscription)
        if last:  # the listener unsubscribes from the reply's channel
            self._requests.put(("detach", subscription.message_id, None))
        return last

    def _listen_forever(self) -> None:
        while True:
            listener = _Listener(self)
            try:
                listener.run()
            except Exception as exc:
                logger.warning("Redis relay lost its connection (%s); its viewers follow the "
                               "database until it is back", exc)
                self.mark_down()
                for message_id in self.watched():
                    for subscription in self.of(message_id):
                        subscription.deliver(Lost())
                time.sleep(1)
            finally:
                listener.close()
            if not self.watched() and self._requests.empty():
                return  # nobody to listen for: the next subscribe starts a new listener


class _Listener:
    """One connection's worth of the relay's listener thread (rebuilt after a disconnect)."""

    def __init__(self, relay: RedisRelay) -> None:
        self.relay = relay
        self.pubsub = relay._redis.pubsub()
        self.subscribed: set[int] = set()  # SUBSCRIBE sent, no UNSUBSCRIBE since
        self.unconfirmed: dict[int, int] = {}  # SUBSCRIBEs sent and not yet confirmed
        self.waiting: dict[int, list[Subscription]] = {}  # viewers owed their snapshot
        self.attached: weakref.WeakSet[Subscription] = weakref.WeakSet()

    def run(self) -> None:
        relay = self.relay
        self.pubsub.subscribe(relay._control)
        # After a reconnect, deltas may have been missed: every viewer gets a fresh snapshot.
        for message_id in relay.watched():
            subscriptions = relay.of(message_id)
            for subscription in subscriptions:
                subscription.awaiting_snapshot = True
            self._attach(message_id, subscriptions)
        while True:
            self._serve_requests()
            item = self.pubsub.get_message(timeout=1)
            if item is not None:
                self._handle(item)

    def close(self) -> None:
        try:
            self.pubsub.close()
        except Exception as exc:  # already broken: nothing to give back
            logger.debug("Closing the Redis relay's connection: %s", exc)

    def _serve_requests(self) -> None:
        relay = self.relay
        while True:
            try:
                action, message_id, subscription = relay._requests.get_nowait()
            except queue.Empty:
                return
            if action == "attach":
                # A listener that (re)connected has attached every watched viewer already.
                if not subscription.closed and subscription not in self.attached:
                    self._attach(message_id, [subscription])
            else:
                self._detach(message_id)

    def _attach(self, message_id: int, subscriptions: list[Subscription]) -> None:
        self.attached.update(subscriptions)
        if message_id in self.subscribed and not self.unconfirmed.get(message_id):
            self._send_snapshot(message_id, subscriptions)
            return
        self.waiting.setdefault(message_id, []).extend(subscriptions)
        if message_id not in self.subscribed:
            self.subscribed.add(message_id)
            self.unconfirmed[message_id] = self.unconfirmed.get(message_id, 0) + 1
            self.pubsub.subscribe(self.relay._channel(message_id))

    def _detach(self, message_id: int) -> None:
        waiting = [s for s in self.waiting.pop(message_id, []) if not s.closed]
        if waiting:
            self.waiting[message_id] = waiting
        if waiting or self.relay.of(message_id) or message_id not in self.subscribed:
            return
        self.subscribed.discard(message_id)
        self.pubsub.unsubscribe(self.relay._channel(message_id))

    def _send_snapshot(self, message_id: int, subscriptions: list[Subscription]) -> None:
        channel = self.relay._channel(message_id)
        text, ended = self.relay._redis.mget(f"{channel}:text", f"{channel}:end")
        events: list[Delta | End] = [Delta(0, text.decode("utf-8"))] if text else []
        if ended:  # it ended before this channel was confirmed: its end message was missed
            events.append(End())
        for subscription in subscriptions:
            for event in events:
                subscription.deliver(event)
            subscription.awaiting_snapshot = False

    def _handle(self, item: dict) -> None:
        relay = self.relay
        channel = item["channel"].decode()
        if not channel.startswith(relay.prefix):
            return  # the control channel: it only wakes this thread up
        message_id = int(channel[len(relay.prefix):])
        kind = item["type"]
        if kind == "subscribe":
            remaining = self.unconfirmed.get(message_id, 0) - 1
            if remaining > 0:
                self.unconfirmed[message_id] = remaining
                return
            self.unconfirmed.pop(message_id, None)
            waiting = self.waiting.pop(message_id, [])
            if message_id in self.subscribed:
                self._send_snapshot(message_id, waiting)
        elif kind == "message":
            subscribers = [s for s in relay.of(message_id) if not s.awaiting_snapshot]
            if not subscribers:
                return
            payload = json.loads(item["data"])
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
        if self.relay is not None and self.relay.available():
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
