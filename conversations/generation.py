"""Running replies: one upstream stream per assistant message, apart from any browser.

``start(message_id)`` queues a reply on this process's pool of generation threads. The thread
claims the message (pending → streaming), streams it from upstream, publishes each piece to the
broker, and always leaves the message final: complete, error, cancelled or interrupted.

Text reaches the database in batches: one flusher thread writes every live reply's text at most
every ``CHATSITE_FLUSH_INTERVAL`` seconds and renews its lease. The same write notices a Stop
asked for by any process (``cancel_requested``). A reply whose process died stops renewing its
lease; ``services.reply_reap_stale`` then marks it interrupted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import (
    DatabaseError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Case, Q, TextField, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from . import crypto, selectors, upstream
from . import text as text_rules
from . import usage as usage_records
from .broker import get_broker
from .models import Message

logger = logging.getLogger(__name__)

MAX_RETRIES = 2
RETRY_BASE_SECONDS = 0.5
MAX_RETRY_AFTER = 20.0  # a longer Retry-After is reported to the member instead of waited out


# A busy database (SQLite's single writer past its busy timeout, a PostgreSQL deadlock or
# serialization failure) is worth a few more tries before a finished reply is called failed.
DB_ATTEMPTS = 4
DB_RETRY_SECONDS = 0.2
TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
LAST_USED_PRECISION = timedelta(minutes=1)


def _transient(exc: OperationalError) -> bool:
    return (
        "database is locked" in str(exc)
        or getattr(exc.__cause__, "sqlstate", None) in TRANSIENT_SQLSTATES
    )


def _with_db_retries(write, *, what: str):
    """Run ``write()`` (one transaction), again after a short pause if the database was busy."""
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return write()
        except OperationalError as exc:
            if attempt == DB_ATTEMPTS or not _transient(exc):
                raise
            logger.warning("Database busy while %s (attempt %s): %s; retrying", what, attempt, exc)
            time.sleep(DB_RETRY_SECONDS * attempt)


def lease() -> timedelta:
    """How long a reply stays claimed by its process without a renewal."""
    return timedelta(seconds=settings.CHATSITE_LEASE_SECONDS)


def lease_renew_seconds() -> float:
    return settings.CHATSITE_LEASE_SECONDS / 6


class Reply:
    """The live state of one reply in this process."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.lock = threading.Lock()
        self.parts: list[str] = []
        self.dirty = False
        self.final = False
        self.cancelled = threading.Event()
        self.stream: upstream.ChatStream | None = None
        self.lease_renewed = time.monotonic()
        self.upstream_called = False  # whether a request was sent upstream
        self.refused = False  # the provider refused it before any text: nothing to charge
        self.prompt_estimate = 0

    def append(self, text: str) -> None:
        with self.lock:
            self.parts.append(text)
            self.dirty = True

    def has_text(self) -> bool:
        with self.lock:
            return bool(self.parts)

    def text(self) -> str:
        with self.lock:
            joined = "".join(self.parts)
            self.parts = [joined] if joined else []
            return joined

    def cancel(self) -> None:
        self.cancelled.set()
        stream = self.stream
        if stream is not None:
            stream.close()


_replies: dict[int, Reply] = {}
_replies_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_flusher: threading.Thread | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor, _flusher
    with _replies_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.CHATSITE_MAX_GENERATIONS, thread_name_prefix="generation"
            )
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_forever, name="reply-flusher", daemon=True)
            _flusher.start()
        return _executor


def start(message_id: int) -> None:
    """Queue the reply ``message_id`` (a pending assistant message) for generation."""
    reply = Reply(message_id)
    with _replies_lock:
        if message_id in _replies:
            return
        _replies[message_id] = reply
    get_broker().open(message_id)
    _pool().submit(_run, reply)


def cancel_local(message_id: int) -> bool:
    """Stop the reply if this process generates it; return whether it did."""
    with _replies_lock:
        reply = _replies.get(message_id)
    if reply is None:
        return False
    reply.cancel()
    return True


def _run(reply: Reply) -> None:
    close_old_connections()
    try:
        _generate(reply)
    except Exception:
        logger.exception("Reply %s failed unexpectedly", reply.message_id)
        _finish(reply, Message.Status.ERROR, error={
            "error_message": _("Something went wrong on this server while writing the reply. "
                               "Retry, or ask an administrator to look at the logs."),
            "error_type": "internal",
        })
    finally:
        with _replies_lock:
            _replies.pop(reply.message_id, None)
        get_broker().close(reply.message_id)
        connection.close()


