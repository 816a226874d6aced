"""The in-process relay: for one process serving everything (the embedded default).

Replies are followed live from the registry of the process that generates them; nothing
crosses processes. A viewer of a reply that no live process here generates (a leftover of a
previous run) is ended by the watchdog once the reply is final or reaped.
"""

from __future__ import annotations

from .base import Fanout


class Relay(Fanout):
    pass
