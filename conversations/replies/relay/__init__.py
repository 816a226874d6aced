"""Relay backends: how viewers in one process follow replies generated in another.

Chosen by ``settings.CHATSITE_RELAY`` (a module path, the way Django chooses
``SESSION_ENGINE``); each module defines ``Relay``:

- ``conversations.replies.relay.inprocess``: one process; nothing crosses processes;
- ``conversations.replies.relay.database``: poll the database (several workers, no Redis);
- ``conversations.replies.relay.redis``: Redis pub/sub (several workers or machines).

The database relay is also every other backend's fallback: while Redis is unreachable, viewers
follow the database.
"""

from __future__ import annotations

import threading
from importlib import import_module

from django.conf import settings

from .base import Fanout

_relay: Fanout | None = None
_poller: Fanout | None = None
_lock = threading.Lock()


def get_relay() -> Fanout:
    """Return this process's relay backend."""
    global _relay
    if _relay is None:
        with _lock:
            if _relay is None:
                _relay = import_module(settings.CHATSITE_RELAY).Relay()
    return _relay


def get_poller() -> Fanout:
    """Return this process's database relay (the configured one, if it is the database)."""
    global _poller
    relay = get_relay()
    if relay.__module__.endswith(".database"):
        return relay
    if _poller is None:
        with _lock:
            if _poller is None:
                _poller = import_module(f"{__name__}.database").Relay()
    return _poller


def use(relay: Fanout | None) -> None:
    """Replace this process's relay (tests); None: build it from settings again."""
    global _relay, _poller
    with _lock:
        _relay, _poller = relay, None
