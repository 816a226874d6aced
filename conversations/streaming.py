"""Server-sent events that tail one reply, for htmx's SSE extension.

A stream starts at an offset into the reply (``Last-Event-ID`` on a reconnect, or the length of
the text the page already shows), sends what the reply has beyond it as ``delta`` events whose
``id`` is the offset after them, and ends with one ``done`` event carrying the final HTML of the
message, which closes the EventSource (``sse-close="done"``). The stream only reads: a reconnect
never starts a second upstream call.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.db import connection
from django.utils.html import escape

from .broker import End, Lost, get_broker
from .models import Message

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def event(name: str, data: str, event_id: int | None = None) -> str:
    """Return one SSE event. Every line of ``data`` gets its own ``data:`` field, so text from
    the model cannot end the event early or forge another one."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in _LINE_BREAKS.split(data))
    return "\n".join(lines) + "\n\n"


def delta_event(text: str, end_offset: int) -> str:
    return event("delta", escape(text), end_offset)


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


async def reply_events(
    message_id: int, offset: int, render_final: Callable[[Message], Awaitable[str]]
) -> AsyncIterator[str]:
    """Yield the SSE events of reply ``message_id`` from ``offset`` until it is final."""
    release_request_thread()
    sent = offset
    keepalive = settings.CHATSITE_KEEPALIVE_SECONDS
    broker = get_broker()
    yield "retry: 1000\n\n"
    # Subscribe before reading the database: the reply cannot end unseen in between.
    subscription = broker.subscribe(message_id)
    try:
        message = await _load(message_id)
        if message is None:
            return
        if message.is_unfinished:
            known = max(subscription.snapshot, message.content, key=len)
            if len(known) > sent:
                yield delta_event(known[sent:], len(known))
                sent = len(known)
            ended = False
            while not ended:
                batch = await subscription.get_batch(keepalive)
                if not batch:
                    yield ": keep-alive\n\n"
                    continue
                text = []
                for item in batch:
                    if isinstance(item, End):
                        ended = True
                        break
                    if isinstance(item, Lost) or item.offset > sent:
                        # The relay lost its connection, or something in it: follow the
                        # database instead (it resends from the start; overlaps are dropped).
                        subscription.close()
                        subscription = broker.poller.subscribe(message_id)
                        break
                    end = item.offset + len(item.text)
                    if end > sent:
                        text.append(item.text[sent - item.offset:])
                        sent = end
                if text:
                    yield delta_event("".join(text), sent)
            message = await _load(message_id)
            if message is None:
                return
        yield event("done", await render_final(message), len(message.content))
    finally:
        subscription.close()