def _generate(reply: Reply) -> None:
    claimed = _with_db_retries(
        lambda: Message.objects.filter(
            pk=reply.message_id, status=Message.Status.PENDING, cancel_requested=False
        ).update(status=Message.Status.STREAMING, lease_expires_at=timezone.now() + lease()),
        what=f"claiming reply {reply.message_id}",
    )
    message = Message.objects.select_related("conversation", "api_key").get(pk=reply.message_id)
    if not claimed:
        if message.status == Message.Status.PENDING:  # Stop came before the first byte
            _finish(reply, Message.Status.CANCELLED)
        return
    key = message.api_key
    if key is None or not key.is_active:
        _finish(reply, Message.Status.ERROR, error={
            "error_message": _("No active API key is set up for this chat. Ask an administrator "
                               "to add one, then retry."),
            "error_type": "no_key",
        })
        return
    try:
        credentials = crypto.credentials_for(key)
    except crypto.DecryptionError as exc:
        logger.error("API key %r (id %s) cannot be decrypted: %s", key.name, key.pk, exc)
        _finish(reply, Message.Status.ERROR, error={
            "error_message": _("The API key for this chat cannot be unlocked on this server. "
                               "Ask an administrator to check the encryption key."),
            "error_type": "decryption",
        })
        return
    _stream(reply, credentials, message)


def retry_delay(error: upstream.UpstreamError, attempt: int) -> float | None:
    """Return how long to wait before retrying after ``error``, or None not to retry.

    Only failures before the first token are retried (the caller checks that): connection
    errors, timeouts, 5xx and rate limits, at most ``MAX_RETRIES`` times, honouring
    ``Retry-After``. A used-up quota is never retried: waiting does not refill it.
    """
    if not error.retryable or attempt >= MAX_RETRIES:
        return None
    if error.retry_after is not None:
        return error.retry_after if error.retry_after <= MAX_RETRY_AFTER else None
    return RETRY_BASE_SECONDS * (2**attempt) * random.uniform(0.8, 1.2)


def _stream(reply: Reply, credentials: crypto.Credentials, message: Message) -> None:
    context = selectors.context_for(message)
    reply.prompt_estimate = usage_records.estimate_prompt_tokens(context)
    # A reply can stream for minutes: hold no database connection meanwhile (the flusher
    # writes the text; _finish opens a connection again).
    connection.close()
    finish_reason = ""
    usage: upstream.Usage | None = None
    attempt = 0
    while True:
        stream = upstream.ChatStream(credentials, model=message.model, messages=context)
        reply.stream = stream
        if reply.cancelled.is_set():
            _finish(reply, Message.Status.CANCELLED)
            return
        reply.upstream_called = True
        try:
            for event in stream:
                if isinstance(event, upstream.TextDelta):
                    reply.append(event.text)
                    get_broker().publish(reply.message_id, event.text)
                elif isinstance(event, upstream.Finish):
                    finish_reason = event.reason
                elif isinstance(event, upstream.Usage):
                    usage = event
                if reply.cancelled.is_set():
                    break
            break
        except upstream.UpstreamError as exc:
            if reply.cancelled.is_set():
                break
            # Only a request the provider refused is sent again: once it accepted one (and may
            # bill it), or text has arrived, the member decides with Retry.
            delay = None if (reply.has_text() or exc.accepted) else retry_delay(exc, attempt)
            logger.warning(
                "Upstream error on reply %s with API key %r (id %s), attempt %s: %s; %s%s",
                reply.message_id, credentials.key_name, message.api_key_id, attempt + 1, exc,
                exc.detail, f"; retrying in {delay:.1f}s" if delay is not None else "",
            )
            if delay is not None:
                attempt += 1
                if reply.cancelled.wait(delay):
                    break
                continue
            reply.refused = not (exc.accepted or reply.has_text())
            _finish(reply, Message.Status.ERROR, finish_reason=finish_reason, usage=usage, error={
                "error_message": exc.message,
                "error_detail": exc.detail,
                "error_status": exc.status,
                "error_type": exc.kind,
                "error_code": (exc.code or exc.error_type)[:100],
            })
            return
        finally:
            stream.close()
    status = Message.Status.CANCELLED if reply.cancelled.is_set() else Message.Status.COMPLETE
    _finish(reply, status, finish_reason=finish_reason, usage=usage)


