"""Django's Redis cache, degraded instead of broken while Redis is unreachable.

With ``REDIS_URL`` set, the cache holds model lists and the per-minute limit's slots. If Redis
stops answering, Django's ``RedisCache`` raises on every call, and every page that reads the
cache answers 500. ``ResilientRedisCache`` catches Redis' connection errors and answers from a
cache in this process's memory instead, without asking Redis again for ``RETRY_SECONDS``:

- model lists are cached per process meanwhile;
- the per-minute limit counts per worker process meanwhile, so a member can send up to the limit
  times the number of workers in a minute until Redis is back (chosen over refusing every
  message, or letting every message through);
- ``/healthz`` reports the cache as degraded (``redis_unavailable()``).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0


class OwnKeysMemoryCache(LocMemCache):
    """Django's local-memory cache, without its check of every key against memcached's rules
    (a Python loop over each key's characters): the keys of the ``fragments`` cache are our own
    (ids and hex digests), and a 200-message page reads 200 of them — the check cost more than
    the reads."""

    def validate_key(self, key: str) -> None:
        return


def local():
    """This process's own cache (the ``fragments`` alias settings.py defines), for entries whose
    keys say everything they depend on — rendered messages (``fragments.py``), answers under a
    stamp (``access.py``) — so processes never need to agree; the default cache where a
    deployment's own CACHES left the alias out."""
    return caches["fragments" if "fragments" in settings.CACHES else "default"]


_down_until = 0.0
_down_lock = threading.Lock()


def redis_unavailable() -> bool:
    """Return whether a Redis cache of this process failed in the last ``RETRY_SECONDS``."""
    return time.monotonic() < _down_until


def _mark_down(error: Exception) -> None:
    global _down_until
    with _down_lock:
        if not redis_unavailable():
            logger.warning("Redis is unreachable (%s): caching in this process's memory for "
                           "now", error)
        _down_until = time.monotonic() + RETRY_SECONDS


def _resilient(name: str):
    redis_method = getattr(RedisCache, name)

    def method(self, *args, **kwargs):
        if not redis_unavailable():
            try:
                return redis_method(self, *args, **kwargs)
            except redis.exceptions.RedisError as error:  # ConnectionError, TimeoutError…
                _mark_down(error)
        return getattr(self._fallback, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = redis_method.__doc__
    return method


class ResilientRedisCache(RedisCache):
    """``RedisCache`` that falls back to local memory while Redis is unreachable."""

    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._fallback = LocMemCache(f"chatsite-fallback-{id(self)}", {
            key: value for key, value in params.items() if key in {"KEY_PREFIX", "VERSION"}
        })

    add = _resilient("add")
    get = _resilient("get")
    set = _resilient("set")
    touch = _resilient("touch")
    delete = _resilient("delete")
    get_many = _resilient("get_many")
    has_key = _resilient("has_key")
    incr = _resilient("incr")
    set_many = _resilient("set_many")
    delete_many = _resilient("delete_many")
    clear = _resilient("clear")

    def ping(self) -> bool:
        """Return whether Redis answers now (for the health check)."""
        try:
            return bool(self._cache.get_client(write=True).ping())
        except redis.exceptions.RedisError as error:
            _mark_down(error)
            return False
