"""One member's reply never harms another's: text a database cannot store is cleaned where it
enters, the same on SQLite and PostgreSQL, and one reply's failed write cannot cost another
reply its text or its lease."""

from __future__ import annotations

import types

import pytest

from conftest import read_events, session_for, wait_for
from conversations import replies, upstream
from conversations.models import Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, send_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_model_output_with_nul_and_lone_surrogates_is_stored_as_it_was_shown(
    alice, user, api_key, fake_upstream, live_url
):
    # The reply waits upstream until the stream is open, however slow the machine is.
    fake_upstream.queue(Scenario(tokens=["Nul\x00 here", ", lone \ud800 there", " 😀 fine"],
                                 token_delay=0.05, hang_after=0))
    reply = send_message(alice, api_key)
    session = session_for(live_url, user.username)
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=15) as response:
        fake_upstream.release()
        deltas = [event.data for event in read_events(response) if event.event == "delta"]
    reply = finished_reply(reply)

    assert reply.status == "complete"
    assert reply.content == "Nul here, lone \ufffd there 😀 fine"
    assert "".join(deltas) == reply.content  # what the browser showed is what is stored


def test_one_replys_unstorable_text_never_costs_another_reply_its_text_or_lease(
    client, alice, user, other_user, api_key, fake_upstream, settings, monkeypatch
):
    """Even if unstorable text got past the edge, the flush isolates it to its own reply."""
    settings.CHATSITE_LEASE_SECONDS = 0.6
    settings.CHATSITE_FLUSH_INTERVAL = 0.05
    monkeypatch.setattr(upstream, "text_rules", types.SimpleNamespace(clean=lambda text: text))
    good = [f"good{n} " for n in range(15)]
    bad = ["bad ", "\x00", "\ud800", *[f"bad{n} " for n in range(12)]]
    fake_upstream.queue(Scenario(tokens=bad, token_delay=0.1),
                        Scenario(tokens=good, token_delay=0.1))
    first = send_message(alice, api_key, "First")
    wait_for(lambda: len(fake_upstream.chat_requests) == 1)
    other = client.__class__()
    other.force_login(other_user)
    second = send_message(other, api_key, "Second")

    def both_final() -> bool:
        replies.reap_stale()  # as the watchdog does
        return not Message.objects.filter(pk__in=[first.pk, second.pk],
                                          status__in=Message.UNFINISHED).exists()

    wait_for(both_final, timeout=15)
    first, second = (Message.objects.get(pk=m.pk) for m in (first, second))
    assert second.status == "complete" and second.content == "".join(good)
    assert first.status == "complete" and first.content.startswith("bad ")
    assert "\x00" not in first.content and first.content.endswith("bad11 ")


@pytest.mark.parametrize("value", ["a\x00b", "\x00"])
def test_a_member_typing_a_nul_gets_a_clear_error_not_a_server_error(alice, api_key, value):
    response = alice.post("/c/new/messages", {"content": value, "model": f"{api_key.pk}:gpt-4o-mini"})

    assert response.status_code == 400
    assert "Null characters are not allowed" in response.content.decode()
    assert not Message.objects.exists()
