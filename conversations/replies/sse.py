"""The server-sent events wire format of a reply stream, in one place.

``delta`` events carry the open tail's new text, escaped, and ``block`` events a finished block
of Markdown rendered once (the tail before it is replaced by it); both carry the offset after
them as their ``id`` (what ``Last-Event-ID`` sends back on a reconnect); one ``done`` event carries the final HTML of the
message and closes the EventSource (``sse-close="done"``). Every line of data gets its own
``data:`` field, so text from the model can never end an event early or forge another one.

Events are built as UTF-8 bytes, a delta's text escaped with the standard library's
``html.escape`` (what Django's ``escape`` calls): bytes pass through ``StreamingHttpResponse``
untouched, where a ``str`` would have its charset looked up again for every event.
"""

from __future__ import annotations

from html import escape

RETRY = b"retry: 1000\n\n"
KEEPALIVE = b": keep-alive\n\n"
_LINE_BREAKS = str.maketrans({"\r": "\n"})


def event(name: str, data: str, event_id: int | None = None) -> bytes:
    """Return one SSE event with ``data`` split into ``data:`` lines."""
    head = f"event: {name}\nid: {event_id}\n" if event_id is not None else f"event: {name}\n"
    if "\r" in data:
        data = data.replace("\r\n", "\n").translate(_LINE_BREAKS)
    return (head + "data: " + data.replace("\n", "\ndata: ") + "\n\n").encode()


def delta(text: str, end_offset: int) -> bytes:
    return event("delta", escape(text), end_offset)


def block(html: str, end_offset: int) -> bytes:
    """A finished Markdown block, rendered and sanitized; the open tail before it is done."""
    return event("block", html, end_offset)


def done(html: str, length: int) -> bytes:
    return event("done", html, length)
