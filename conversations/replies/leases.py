"""Leases: a reply is claimed by the process that generates it for a while, renewed as it lives.

A process that dies stops renewing; once the lease has run out, the reply is *stale*: pages show
it as interrupted by reading ``is_stale`` (they never write), and only the watchdog
(``reap_stale``) marks it interrupted in the database. Also here: the retry of a write that met a
busy database.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ..models import Message

logger = logging.getLogger(__name__)

# A busy database (SQLite's single writer past its busy timeout, a PostgreSQL deadlock or
# serialization failure) is worth a few more tries before a finished reply is called failed.
DB_ATTEMPTS = 4
DB_RETRY_SECONDS = 0.2
TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def duration() -> timedelta:
    """How long a reply stays claimed by its process without a renewal."""
    return timedelta(seconds=settings.CHATSITE_LEASE_SECONDS)


def renew_every() -> float:
    return settings.CHATSITE_LEASE_SECONDS / 6


def expires() -> timezone.datetime:
    return timezone.now() + duration()


def _transient(exc: OperationalError) -> bool:
    return (
        "database is locked" in str(exc)
        or getattr(exc.__cause__, "sqlstate", None) in TRANSIENT_SQLSTATES
    )


def with_db_retries(write, *, what: str):
    """Run ``write()`` (one transaction), again after a short pause if the database was busy."""
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return write()
        except OperationalError as exc:
            if attempt == DB_ATTEMPTS or not _transient(exc):
                raise
            logger.warning("Database busy while %s (attempt %s): %s; retrying", what, attempt, exc)
            time.sleep(DB_RETRY_SECONDS * attempt)


INTERRUPTED_MESSAGE = gettext_noop(
    "The server stopped while writing this reply. The text so far is kept; retry to get a "
    "complete reply."
)


def reap_stale() -> int:
    """Mark replies whose generating process is gone as interrupted; return how many.

    Only the watchdog calls this: a read first, so that an idle site takes no write lock."""
    stale = Message.objects.filter(status__in=Message.UNFINISHED,
                                   lease_expires_at__lt=timezone.now())
    if not stale.exists():
        return 0
    return stale.update(
        status=Message.Status.INTERRUPTED,
        error_message=_(INTERRUPTED_MESSAGE),
        error_type="interrupted",
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
