"""The event stream of one reply: what a viewer's EventSource receives.

A stream starts at an offset into the reply (``Last-Event-ID`` on a reconnect, or the length of
the text the page already shows), sends what the reply has beyond it as ``delta`` events, and
ends with one ``done`` event carrying the final HTML of the message. It subscribes before it
reads the database, so the reply cannot end unseen in between; it follows the live registry when
the reply is generated in this process (no relay, no query per token, and no read of the row
until it has ended: the registry has all of its text), the relay backend otherwise, and the
database when the relay loses something. The stream only reads: a reconnect never starts a
second upstream call, and a stale reply is shown as interrupted without a write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.db import connection

from .. import rendering
from ..models import Message
from . import registry, sse, watchdog
from .feed import End, Feed, Lost
from .relay import get_poller, get_relay


def release_connection() -> None:
    """Give this thread's database connection back (to the pool, or close it).

    A stream may stay open for hours and must not hold a connection meanwhile. Inside an atomic
    block (a test's transaction) the connection is left alone.
    """
    if not connection.in_atomic_block:
        connection.close()


def release_request_thread() -> None:
    """Let this request's worker thread go while its stream stays open.

    Django serves each ASGI request in an asgiref ``ThreadSensitiveContext``, whose one worker
    thread (the middleware's and the view's synchronous code) normally lives until the
    response is sent: for a stream open for hours, an idle OS thread per viewer. Once the body
    streams, the middleware and the view are done with it, so it can stop; a later synchronous
    step of the stream gets a new one (``run_sync``), released again right after.
    """
    variable = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    if variable is None or executors is None:  # another asgiref: keep the thread, stay correct
        return
    context = variable.get(None)
    if context is None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


async def run_sync(function, *args):
    """Run a synchronous step of a stream, holding no thread or connection afterwards."""
    try:
        return await sync_to_async(function)(*args)
    finally:
        release_request_thread()


def _load_sync(message_id: int) -> Message | None:
    try:
        return Message.objects.filter(pk=message_id).first()
    finally:
        release_connection()


async def _load(message_id: int) -> Message | None:
    return await run_sync(_load_sync, message_id)


def _progress(blocks: rendering.BlockSplitter, new: str, sent: int) -> bytes:
    """Return the events for ``new`` text that ends at ``sent``: the blocks it finished,
    rendered (they replace the tail shown so far), then the open tail; or just the new text."""
    finished = blocks.feed(new)
    if not finished:
        return sse.delta(new, sent)
    events = sse.block(rendering.render_markdown(finished), sent - len(blocks.tail))
    if blocks.tail:
        events += sse.delta(blocks.tail, sent)
    return events


def _feed(message_id: int) -> tuple[Feed, bool]:
    """Return a feed of the reply, and whether this process generates it: its feed then holds
    all of its text so far and ends with ``End`` (at once if it has ended already)."""
    live = registry.get(message_id)
    if live is not None:
        return live.subscribe(), True
    watchdog.ensure_running()
    relay = get_relay()
    if relay.available():
        return relay.subscribe(message_id), False
    return get_poller().subscribe(message_id), False


async def events(
    message_id: int, offset: int, render_final: Callable[[Message], Awaitable[str]]
) -> AsyncIterator[bytes]:
    """Yield the SSE events of reply ``message_id`` from ``offset`` until it is final."""
    release_request_thread()
    sent = offset
    keepalive = settings.CHATSITE_KEEPALIVE_SECONDS
    yield sse.RETRY
    feed, here = _feed(message_id)  # before reading the database: the end cannot be missed
    try:
        if here:  # no read: it is unfinished until its feed says End, which has all its text
            live, known = True, feed.snapshot
        else:
            message = await _load(message_id)
            if message is None:
                return
            live = message.is_unfinished and not message.is_stale
            known = max(feed.snapshot, message.content, key=len)
        if live:
            # The viewer shows the finished blocks of what it has rendered, the rest as text
            # (the page drew it so); from here, each block is rendered once as it finishes.
            blocks = rendering.BlockSplitter()
            blocks.feed(known[:sent])
            if len(known) > sent:
                yield _progress(blocks, known[sent:], len(known))
                sent = len(known)
            ended = False
            while not ended:
                batch = await feed.get_batch(keepalive)
                if not batch:
                    yield sse.KEEPALIVE
                    continue
                text = []
                for item in batch:
                    if type(item) is End:
                        ended = True
                        break
                    if type(item) is Lost or item.offset > sent:
                        # The relay lost its connection, or something in it: follow the
                        # database instead (it resends from the start; overlaps are dropped).
                        feed.close()
                        feed = get_poller().subscribe(message_id)
                        break
                    end = item.offset + len(item.text)
                    if end > sent:
                        text.append(item.text[sent - item.offset:])
                        sent = end
                if text:
                    yield _progress(blocks, "".join(text), sent)
            message = await _load(message_id)
            if message is None:
                return
        yield sse.done(await render_final(message), len(message.content))
    finally:
        feed.close()
