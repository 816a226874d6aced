"""Who is asking: the client's address, believed from a forwarded header only via a trusted proxy;
and request headers made storable (no NUL bytes).

Any client can send ``X-Forwarded-For``; if it were believed, login throttling (which counts
failures per client address) could be dodged by sending a new address with every guess. So the
peer address of the connection counts, unless the peer is one of
``settings.CHATSITE_TRUSTED_PROXIES``: then ``X-Forwarded-For`` is read from the right, past the
trusted proxies, to the first address no trusted proxy vouches for. From any other peer the
forwarded headers are dropped before anything else reads them.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT", "HTTP_FORWARDED", "HTTP_X_REAL_IP",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def is_trusted_proxy(value: str) -> bool:
    """Return whether ``value`` is the address of a proxy the operator trusts."""
    networks = _networks(tuple(settings.CHATSITE_TRUSTED_PROXIES))
    address = _address(value) if networks else None
    return address is not None and any(address in network for network in networks)


def client_address(peer: str, forwarded_for: str) -> str:
    """Return the client's address for a request from ``peer`` with that ``X-Forwarded-For``."""
    if not is_trusted_proxy(peer):
        return peer
    client = peer
    for hop in reversed([hop for hop in forwarded_for.split(",") if hop.strip()]):
        address = _address(hop)
        if address is None:
            break  # garbage: believe nothing further left
        client = str(address)
        if not is_trusted_proxy(client):
            break
    return client


def trusted_proxy_middleware(get_response):
    """Set ``REMOTE_ADDR`` to the client's address, and drop forwarded headers that no trusted
    proxy sent."""

    def middleware(request):
        meta = request.META
        for name, value in meta.items():
            # A NUL in a header (User-Agent, Accept…) that something stores (django-axes logs
            # failed logins) is refused by PostgreSQL: drop it here, the same on every engine.
            if name.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
                meta[name] = value.replace("\x00", "")
        peer = meta.get("REMOTE_ADDR", "")
        if is_trusted_proxy(peer):
            meta["REMOTE_ADDR"] = client_address(peer, meta.get("HTTP_X_FORWARDED_FOR", ""))
        else:
            for header in FORWARDED_HEADERS:
                meta.pop(header, None)
        return get_response(request)

    return middleware
