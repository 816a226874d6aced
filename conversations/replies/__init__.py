"""The reply engine: an assistant message generated upstream, apart from any browser.

Services call it through a few verbs, and it imports no service:

- ``start(message_id)``: generate a stored pending reply in this process (bounded: beyond
  ``CHATSITE_MAX_GENERATIONS`` it ends at once as "busy"; ``has_capacity()`` lets a service say
  so before storing anything);
- ``stop(message_id)``: ask it to stop, wherever it is generated;
- ``events(message_id, offset, render_final)``: the event stream a viewer receives;
- ``reap_stale()``: mark replies whose process died as interrupted (the watchdog's job);
- ``reply_accounted``: a signal sent once a finished reply's usage and cost are stored.

Inside, one owner per concept: ``registry`` (a live reply's text and its viewers here),
``runner`` (the bounded pool, retries, the final write), ``flusher`` (appends text, renews
leases, notices Stops and deadlines), ``leases`` (claims and reaping), ``sse`` (the wire
format), ``stream`` (what a viewer receives) and ``relay/`` (one module per backend, chosen by
``CHATSITE_RELAY``).
"""

from __future__ import annotations

import time

from ..models import Message
from . import registry
from .leases import expires as lease_expires
from .leases import reap_stale
from .relay import get_relay
from .runner import BUSY_MESSAGE, has_capacity, reply_accounted, start
from .stream import events

__all__ = ["BUSY_MESSAGE", "events", "has_capacity", "lease_expires", "live", "reap_stale",
           "reply_accounted", "start", "stop", "stop_local", "wait_idle"]


def stop(message_id: int) -> None:
    """Ask reply ``message_id`` to stop, wherever it is being generated."""
    Message.objects.filter(pk=message_id, status__in=Message.UNFINISHED).update(
        cancel_requested=True
    )
    if not stop_local(message_id):
        get_relay().request_stop(message_id)


def stop_local(message_id: int) -> bool:
    """Stop the reply if this process generates it; return whether it does."""
    reply = registry.get(message_id)
    if reply is None:
        return False
    reply.cancel()
    return True


def live() -> list[int]:
    """Return the ids of the replies this process is generating."""
    return [reply.message_id for reply in registry.all_live()]


def wait_idle(timeout: float) -> bool:
    """Wait until this process generates no reply; return whether it got there in time."""
    deadline = time.monotonic() + timeout
    while registry.count():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True

