"""Trusted addresses only: a forwarded client address counts only when a proxy the operator
named (``CHATSITE_TRUSTED_PROXIES``) sent it; otherwise the peer's own address counts, so login
throttling cannot be dodged by sending a new ``X-Forwarded-For`` with every guess."""

from __future__ import annotations

import pytest
import requests
from django.test import RequestFactory

from conftest import PASSWORD
from conversations.network import client_address, trusted_proxy_middleware

pytestmark = pytest.mark.django_db

LOCKED = 429  # AXES_HTTP_RESPONSE_CODE


def log_in(client, password: str, peer: str, forwarded: str):
    return client.post("/accounts/login/", {"username": "alice", "password": password},
                       REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)


def test_guesses_from_an_untrusted_peer_lock_the_account_whatever_address_each_forwards(
    client, user, settings
):
    settings.CHATSITE_TRUSTED_PROXIES = []
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong", "203.0.113.7", f"198.51.100.{n}")

    response = log_in(client, PASSWORD, "203.0.113.7", "198.51.100.250")

    assert response.status_code == LOCKED
    assert "sessionid" not in response.cookies


def test_behind_a_trusted_proxy_each_client_counts_by_its_own_address(client, user, settings):
    settings.CHATSITE_TRUSTED_PROXIES = ["127.0.0.1"]
    for n in range(settings.AXES_FAILURE_LIMIT):
        # A client behind the proxy adds its own header; nginx appends the real address.
        log_in(client, "wrong", "127.0.0.1", f"10.9.9.{n}, 198.51.100.9")

    assert log_in(client, PASSWORD, "127.0.0.1", "198.51.100.9").status_code == LOCKED
    assert log_in(client, PASSWORD, "127.0.0.1", "198.51.100.10").status_code == 302


def test_the_real_server_does_not_believe_a_forwarded_address_either(live_url, user, settings):
    settings.CHATSITE_TRUSTED_PROXIES = []  # the test server is reached from 127.0.0.1 directly
    session = requests.Session()
    session.get(f"{live_url}/accounts/login/", timeout=10)
    statuses = []
    for n in range(settings.AXES_FAILURE_LIMIT + 1):
        password = PASSWORD if n == settings.AXES_FAILURE_LIMIT else "wrong"
        response = session.post(f"{live_url}/accounts/login/", data={
            "username": "alice", "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        }, headers={"X-Forwarded-For": f"198.51.100.{n}", "Referer": f"{live_url}/"},
            allow_redirects=False, timeout=10)
        statuses.append(response.status_code)

    assert statuses[-1] == LOCKED, statuses


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # untrusted peer: its own address
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client's own entry is ignored
    ("127.0.0.1", "198.51.100.1, 10.0.0.2", "198.51.100.1"),  # two trusted proxies in a row
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
])
def test_client_address_reads_forwarded_for_from_the_right_past_trusted_proxies(
    settings, peer, forwarded, expected
):
    settings.CHATSITE_TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    assert client_address(peer, forwarded) == expected


def test_forwarded_proto_from_an_untrusted_peer_does_not_make_a_request_secure(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    middleware = trusted_proxy_middleware(lambda request: request.is_secure())
    factory = RequestFactory()

    settings.CHATSITE_TRUSTED_PROXIES = []
    assert middleware(factory.get("/", REMOTE_ADDR="203.0.113.7",
                                  HTTP_X_FORWARDED_PROTO="https")) is False
    settings.CHATSITE_TRUSTED_PROXIES = ["127.0.0.1"]
    assert middleware(factory.get("/", REMOTE_ADDR="127.0.0.1",
                                  HTTP_X_FORWARDED_PROTO="https")) is True
