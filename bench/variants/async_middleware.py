"""chatsite's settings with its two sync-only middlewares replaced by sync-and-async versions.

Django runs a middleware stack that contains a sync-only middleware in sync mode: every request
then crosses into a thread (``sync_to_async``) for the stack and back to the event loop
(``async_to_sync``) for the async stream view. With these two made async-capable, the whole
stack runs on the event loop.
"""

from __future__ import annotations

from chatsite import settings as _base
from chatsite.settings import *  # noqa: F403

_REPLACED = {
    "conversations.middleware.first_run_middleware":
        "bench.variants.middleware.first_run_middleware",
    "conversations.middleware.content_security_policy_middleware":
        "bench.variants.middleware.content_security_policy_middleware",
}
MIDDLEWARE = [_REPLACED.get(name, name) for name in _base.MIDDLEWARE]
