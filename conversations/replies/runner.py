"""The runner: a bounded pool of threads, each generating one reply from upstream.

A thread claims its message (pending → streaming), streams it from upstream into the live
registry (which hands each piece to the viewers), and always leaves the message final: complete,
error, cancelled or interrupted, with its usage recorded and its HTML rendered once. A request
is retried only while the provider has not accepted it; what it refused before any text is
charged nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .. import catalog, crypto, payload, rendering, upstream
from .. import text as text_rules
from .. import usage as usage_records
from ..models import Message
from . import flusher, leases, registry, watchdog
from .registry import LiveReply
from .relay import get_relay

logger = logging.getLogger(__name__)

MAX_RETRIES = 2
RETRY_BASE_SECONDS = 0.5
MAX_RETRY_AFTER = 20.0  # a longer Retry-After is reported to the member instead of waited out
LAST_USED_PRECISION = timedelta(minutes=1)

_executor: ThreadPoolExecutor | None = None

# Sent once a finished reply's usage and cost are stored (``message``: the reply, with its
# conversation and key), outside the final transaction: budget alerts listen.
reply_accounted = Signal()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.CHATSITE_MAX_GENERATIONS, thread_name_prefix="generation"
        )
    flusher.ensure_running()
    watchdog.ensure_running()
    return _executor


def has_capacity() -> bool:
    """Return whether this process can start another reply now."""
    return registry.count() < settings.CHATSITE_MAX_GENERATIONS


BUSY_MESSAGE = gettext_noop("The server is busy writing other replies. Try again in a moment.")


def start(message_id: int) -> None:
    """Generate the reply ``message_id`` (a pending assistant message) in this process.

    Called while the member's request is served: what the reply's failure says to them is
    written in the language their page speaks."""
    reply = LiveReply(message_id)
    reply.language = translation.get_language()
    relay = get_relay()
    reply.relay = relay if relay.carries_text else None
    full = not has_capacity()
    if not registry.add(reply):
        return
    if full:  # raced past the check in the service: say so at once, never wait unseen
        # Not in the pool: it is full, and the refusal would wait for a reply to end.
        threading.Thread(target=_refuse_busy, args=(reply,), name="busy-refusal",
                         daemon=True).start()
        return
    _pool().submit(_run, reply)


def _refuse_busy(reply: LiveReply) -> None:
    try:
        with translation.override(reply.language):
            _finish(reply, Message.Status.ERROR, error={
                "error_message": _(BUSY_MESSAGE), "error_type": "busy",
            })
    finally:
        registry.remove(reply.message_id)
        reply.end()
        connection.close()


def retry_delay(error: upstream.UpstreamError, attempt: int) -> float | None:
    """Return how long to wait before retrying after ``error``, or None not to retry.

    Only failures before the provider accepted the request are retried (the caller checks
    that): connection errors, 5xx and rate limits, at most ``MAX_RETRIES`` times, honouring
    ``Retry-After``. A used-up quota is never retried: waiting does not refill it.
    """
    if not error.retryable or attempt >= MAX_RETRIES:
        return None
    if error.retry_after is not None:
        return error.retry_after if error.retry_after <= MAX_RETRY_AFTER else None
    return RETRY_BASE_SECONDS * (2**attempt) * random.uniform(0.8, 1.2)


def _run(reply: LiveReply) -> None:
    close_old_connections()
    try:
        with translation.override(reply.language):
            _run_in_language(reply)
    finally:
        registry.remove(reply.message_id)
        reply.end()
        connection.close()


def _run_in_language(reply: LiveReply) -> None:
    try:
        _generate(reply)
    except Exception:
        logger.exception("Reply %s failed unexpectedly", reply.message_id)
        _finish(reply, Message.Status.ERROR, error={
            "error_message": _("Something went wrong on this server while writing the reply. "
                               "Retry, or ask an administrator to look at the logs."),
            "error_type": "internal",
        })


def _generate(reply: LiveReply) -> None:
    claimed = leases.with_db_retries(
        lambda: Message.objects.filter(
            pk=reply.message_id, status=Message.Status.PENDING, cancel_requested=False
        ).update(status=Message.Status.STREAMING, lease_expires_at=leases.expires()),
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


def _stream(reply: LiveReply, credentials: crypto.Credentials, message: Message) -> None:
    spec = catalog.spec_for(message.api_key, message.model)
    request = payload.request_for(message, spec)
    reply.prompt_estimate = request.prompt_estimate
    reply.prices = usage_records.Prices.of(spec)
    if request.omitted:  # the page tells the member, from now on and after any reload
        message.context_omitted = request.omitted
        leases.with_db_retries(
            lambda: Message.objects.filter(pk=message.pk).update(context_omitted=request.omitted),
            what=f"noting the context of reply {reply.message_id}")
    # A reply can stream for minutes: hold no database connection meanwhile (the flusher
    # writes the text; _finish opens a connection again).
    connection.close()
    finish_reason = ""
    usage: upstream.Usage | None = None
    attempt = 0
    while True:
        stream = upstream.ChatStream(credentials, model=message.model, messages=request.messages,
                                     extra=request.parameters,
                                     first_token_timeout=spec.first_token_timeout)
        reply.stream = stream
        if reply.cancelled.is_set():
            _finish(reply, Message.Status.CANCELLED, message=message)
            return
        reply.upstream_called = True
        try:
            for event in stream:
                if isinstance(event, upstream.TextDelta):
                    reply.append(event.text)
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
            _finish(reply, Message.Status.ERROR, message=message, finish_reason=finish_reason,
                    usage=usage, error={
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
    _finish(reply, status, message=message, finish_reason=finish_reason, usage=usage)


def _finish(
    reply: LiveReply, status: str, *, message: Message | None = None, finish_reason: str = "",
    usage: upstream.Usage | None = None, error: dict | None = None,
) -> None:
    """Write the reply's final state and account its tokens, once.

    ``message`` is the reply as loaded when it was claimed (with its conversation and key): its
    usage is accounted from it, with the final fields, instead of reading it again. Without it,
    or if the database refuses that write, the reply is read afresh."""
    with reply.lock:
        reply.final = True
    content = text_rules.clean(reply.text())  # cleaned at the edge already; this is the net
    fields = {
        "status": status,
        "content": content,
        # Rendered once here, kept: a page shows a finished reply without rendering it again.
        "content_html": rendering.render_markdown(content) if content else "",
        "html_version": rendering.VERSION,
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
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            audio_tokens=usage.audio_tokens,
            image_tokens=usage.image_tokens,
        )
    elif reply.refused:
        # A 4xx/5xx or a refused connection before any text bills nothing: zero, not an
        # estimate of a prompt the provider never took.
        fields.update(prompt_tokens=0, completion_tokens=0, total_tokens=0)

    charged = reply.upstream_called and not (reply.refused and usage is None)

    @transaction.atomic
    def write(accounted: Message | None) -> Message | None:
        charges = {}
        if charged:
            if accounted is None:
                accounted = Message.objects.select_related("conversation", "api_key").get(
                    pk=reply.message_id
                )
            for name, value in fields.items():
                setattr(accounted, name, value)
            # Estimated tokens, cost and the prices used: stored in the same final write.
            charges = usage_records.charge(accounted, reply.prompt_estimate, reply.prices)
        finished = Message.objects.filter(
            pk=reply.message_id, status__in=Message.UNFINISHED
        ).update(**fields, **charges)
        if not finished or not charged:
            return None
        usage_records.record(accounted, reply.prompt_estimate)
        _mark_key_used(accounted.api_key)
        return accounted

    try:
        accounted = leases.with_db_retries(lambda: write(message),
                                           what=f"finishing reply {reply.message_id}")
    except IntegrityError:
        # The key or the team was deleted while the reply was written, and its usage row named
        # it (checked when the transaction commits): account the reply as it is stored now.
        accounted = leases.with_db_retries(lambda: write(None),
                                           what=f"finishing reply {reply.message_id}")
    except (DatabaseError, ValueError):
        # Text is cleaned where it enters, so this should not happen; if the database still
        # refuses a value, store it cleaned rather than lose the reply.
        logger.exception("Finishing reply %s failed; writing it again cleaned", reply.message_id)
        for name, value in fields.items():
            if isinstance(value, str):
                fields[name] = text_rules.clean(value)
        accounted = leases.with_db_retries(lambda: write(None),
                                           what=f"finishing reply {reply.message_id} (cleaned)")
    if accounted is not None:
        for receiver, error in reply_accounted.send_robust(sender=Message, message=accounted):
            if isinstance(error, Exception):
                logger.error("%r failed after reply %s: %r", receiver, reply.message_id, error)


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


