"""The flusher: one thread per process that keeps the database and the deadlines in step with
the replies generated here.

Every ``TICK`` seconds it hangs up on providers past a deadline (in memory, no query). Every
``CHATSITE_FLUSH_INTERVAL`` seconds (2 by default) it **appends** what each reply has generated
since its last write — ``content = content || new`` — and renews its lease in the same
statement; a stalled reply only has its lease renewed, every sixth of the lease. So a reply
costs at most one small write per interval, whatever its length. Every ``STOP_SECONDS`` it asks
the relay which replies another process asked to stop.

A batch the database refuses is written again reply by reply (cleaned), and a reply whose text
still cannot be written keeps its lease: one reply's write never costs another its text.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Case, F, TextField, Value, When
from django.db.models.functions import Concat

from .. import text as text_rules
from ..models import Message
from . import leases, registry
from .daemon import Daemon, pause
from .relay import get_relay

logger = logging.getLogger(__name__)

TICK = 0.1
STOP_SECONDS = 0.5
BATCH = 200  # replies per UPDATE statement

def _run() -> None:
    last_stop_check = 0.0
    while pause(TICK):
        try:
            replies = registry.all_live()
            if not replies:
                connection.close()  # idle: hold no database connection
                continue
            now = time.monotonic()
            check_deadlines(replies, now)
            flush(replies, now)
            if now - last_stop_check >= STOP_SECONDS:
                last_stop_check = now
                notice_stops(replies)
        except Exception:
            logger.exception("Flushing streamed replies failed; retrying")
            connection.close()
    connection.close()


def check_deadlines(replies, now: float) -> None:
    for reply in replies:
        stream = reply.stream
        if stream is not None and not reply.final:
            stream.check_deadlines(now)


def flush(replies=None, now: float | None = None, *, force: bool = False) -> None:
    """Append each live reply's new text and renew leases that are due (``force``: all)."""
    replies = registry.all_live() if replies is None else replies
    now = time.monotonic() if now is None else now
    due: list[tuple[registry.LiveReply, int, str]] = []
    for reply in replies:
        if reply.final:
            continue
        waited = now - reply.lease_renewed
        offset, new = reply.unflushed()
        if force or (new and waited >= settings.CHATSITE_FLUSH_INTERVAL) or (
            waited >= leases.renew_every()
        ):
            reply.lease_renewed = now
            due.append((reply, offset, new))
    for start in range(0, len(due), BATCH):
        batch = due[start:start + BATCH]
        try:
            _append(batch)
        except (DatabaseError, ValueError):  # ValueError: a value the driver cannot encode
            logger.warning("Writing %s streamed replies at once failed; writing them one by one",
                           len(batch), exc_info=True)
            for item in batch:
                _append_alone(*item)


def _append(batch) -> None:
    Message.objects.filter(
        pk__in=[reply.message_id for reply, _offset, _new in batch],
        status__in=Message.UNFINISHED, cancel_requested=False,
    ).update(
        content=Case(
            *(When(pk=reply.message_id, then=Concat(F("content"), Value(new)))
              for reply, _offset, new in batch if new),
            default=F("content"), output_field=TextField(),
        ),
        lease_expires_at=leases.expires(),
    )
    for reply, offset, new in batch:
        with reply.lock:
            reply.flushed = max(reply.flushed, offset + len(new))


def _append_alone(reply, offset: int, new: str) -> None:
    """Append one reply's text; if the database refuses it, still renew its lease."""
    try:
        _append([(reply, offset, text_rules.clean(new))])
    except (DatabaseError, ValueError):
        logger.exception("Writing the text of reply %s failed; its lease is renewed and the "
                         "final write will store it", reply.message_id)
        try:
            Message.objects.filter(pk=reply.message_id, status__in=Message.UNFINISHED).update(
                lease_expires_at=leases.expires()
            )
        except DatabaseError:
            logger.exception("Renewing the lease of reply %s failed", reply.message_id)


def notice_stops(replies) -> None:
    """Stop the replies another process asked to stop."""
    stopped = get_relay().stops_requested([reply.message_id for reply in replies])
    for reply in replies:
        if reply.message_id in stopped and not reply.cancelled.is_set():
            reply.cancel()


_daemon = Daemon("reply-flusher", _run)
ensure_running = _daemon.ensure_running
