"""The watchdog: the one writer of interrupted replies, and the end of feeds nothing else ends.

Once per keep-alive interval per process: mark replies whose process died as interrupted (a
read first, so an idle site writes nothing), and end the feeds of replies that are final in the
database, for relays that cannot tell (one query for all viewers, not one per viewer).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection

from . import leases
from .daemon import Daemon, pause
from .relay import get_relay

logger = logging.getLogger(__name__)


def _interval() -> float:
    return max(0.2, min(settings.CHATSITE_KEEPALIVE_SECONDS, settings.CHATSITE_LEASE_SECONDS / 2))


def _run() -> None:
    while pause(_interval()):
        try:
            check()
        except Exception:
            logger.exception("Checking replies failed; retrying")
        finally:
            connection.close()


def check() -> None:
    from .. import catalog
    from ..models import Message
    from .feed import End

    leases.reap_stale()
    catalog.refresh_due()
    relay = get_relay()
    if relay.__module__.endswith(".database"):
        return  # the poller sees final replies itself
    watched = relay.watched()
    if not watched:
        return
    unfinished = set(
        Message.objects.filter(pk__in=watched, status__in=Message.UNFINISHED)
        .values_list("pk", flat=True)
    )
    for message_id in set(watched) - unfinished:
        for feed in relay.of(message_id):
            feed.deliver(End())


_daemon = Daemon("reply-watchdog", _run)
ensure_running = _daemon.ensure_running
