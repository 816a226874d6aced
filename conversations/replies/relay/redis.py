"""The Redis relay: replies generated in one process, followed live from others.

Publishing: the registry hands each piece of text to ``publish``; one writer thread per process
sends everything queued in the last ``BATCH_SECONDS`` in one round trip — per reply one APPEND to
the reply's text key (for viewers that join mid-reply) and one PUBLISH of the concatenated
delta. Generation threads never wait on Redis, and a viewer on the generating process never
pays a Redis round trip (it follows the registry).

Subscribing: the listener thread SUBSCRIBEs to a reply's channel when this process gets its
first viewer of it and UNSUBSCRIBEs after the last, so a process only parses the replies it
shows. Once a channel is confirmed, the listener reads the text so far and hands it to the new
viewers as a delta from offset 0 before any message it reads afterwards: nothing falls between
the snapshot and the live deltas (overlaps are dropped by offset).

Redis down: after a failure the relay says it is unavailable for ``RETRY_SECONDS``; its viewers
get ``Lost`` and follow the database, and new viewers go to the database directly.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from django.conf import settings

from ..feed import Delta, End, Feed, Lost
from .base import Fanout, stops_in_database

logger = logging.getLogger(__name__)

TEXT_TTL_SECONDS = 3600
END_TTL_SECONDS = 300
RETRY_SECONDS = 5.0
BATCH_SECONDS = 0.01


@dataclass
class _Outgoing:
    """Text of one reply waiting for the relay writer's next round trip."""

    offset: int = -1
    parts: list[str] = field(default_factory=list)
    end: bool = False


class Relay(Fanout):
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

    carries_text = True

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        super().__init__()
        import redis

        url = url or settings.REDIS_URL
        prefix = prefix or settings.CHATSITE_REDIS_PREFIX

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
        self._requests: queue.SimpleQueue[tuple[str, int, Feed | None]] = (
            queue.SimpleQueue()
        )
        self._listener: threading.Thread | None = None
        self._down_until = 0.0
        self._listener_outage = False  # the listener thread has warned of the outage

    def available(self) -> bool:
        """Return whether Redis answered lately: while it does not, viewers follow the
        database (``DatabasePoller``) instead."""
        return time.monotonic() >= self._down_until

    def mark_down(self) -> None:
        self._down_until = time.monotonic() + RETRY_SECONDS

    def request_stop(self, message_id: int) -> None:
        try:
            self._redis.set(f"{self.prefix}{message_id}:stop", b"1", ex=END_TTL_SECONDS)
        except Exception as exc:  # the database flag still stops it
            logger.warning("Asking for a Stop through Redis failed: %s", exc)
            self.mark_down()

    def stops_requested(self, message_ids: list[int]) -> set[int]:
        if not message_ids:
            return set()
        if self.available():
            try:
                flags = self._redis.mget([f"{self.prefix}{pk}:stop" for pk in message_ids])
                return {pk for pk, flag in zip(message_ids, flags, strict=True) if flag}
            except Exception as exc:
                logger.warning("Reading Stop requests from Redis failed: %s", exc)
                self.mark_down()
        return stops_in_database(message_ids)

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
            # Batch per short interval, not per token: what arrives meanwhile goes in one trip.
            time.sleep(BATCH_SECONDS)
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
    def subscribe(self, message_id: int) -> Feed:
        feed = Feed(message_id, on_close=self.remove)
        feed.awaiting_snapshot = True
        # Watched at once, so the watchdog ends it even if Redis cannot be reached.
        self.add(feed)
        self._requests.put(("attach", message_id, feed))
        with self._outbox_lock:
            self._wake_listener = True
        self._ensure_threads()
        self._outbox_ready.set()
        return feed

    def remove(self, feed: Feed) -> bool:
        last = super().remove(feed)
        if last:  # the listener unsubscribes from the reply's channel
            self._requests.put(("detach", feed.message_id, None))
        return last

    def _listen_forever(self) -> None:
        while True:
            listener = _Listener(self)
            try:
                listener.run()
            except Exception as exc:
                # Said once per outage (the listener retries every second meanwhile).
                if not self._listener_outage:
                    logger.warning("Redis relay lost its connection (%s); its viewers follow "
                                   "the database until it is back", exc)
                    self._listener_outage = True
                else:
                    logger.debug("Redis relay still unreachable: %s", exc)
                self.mark_down()
                for message_id in self.watched():
                    for feed in self.of(message_id):
                        feed.deliver(Lost())
                time.sleep(1)
            finally:
                listener.close()
            if not self.watched() and self._requests.empty():
                return  # nobody to listen for: the next subscribe starts a new listener


class _Listener:
    """One connection's worth of the relay's listener thread (rebuilt after a disconnect)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pubsub = relay._redis.pubsub()
        self.subscribed: set[int] = set()  # SUBSCRIBE sent, no UNSUBSCRIBE since
        self.unconfirmed: dict[int, int] = {}  # SUBSCRIBEs sent and not yet confirmed
        self.waiting: dict[int, list[Feed]] = {}  # viewers owed their snapshot
        self.attached: weakref.WeakSet[Feed] = weakref.WeakSet()

    def run(self) -> None:
        relay = self.relay
        self.pubsub.subscribe(relay._control)
        if relay._listener_outage:
            relay._listener_outage = False
            logger.info("Redis relay connected again; its viewers follow Redis")
        # After a reconnect, deltas may have been missed: every viewer gets a fresh snapshot.
        for message_id in relay.watched():
            feeds = relay.of(message_id)
            for feed in feeds:
                feed.awaiting_snapshot = True
            self._attach(message_id, feeds)
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
                action, message_id, feed = relay._requests.get_nowait()
            except queue.Empty:
                return
            if action == "attach":
                # A listener that (re)connected has attached every watched viewer already.
                if not feed.closed and feed not in self.attached:
                    self._attach(message_id, [feed])
            else:
                self._detach(message_id)

    def _attach(self, message_id: int, feeds: list[Feed]) -> None:
        self.attached.update(feeds)
        if message_id in self.subscribed and not self.unconfirmed.get(message_id):
            self._send_snapshot(message_id, feeds)
            return
        self.waiting.setdefault(message_id, []).extend(feeds)
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

    def _send_snapshot(self, message_id: int, feeds: list[Feed]) -> None:
        channel = self.relay._channel(message_id)
        text, ended = self.relay._redis.mget(f"{channel}:text", f"{channel}:end")
        events: list[Delta | End] = [Delta(0, text.decode("utf-8"))] if text else []
        if ended:  # it ended before this channel was confirmed: its end message was missed
            events.append(End())
        for feed in feeds:
            for event in events:
                feed.deliver(event)
            feed.awaiting_snapshot = False

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
            for feed in subscribers:
                feed.deliver(event)


