"""A provider that misbehaves costs the member a clear message, never a hung bubble or a bill.

- a provider that never starts, or stops in the middle, is hung up on at a deadline (keep-alive
  comments do not hold the reply open), and the message says which deadline passed;
- a request the provider accepted is never sent again by itself (it may have been billed);
- a stream that says ``finish_reason: "stop"`` and then closes without ``[DONE]`` is complete;
- a request the provider refused (4xx/5xx, refused connection) before any text is charged
  nothing against budgets; estimates only count text that arrived.
"""

from __future__ import annotations

import socket

import pytest

from conftest import wait_for
from conversations import usage
from conversations.models import UsageDaily, UserLimit
from conversations.replies import runner
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, send_message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def short_deadlines(settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 1.0
    settings.CHATSITE_IDLE_TIMEOUT = 1.0
    settings.CHATSITE_FLUSH_INTERVAL = 0.05
    return settings


def test_a_provider_that_only_sends_keep_alives_is_hung_up_on_at_the_first_token_deadline(
    alice, api_key, fake_upstream, short_deadlines
):
    # Pings every 20 ms would keep a byte-level read timeout from ever firing.
    fake_upstream.queue(Scenario(first_token_delay=30, pings=True))
    reply = finished_reply(send_message(alice, api_key), timeout=10)

    assert reply.status == "error" and reply.error_type == "timeout"
    assert "did not start the reply within 1 seconds" in reply.error_message
    assert fake_upstream.wait_for_disconnect(timeout=5)
    assert len(fake_upstream.chat_requests) == 1  # accepted (200): never sent again by itself


def test_a_provider_that_falls_silent_mid_reply_keeps_the_text_and_says_so(
    alice, api_key, fake_upstream, short_deadlines
):
    fake_upstream.queue(Scenario(tokens=["Half", " of it", " and more"], hang_after=2,
                                 pings=True))
    reply = finished_reply(send_message(alice, api_key), timeout=10)

    assert reply.status == "error" and reply.content == "Half of it"
    assert "sent nothing for 1 seconds" in reply.error_message
    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "Half of it" in page and "Retry" in page
    assert len(fake_upstream.chat_requests) == 1


def test_a_waiting_reply_shows_that_it_waits_and_can_be_stopped(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(hang_after=0))
    reply = send_message(alice, api_key)
    wait_for(lambda: fake_upstream.chat_requests)

    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "Waiting for the model" in page
    assert "data-waiting-since" in page  # the page counts the seconds from there
    assert alice.post(f"/m/{reply.pk}/stop").status_code == 302
    assert finished_reply(reply).status == "cancelled"


def test_a_finish_reason_then_a_closed_connection_is_a_complete_reply(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["All", " of", " it"], send_done=False,
                                 drop_after_finish=True))
    reply = finished_reply(send_message(alice, api_key))

    assert reply.status == "complete" and reply.content == "All of it"
    assert reply.finish_reason == "stop" and not reply.error_message


@pytest.mark.parametrize("refusal", [
    Scenario(status=400, error_message="Unsupported parameter"),
    Scenario(status=401),
    Scenario(status=403),
    Scenario(status=429, error_code="insufficient_quota"),
])
def test_a_request_the_provider_refused_is_not_charged(
    alice, user, api_key, fake_upstream, refusal
):
    UserLimit.objects.create(user=user, monthly_token_budget=1_000)
    fake_upstream.queue(refusal)
    reply = finished_reply(send_message(alice, api_key, "x" * 2_000))  # ~500 tokens of prompt

    assert reply.status == "error"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.total_tokens) == (0, 0, 0)
    assert usage.tokens_this_month(user=user) == 0
    assert not UsageDaily.objects.filter(total_tokens__gt=0).exists()


def test_server_errors_that_persist_are_not_charged_either(
    alice, user, api_key, fake_upstream, monkeypatch
):
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    fake_upstream.queue(*[Scenario(status=503)] * 3)
    reply = finished_reply(send_message(alice, api_key, "x" * 2_000))

    assert reply.status == "error" and len(fake_upstream.chat_requests) == 3
    assert usage.tokens_this_month(user=user) == 0


def test_a_refused_connection_is_not_charged(alice, user, make_api_key, monkeypatch):
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = make_api_key(base_url=f"http://127.0.0.1:{port}/v1", default_model="gpt-4o-mini")
    reply = finished_reply(send_message(alice, key, "x" * 2_000))

    assert reply.status == "error" and reply.error_type == "connection"
    assert reply.total_tokens == 0 and usage.tokens_this_month(user=user) == 0


def test_text_that_arrived_before_a_failure_is_still_counted(alice, user, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["Some", " text"], send_usage=False, drop_after=2))
    reply = finished_reply(send_message(alice, api_key, "Question"))

    assert reply.status == "error" and reply.content == "Some text"
    assert reply.usage_estimated and reply.completion_tokens > 0
    assert usage.tokens_this_month(user=user) == reply.total_tokens > 0
