"""Redis down: the chat keeps working, degraded, and says so.

With ``REDIS_URL`` pointing at a Redis that does not answer, pages and sending work (model
lists and the per-minute limit are kept per process meanwhile), replies finish, and
``/healthz`` says what is degraded. (Streams following a reply from another process through the
database instead are in test_redis_relay.py.)
"""

from __future__ import annotations

import pytest

from conversations import cache as resilient_cache
from conversations.models import UserLimit
from conversations.replies import relay as relays
from conversations.replies.relay.redis import Relay as RedisRelay
from tests.helpers import finished_reply, send_message

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture
def redis_down(settings, monkeypatch):
    settings.REDIS_URL = NOWHERE
    settings.CACHES = {"default": {
        "BACKEND": "conversations.cache.ResilientRedisCache", "LOCATION": NOWHERE,
        "KEY_PREFIX": "chatsite-test", "OPTIONS": {"socket_connect_timeout": 1},
    }}
    monkeypatch.setattr(resilient_cache, "_down_until", 0.0)
    relays.use(RedisRelay(NOWHERE))
    yield
    relays.use(None)


def test_pages_and_sending_keep_working_and_replies_finish(alice, api_key, fake_upstream,
                                                          redis_down):
    assert alice.get("/").status_code == 200
    reply = finished_reply(send_message(alice, api_key, "Are you there?"))

    assert reply.status == "complete" and reply.content == "Hello, world!"
    page = alice.get(f"/c/{reply.conversation_id}/")
    assert page.status_code == 200 and "Hello, world!" in page.content.decode()
    assert alice.get("/usage/").status_code == 200


def test_the_per_minute_limit_still_holds_in_this_process(alice, user, api_key, fake_upstream,
                                                         redis_down):
    UserLimit.objects.create(user=user, requests_per_minute=2)
    for text in ("One", "Two"):
        finished_reply(send_message(alice, api_key, text))

    refused = alice.post("/c/new/messages", {"content": "Three",
                                             "model": f"{api_key.pk}:gpt-4o-mini"})
    assert refused.status_code == 400
    assert "at most 2 messages a minute" in refused.content.decode()


def test_healthz_says_what_is_degraded(client, redis_down):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and "redis" in body["degraded"]


def test_healthz_is_ok_when_redis_answers(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    settings.CACHES = {"default": {
        "BACKEND": "conversations.cache.ResilientRedisCache", "LOCATION": settings.REDIS_URL,
        "KEY_PREFIX": "chatsite-test"}}

    assert client.get("/healthz").json() == {"status": "ok"}