def _finish(
    reply: Reply, status: str, *, finish_reason: str = "",
    usage: upstream.Usage | None = None, error: dict | None = None,
) -> None:
    """Write the reply's final state and account its tokens, once."""
    with reply.lock:
        reply.final = True
    fields = {
        "status": status,
        "content": reply.text(),
        "finish_reason": finish_reason,
        "finished_at": timezone.now(),
        "updated_at": timezone.now(),
        "lease_expires_at": None,
        **(error or {}),
    }
    if usage is not None:
        fields.update(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )
    elif reply.refused:
        # A 4xx/5xx or a refused connection before any text bills nothing: zero, not an
        # estimate of a prompt the provider never took.
        fields.update(prompt_tokens=0, completion_tokens=0, total_tokens=0)

    @transaction.atomic
    def write() -> None:
        finished = Message.objects.filter(
            pk=reply.message_id, status__in=Message.UNFINISHED
        ).update(**fields)
        if not finished or not reply.upstream_called or (reply.refused and usage is None):
            return
        message = Message.objects.select_related("conversation", "api_key").get(
            pk=reply.message_id
        )
        usage_records.record(message, reply.prompt_estimate)
        _mark_key_used(message.api_key)

    try:
        _with_db_retries(write, what=f"finishing reply {reply.message_id}")
    except (DatabaseError, ValueError):
        # Text is cleaned where it enters, so this should not happen; if the database still
        # refuses a value, store it cleaned rather than lose the reply.
        logger.exception("Finishing reply %s failed; writing it again cleaned", reply.message_id)
        for name, value in fields.items():
            if isinstance(value, str):
                fields[name] = text_rules.clean(value)
        _with_db_retries(write, what=f"finishing reply {reply.message_id} (cleaned)")


def _mark_key_used(key) -> None:
    """Record when the key was last used, to the minute: in the reply's final transaction, and
    not at all when it was recorded less than a minute ago, so that the replies of a busy key do
    not each write its row (SQLite has one writer; on PostgreSQL they would queue on the row)."""
    if key is None:
        return
    now = timezone.now()
    if key.last_used_at is not None and key.last_used_at >= now - LAST_USED_PRECISION:
        return
    type(key).objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_PRECISION), pk=key.pk
    ).update(last_used_at=now)


def _flush_forever() -> None:
    while True:
        time.sleep(settings.CHATSITE_FLUSH_INTERVAL)
        try:
            if live_replies():
                flush()
            else:
                connection.close()  # idle: hold no database connection
        except Exception:
            logger.exception("Flushing streamed replies failed; retrying")
            connection.close()


FLUSH_BATCH = 200  # replies per UPDATE statement


def flush() -> None:
    """Hang up on replies past a deadline, write the text of every live reply that changed,
    renew leases, and notice Stops.

    One UPDATE per batch of replies (a CASE on the id), not one per reply: on a busy process
    every statement waits for the GIL again, and on SQLite the single writer is held meanwhile.
    A batch the database refuses is written again reply by reply, so that one reply's write can
    never cost another its text or its lease.
    """
    with _replies_lock:
        replies = list(_replies.values())
    if not replies:
        return
    now = time.monotonic()
    texts: dict[int, str] = {}
    for reply in replies:
        stream = reply.stream
        if stream is not None and not reply.final:
            stream.check_deadlines(now)
        with reply.lock:
            if reply.final or not (
                reply.dirty or now - reply.lease_renewed >= lease_renew_seconds()
            ):
                continue
            reply.dirty = False
        reply.lease_renewed = now
        texts[reply.message_id] = reply.text()
    pending = list(texts.items())
    for start in range(0, len(pending), FLUSH_BATCH):
        batch = pending[start:start + FLUSH_BATCH]
        try:
            _write_texts(batch)
        except (DatabaseError, ValueError):  # ValueError: a value the driver cannot encode
            logger.warning("Writing %s streamed replies at once failed; writing them one by one",
                           len(batch), exc_info=True)
            for item in batch:
                _write_text_alone(*item)
    # A Stop pressed in another process only sets the flag: look for it on every live reply,
    # stalled ones included, so that it takes effect within one flush interval.
    stopped = set(Message.objects.filter(
        pk__in=[reply.message_id for reply in replies], cancel_requested=True
    ).values_list("pk", flat=True))
    for reply in replies:
        if reply.message_id in stopped and not reply.cancelled.is_set():
            reply.cancel()


def _write_texts(batch: list[tuple[int, str]]) -> None:
    Message.objects.filter(
        pk__in=[pk for pk, _text in batch], status__in=Message.UNFINISHED,
        cancel_requested=False,
    ).update(
        content=Case(*(When(pk=pk, then=Value(text)) for pk, text in batch),
                     output_field=TextField()),
        lease_expires_at=timezone.now() + lease(),
    )


def _write_text_alone(message_id: int, content: str) -> None:
    """Write one reply's text; if the database refuses it, still renew its lease."""
    try:
        _write_texts([(message_id, text_rules.clean(content))])
    except (DatabaseError, ValueError):
        logger.exception("Writing the text of reply %s failed; its lease is renewed and the "
                         "final write will try again", message_id)
        try:
            Message.objects.filter(pk=message_id, status__in=Message.UNFINISHED).update(
                lease_expires_at=timezone.now() + lease()
            )
        except DatabaseError:
            logger.exception("Renewing the lease of reply %s failed", message_id)


def live_replies() -> list[int]:
    """Return the ids of the replies this process is generating or has queued."""
    with _replies_lock:
        return list(_replies)


def wait_idle(timeout: float) -> bool:
    """Wait until this process generates no reply; return whether it got there in time."""
    deadline = time.monotonic() + timeout
    while live_replies():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
