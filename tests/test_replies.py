"""Replies: generated once, apart from the browser, stored in batches, tailed as events."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import AsyncClient
from django.utils import timezone

from conftest import read_events, session_for, wait_for
from conversations import replies
from conversations.models import Conversation, Message, UsageDaily
from conversations.replies import registry, runner, stream, watchdog
from conversations.replies.feed import End
from devtools.fake_upstream import Scenario

pytestmark = pytest.mark.django_db(transaction=True)


def send(client, key, text: str = "Hello", model: str = "gpt-4o-mini", conversation=None) -> Message:
    url = f"/c/{conversation.pk}/messages" if conversation else "/c/new/messages"
    response = client.post(url, {"content": text, "model": f"{key.pk}:{model}"})
    assert response.status_code == 302, response.content[:500]
    return Message.objects.filter(role="assistant").latest("id")


def finished(reply: Message, timeout: float = 10) -> Message:
    return wait_for(
        lambda: (m := Message.objects.get(pk=reply.pk)).status not in Message.UNFINISHED and m,
        timeout,
    )


def stream_events(session, live_url: str, reply: Message, **headers) -> list:
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, headers=headers,
                     timeout=15) as response:
        assert response.status_code == 200
        return [e for e in read_events(response)]


def test_reply_is_stored_with_finish_reason_usage_model_and_key(alice, api_key, fake_upstream):
    reply = finished(send(alice, api_key, "Hi there"))
    assert reply.status == "complete"
    assert reply.content == "Hello, world!"
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.total_tokens) == (7, 4, 11)
    assert reply.model == "gpt-4o-mini" and reply.api_key == api_key
    question = Message.objects.get(role="user")
    assert question.content == "Hi there"
    chat = fake_upstream.chat_requests[-1]
    assert chat.body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert chat.body["stream"] is True and chat.body["stream_options"] == {"include_usage": True}
    assert chat.headers["authorization"].startswith("Bearer sk-test-")
    assert chat.headers["openai-organization"] == "org-team"
    assert chat.headers["openai-project"] == "proj_chat"


def test_follow_up_sends_the_whole_conversation_with_its_system_prompt(alice, api_key, fake_upstream):
    first = finished(send(alice, api_key, "First question"))
    conversation = first.conversation
    Conversation.objects.filter(pk=conversation.pk).update(system_prompt="Be brief.")
    finished(send(alice, api_key, "Second question", conversation=conversation))
    assert fake_upstream.chat_requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "Second question"},
    ]


@pytest.mark.parametrize(
    ("scenario", "kind", "words"),
    [
        (Scenario(status=401), "auth", "API key was rejected"),
        (Scenario(status=401, error_code="mismatched_organization"), "scope", "organization or project"),
        (Scenario(status=403), "forbidden", "refused"),
        (Scenario(status=404, error_code="model_not_found"), "not_found", "model was not found"),
        (Scenario(status=429, retry_after="0"), "rate_limit", "rate limiting"),
        (Scenario(status=429, error_code="insufficient_quota"), "quota", "quota"),
        (Scenario(status=500), "server", "internal error"),
        (Scenario(status=503), "unavailable", "unreachable or overloaded"),
    ],
    ids=["401", "401-org", "403", "404", "429", "429-quota", "500", "503"],
)
def test_upstream_errors_tell_the_member_what_happened_and_keep_their_message(
    alice, api_key, fake_upstream, scenario, kind, words, monkeypatch
):
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    fake_upstream.queue(scenario, scenario, scenario)  # retryable ones are tried three times
    reply = finished(send(alice, api_key, "Will this work?"))
    assert reply.status == "error"
    assert reply.error_type == kind
    assert reply.error_status == scenario.status
    assert reply.api_key == api_key  # the admin can tell which key failed

    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "Will this work?" in page
    assert words in page
    assert ">Retry</button>" in page


def test_text_that_arrived_before_a_cut_connection_is_kept_and_marked_incomplete(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["One", " two", " three", " four"], drop_after=2))
    reply = finished(send(alice, api_key))
    assert reply.status == "error"
    assert reply.content == "One two"
    assert len(fake_upstream.chat_requests) == 1  # text was shown: never retried
    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "One two" in page
    assert "Incomplete:" in page and "cut" in page
    assert ">Retry</button>" in page


def test_error_in_the_middle_of_the_stream_keeps_the_text_and_masks_the_key(
    alice, make_api_key, fake_upstream
):
    key = make_api_key()
    fake_upstream.queue(Scenario(tokens=["Part", " of", " it"], error_after=2, echo_key=True))
    reply = finished(send(alice, key))
    assert reply.status == "error" and reply.content == "Part of"
    # the upstream echoed the whole key; the secret guard fails the test if it reached a page,
    # and here it must not have reached the database either
    for text in (reply.error_message, reply.error_detail):
        assert fake_upstream.chat_requests[-1].headers["authorization"][7:] not in text
    alice.get(f"/c/{reply.conversation_id}/")


def test_rate_limit_before_the_first_token_is_retried_after_retry_after(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(status=429, retry_after="1"), Scenario(tokens=["Fine"]))
    reply = finished(send(alice, api_key))
    assert reply.status == "complete" and reply.content == "Fine"
    first, second = fake_upstream.chat_requests
    assert second.received_at - first.received_at >= 1.0


def test_used_up_quota_is_never_retried(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(status=429, error_code="insufficient_quota"), Scenario())
    reply = finished(send(alice, api_key))
    assert reply.status == "error" and reply.error_type == "quota"
    assert len(fake_upstream.chat_requests) == 1


def test_server_errors_are_retried_at_most_twice(alice, api_key, fake_upstream, monkeypatch):
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    fake_upstream.queue(*[Scenario(status=502)] * 4, Scenario())
    reply = finished(send(alice, api_key))
    assert reply.status == "error" and reply.error_status == 502
    assert len(fake_upstream.chat_requests) == 3


def test_a_stream_cut_before_any_text_is_not_sent_again(alice, api_key, fake_upstream, monkeypatch):
    # The provider accepted the request (200) and may bill it: the member decides with Retry.
    monkeypatch.setattr(runner, "RETRY_BASE_SECONDS", 0.01)
    fake_upstream.queue(Scenario(tokens=["x"], drop_after=0), Scenario(tokens=["Second", " try"]))
    reply = finished(send(alice, api_key))
    assert reply.status == "error" and reply.error_type == "connection"
    assert len(fake_upstream.chat_requests) == 1


def test_retry_resends_the_question_and_keeps_the_failed_attempt(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["Half"], drop_after=1),
                        Scenario(tokens=["Whole", " answer"]))
    failed = finished(send(alice, api_key, "Question"))
    response = alice.post(f"/m/{failed.pk}/retry")
    assert response.status_code == 302
    retried = finished(Message.objects.filter(role="assistant").latest("id"))
    assert retried.pk != failed.pk and retried.content == "Whole answer"
    failed.refresh_from_db()
    assert failed.superseded and failed.content == "Half"  # nothing is lost
    assert fake_upstream.chat_requests[-1].body["messages"] == [
        {"role": "user", "content": "Question"}
    ]
    page = alice.get(f"/c/{failed.conversation_id}/").content.decode()
    assert page.count(">Retry</button>") == 0


def test_stop_ends_the_reply_within_a_second_keeps_the_text_and_hangs_up_upstream(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["Kept", " text", " never"], hang_after=2))
    reply = send(alice, api_key)
    wait_for(lambda: fake_upstream.chat_requests)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "Kept text", 5)
    started = time.monotonic()
    assert alice.post(f"/m/{reply.pk}/stop").status_code == 302
    reply = finished(reply, 5)
    assert time.monotonic() - started < 1.0
    assert reply.status == "cancelled" and reply.content == "Kept text"
    assert fake_upstream.wait_for_disconnect(2), "the upstream connection stayed open"
    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "Stopped" in page and ">Retry</button>" in page


def test_a_reply_finishing_while_the_database_is_busy_is_still_stored_complete(
    alice, api_key, fake_upstream, monkeypatch
):
    if connection.vendor != "sqlite":
        pytest.skip("holds SQLite's write lock; PostgreSQL writers wait on row locks instead")
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.3)
    fake_upstream.queue(Scenario(tokens=["Saved", " despite", " a", " busy", " database"],
                                 hang_after=2))
    reply = send(alice, api_key)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "Saved despite", 5)
    other_writer = sqlite3.connect(connection.settings_dict["NAME"])
    other_writer.execute("BEGIN IMMEDIATE")  # e.g. a burst of other replies' writes
    try:
        fake_upstream.release()
        time.sleep(1.0)  # longer than the busy timeout: the final write fails at least once
    finally:
        other_writer.rollback()
        other_writer.close()
    reply = finished(reply)
    assert reply.status == "complete"
    assert reply.content == "Saved despite a busy database"
    assert reply.total_tokens == 7 + 5


@pytest.mark.parametrize("deleted", ["key", "team"])
def test_a_key_or_team_deleted_while_the_reply_is_written_leaves_it_complete_and_counted(
    alice, user, make_api_key, fake_upstream, deleted
):
    team = Group.objects.create(name="Support")
    user.groups.add(team)
    key = make_api_key(everyone=False)
    key.teams.add(team)
    fake_upstream.queue(Scenario(tokens=["Counted", " anyway"], hang_after=1))
    reply = send(alice, key)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "Counted", 5)
    (key if deleted == "key" else team).delete()
    fake_upstream.release()
    reply = finished(reply)
    assert (reply.status, reply.content, reply.total_tokens) == ("complete", "Counted anyway", 9)
    row = UsageDaily.objects.get()
    assert (row.requests, row.total_tokens) == (1, 9)
    assert (row.api_key_id, row.team_id) == ((None, team.pk) if deleted == "key" else (key.pk, None))


def test_the_key_records_when_it_was_last_used_to_the_minute(alice, api_key, fake_upstream):
    assert api_key.last_used_at is None
    finished(send(alice, api_key))
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None and timezone.now() - first_use < timedelta(seconds=10)
    finished(send(alice, api_key))  # within the minute: the key's row is not written again
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use


def test_stop_from_another_process_ends_a_stalled_reply_within_a_second(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["Kept", " never"], hang_after=1))
    reply = send(alice, api_key)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "Kept", 5)
    time.sleep(0.5)  # nothing new to write: the reply's row is not touched any more
    started = time.monotonic()
    # What the Stop button does in a process that is not generating this reply.
    Message.objects.filter(pk=reply.pk).update(cancel_requested=True)
    reply = finished(reply, 5)
    assert time.monotonic() - started < 1.0
    assert reply.status == "cancelled" and reply.content == "Kept"
    assert fake_upstream.wait_for_disconnect(2), "the upstream connection stayed open"


def test_stored_text_grows_in_batches_not_per_token(alice, api_key, fake_upstream, settings):
    settings.CHATSITE_FLUSH_INTERVAL = 0.25  # 2 s by default: a 1.2 s reply would show no batch
    tokens = [f"t{i} " for i in range(120)]
    fake_upstream.queue(Scenario(tokens=tokens, token_delay=0.01))
    reply = send(alice, api_key)
    seen = []
    while True:
        message = Message.objects.get(pk=reply.pk)
        if not seen or message.content != seen[-1]:
            seen.append(message.content)
        if message.status not in Message.UNFINISHED:
            break
        time.sleep(0.005)
    assert message.content == "".join(tokens)
    partial = [text for text in seen if text and text != message.content]
    assert partial, "the stored text did not grow while the reply streamed"
    assert all(message.content.startswith(text) for text in seen)  # appended, never rewritten
    assert len(seen) <= 12, f"{len(seen)} different stored texts for a 1.2 s reply of 120 tokens"


def test_a_reply_costs_the_engine_the_same_few_statements_whatever_its_length(
    alice, api_key, fake_upstream
):
    """What the generating thread runs: its claim, four reads (the reply, the model's spec, the
    history, its attachments), the final write with its usage and the budget check. Not one
    more for a reply a hundred times longer (the flusher appends its text, tested above). The
    first reply of the day, or of the minute for its key, also creates the day's usage row and
    stamps the key: a reply before the two measured ones does that."""
    threads: list[str] = []
    wrapped = []

    def record(execute, sql, params, many, context):
        threads.append(threading.current_thread().name)
        return execute(sql, params, many, context)

    def wrap(sender, connection, **kwargs):
        if record not in connection.execute_wrappers:
            connection.execute_wrappers.append(record)
            wrapped.append(connection)

    connection_created.connect(wrap)
    counts = []
    try:
        for tokens in (["Hello"], ["Hi"], ["word "] * 100):
            fake_upstream.queue(Scenario(tokens=tokens))
            threads.clear()
            finished(send(alice, api_key))
            assert replies.wait_idle(10)  # the budget check runs after the final write
            counts.append(sum(name.startswith("generation") for name in threads))
    finally:
        connection_created.disconnect(wrap)
        for each in wrapped:
            each.execute_wrappers.remove(record)
    assert 0 < counts[1] == counts[2] <= 10, counts


def test_reply_whose_process_died_is_shown_interrupted_and_can_be_retried(
    alice, user, api_key, fake_upstream, monkeypatch
):
    # The test plays the watchdog: the one an earlier test started in this process would mark
    # the reply whenever its interval ends, here between the page and the check that it did not.
    monkeypatch.setattr(watchdog, "check", lambda: None)
    conversation = Conversation.objects.create(owner=user, api_key=api_key, model="gpt-4o-mini")
    Message.objects.create(conversation=conversation, role="user", content="Question")
    stale = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Half an",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    page = alice.get(f"/c/{conversation.pk}/").content.decode()
    stale.refresh_from_db()
    assert stale.status == "streaming"  # pages never write: the watchdog marks it
    assert "Half an" in page and ">Retry</button>" in page and "The server stopped" in page

    assert replies.reap_stale() == 1
    stale.refresh_from_db()
    assert stale.status == "interrupted" and stale.content == "Half an"
    assert alice.post(f"/m/{stale.pk}/retry").status_code == 302
    retried = finished(Message.objects.filter(role="assistant").latest("id"))
    assert retried.pk != stale.pk and retried.content == "Hello, world!"


def test_stream_sends_each_delta_with_its_offset_then_the_final_html(
    live_url, user, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["**Bold**", " and", " ünïcode", " 世界"], token_delay=0.05,
                                 split="mid_utf8"))
    session = session_for(live_url, "alice")
    reply = send_via(session, live_url, api_key)
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=15) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert "no-cache" in response.headers["Cache-Control"]
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "gzip" not in response.headers.get("Content-Encoding", "")
        events = list(read_events(response))
    deltas = [e for e in events if e.event == "delta"]
    assert [e.event for e in events][-1] == "done"
    assert "".join(e.data for e in deltas) == "**Bold** and ünïcode 世界"
    offsets = [int(e.id) for e in deltas]
    assert offsets == sorted(offsets) and offsets[-1] == len("**Bold** and ünïcode 世界")
    assert "<strong>Bold</strong>" in events[-1].data


def test_a_stream_keeps_no_list_of_the_url_patterns_tried_before_its_own():
    """Django keeps the patterns it tried before the match with the request, which a stream
    holds for as long as it is open: the stream's pattern is the first one tried."""
    from django.urls import resolve

    match = resolve("/m/12/stream")

    assert match.url_name == "message-stream" and match.kwargs == {"pk": 12}
    assert len(match.tried) == 1


def send_via(session, live_url: str, key, text: str = "Hi") -> Message:
    response = session.post(
        f"{live_url}/c/new/messages", data={"content": text, "model": f"{key.pk}:gpt-4o-mini"},
        headers={"X-CSRFToken": session.cookies["csrftoken"], "HX-Request": "true"}, timeout=10,
    )
    assert response.status_code == 200 and response.headers.get("HX-Redirect")
    return Message.objects.filter(role="assistant").latest("id")


def test_reconnect_with_last_event_id_resumes_without_a_second_upstream_call(
    live_url, user, api_key, fake_upstream
):
    tokens = [f"w{i} " for i in range(10)]
    fake_upstream.queue(Scenario(tokens=tokens, token_delay=0.05))
    session = session_for(live_url, "alice")
    reply = send_via(session, live_url, api_key)
    received = ""
    last_id = None
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=15) as response:
        for event in read_events(response):
            if event.event == "delta":
                received += event.data
                last_id = event.id
            if len(received) >= 9:
                break  # the browser went away mid-reply
    rest = stream_events(session, live_url, reply, **{"Last-Event-ID": last_id})
    received += "".join(e.data for e in rest if e.event == "delta")
    assert received == "".join(tokens)
    assert rest[-1].event == "done"
    assert len(fake_upstream.chat_requests) == 1


def test_opening_the_stream_of_a_finished_reply_only_closes_it(live_url, user, api_key, fake_upstream):
    session = session_for(live_url, "alice")
    reply = finished(send_via(session, live_url, api_key))
    events = stream_events(session, live_url, reply)
    assert [e.event for e in events] == ["done"]
    assert len(fake_upstream.chat_requests) == 1


def test_model_output_cannot_forge_events_or_inject_markup(live_url, user, api_key, fake_upstream):
    evil = ["line one\n\nevent: done\ndata: <b>forged</b>\n\n", "<img src=x onerror=alert(1)>",
            "\r\nid: 9999\r\n"]
    fake_upstream.queue(Scenario(tokens=evil, token_delay=0.05))
    session = session_for(live_url, "alice")
    reply = send_via(session, live_url, api_key)
    events = stream_events(session, live_url, reply)
    assert [e.event for e in events].count("done") == 1 and events[-1].event == "done"
    deltas = "".join(e.data for e in events if e.event == "delta")
    blocks = "".join(e.data for e in events if e.event == "block")  # finished blocks, rendered
    assert "<img" not in deltas and "&lt;img src=x onerror=alert(1)&gt;" in deltas
    assert "event: done" in blocks and "&lt;b&gt;forged&lt;/b&gt;" in blocks  # text, not obeyed
    assert "<b>" not in blocks and "<img" not in blocks
    assert "<img" not in events[-1].data and "onerror" not in events[-1].data.replace("onerror=alert(1)&gt;", "")


def test_a_viewer_who_subscribes_as_the_reply_ends_is_told_once_it_is_stored():
    """While the final write is under way the viewer waits; once it is stored, the viewer hears
    so at once, even if it subscribed after everyone else was told."""
    finishing, ended = registry.LiveReply(1), registry.LiveReply(2)
    for reply in (finishing, ended):
        reply.append("Hello")
    finishing.final = True  # the runner's final write has begun, nothing stored yet
    ended.end()

    async def subscribe_late():
        early, late = finishing.subscribe(), ended.subscribe()
        before_stored = await early.get_batch(0.2)
        finishing.end()
        return (early.snapshot, before_stored, await asyncio.wait_for(early.get_batch(5), 10),
                late.snapshot, await asyncio.wait_for(late.get_batch(5), 10))

    with ThreadPoolExecutor(1) as pool:  # Playwright may keep an event loop in this thread
        result = pool.submit(asyncio.run, subscribe_late()).result()
    assert result == ("Hello", [], [End()], "Hello", [End()])


def test_the_stream_of_a_reply_generated_here_reads_its_row_only_once_it_has_ended(
    user, api_key, monkeypatch
):
    """The live reply's feed has all its text: the stream needs its row for the final HTML only."""
    conversation = Conversation.objects.create(owner=user, api_key=api_key, model="m")
    message = Message.objects.create(conversation=conversation, role="assistant",
                                     status="streaming", model="m")
    reads = []
    load = stream._load_sync
    monkeypatch.setattr(stream, "_load_sync", lambda pk: reads.append(pk) or load(pk))
    live = registry.LiveReply(message.pk)
    live.append("Hello")
    assert registry.add(live)

    def finish() -> None:
        live.append(" world")
        Message.objects.filter(pk=message.pk).update(status="complete", content="Hello world")
        registry.remove(message.pk)
        live.end()

    async def render_final(final: Message) -> str:
        return f"<p>{final.content}</p>"

    async def watch() -> list[bytes]:
        chunks = []
        async for chunk in replies.events(message.pk, 0, render_final):
            chunks.append(chunk)
            if len(chunks) == 2:  # the retry interval, then the text so far
                await asyncio.to_thread(finish)
        return chunks

    try:
        with ThreadPoolExecutor(1) as pool:
            body = b"".join(pool.submit(asyncio.run, watch()).result()).decode()
    finally:
        registry.remove(message.pk)
    assert "data: Hello\n" in body and "data:  world\n" in body
    assert "event: done" in body and "<p>Hello world</p>" in body
    assert reads == [message.pk]


def test_stream_view_is_an_async_iterator_so_nothing_buffers_it(user, api_key):
    conversation = Conversation.objects.create(owner=user, api_key=api_key, model="m")
    reply = Message.objects.create(conversation=conversation, role="assistant",
                                   status="complete", content="Done")

    async def fetch():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(f"/m/{reply.pk}/stream")
        body = b"".join([chunk async for chunk in response.streaming_content]).decode()
        return response, body

    # In a thread of its own: the browser tests' Playwright keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        response, body = pool.submit(asyncio.run, fetch()).result()
    assert response.status_code == 200 and response.is_async
    assert "event: done" in body


def test_deleting_a_conversation_stops_its_reply(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["a", "b", "c"], hang_after=1))
    reply = send(alice, api_key)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "a", 5)
    alice.post(f"/c/{reply.conversation_id}/delete")
    assert not Conversation.objects.exists()
    assert fake_upstream.wait_for_disconnect(2)


def test_regenerate_keeps_the_earlier_reply_reachable_and_sends_only_current_context(
    alice, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["First", " answer"]), Scenario(tokens=["Second", " answer"]))
    first = finished(send(alice, api_key, "Question"))
    page = alice.get(f"/c/{first.conversation_id}/").content.decode()
    assert ">Regenerate</button>" in page
    alice.post(f"/m/{first.pk}/retry")
    second = finished(Message.objects.filter(role="assistant").latest("id"))
    assert second.content == "Second answer"
    assert fake_upstream.chat_requests[-1].body["messages"] == [{"role": "user", "content": "Question"}]
    page = alice.get(f"/c/{first.conversation_id}/").content.decode()
    assert "Earlier version of the reply" in page and "First answer" in page
    assert page.index("First answer") < page.index("Second answer")


def test_editing_a_message_resends_it_and_keeps_the_original_reachable(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["About cats"]), Scenario(tokens=["About dogs"]),
                        Scenario(tokens=["Dogs again"]))
    first = finished(send(alice, api_key, "Tell me about cats"))
    conversation = first.conversation
    finished(send(alice, api_key, "More please", conversation=conversation))
    question = Message.objects.get(role="user", content="Tell me about cats")
    response = alice.post(f"/m/{question.pk}/edit", {"content": "Tell me about dogs"})
    assert response.status_code == 302
    reply = finished(Message.objects.filter(role="assistant").latest("id"))
    assert reply.content == "Dogs again"
    assert fake_upstream.chat_requests[-1].body["messages"] == [
        {"role": "user", "content": "Tell me about dogs"}
    ]
    page = alice.get(f"/c/{conversation.pk}/").content.decode()
    for kept in ("Tell me about cats", "About cats", "More please", "About dogs"):
        assert kept in page  # nothing the person wrote or read is lost
    assert page.count("Earlier version of your message") == 2


def test_regenerating_while_a_reply_streams_is_refused_with_a_reason(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["Done"]), Scenario(tokens=["a", "b"], hang_after=1))
    first = finished(send(alice, api_key, "One"))
    streaming = send(alice, api_key, "Two", conversation=first.conversation)
    wait_for(lambda: Message.objects.get(pk=streaming.pk).status == "streaming")
    question = Message.objects.get(content="One")
    response = alice.post(f"/m/{question.pk}/edit", {"content": "Changed"}, follow=True)
    assert "Wait for the reply to finish" in response.content.decode()
    assert not Message.objects.filter(content="Changed").exists()


def test_idle_stream_gets_keep_alive_comments_so_proxies_keep_it_open(
    live_url, user, api_key, fake_upstream, settings
):
    settings.CHATSITE_KEEPALIVE_SECONDS = 0.2
    fake_upstream.queue(Scenario(tokens=["a", "b"], hang_after=1))
    session = session_for(live_url, "alice")
    reply = send_via(session, live_url, api_key)
    raw = b""
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=10) as response:
        started = time.monotonic()
        for chunk in response.iter_content(chunk_size=None):
            raw += chunk
            if raw.count(b": keep-alive") >= 2 or time.monotonic() - started > 5:
                break
    assert raw.count(b": keep-alive") >= 2


def test_open_streams_do_not_hold_database_connections(live_url, user, api_key, fake_upstream):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts server connections in pg_stat_activity; this run uses SQLite")

    def connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return cursor.fetchone()[0]

    fake_upstream.queue(Scenario(tokens=["a", "b"], hang_after=1))
    session = session_for(live_url, "alice")
    reply = send_via(session, live_url, api_key)
    wait_for(lambda: Message.objects.get(pk=reply.pk).content == "a")
    before = connections()
    streams = [session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=10)
               for _ in range(8)]
    try:
        for response in streams:
            assert next(read_events(response)).event == "delta"  # open and tailing
        time.sleep(0.5)
        assert connections() <= before + 1, "each open stream pins a database connection"
    finally:
        for response in streams:
            response.close()


def test_beyond_the_configured_number_of_replies_a_message_is_refused_as_busy(
    alice, api_key, fake_upstream, settings
):
    settings.CHATSITE_MAX_GENERATIONS = 1
    fake_upstream.queue(Scenario(hang_after=0))
    first = send(alice, api_key, "First")
    wait_for(lambda: fake_upstream.chat_requests)

    refused = alice.post("/c/new/messages", {"content": "Second",
                                             "model": f"{api_key.pk}:gpt-4o-mini"})

    assert refused.status_code == 400
    assert "busy writing other replies" in refused.content.decode()
    assert not Message.objects.filter(content="Second").exists()  # nothing stored, nothing lost
    alice.post(f"/m/{first.pk}/stop")
    assert finished(first).status == "cancelled"
    assert finished(send(alice, api_key, "Third")).status == "complete"  # room again


def test_a_reply_that_raced_past_the_busy_check_is_refused_at_once_not_queued(
    alice, api_key, fake_upstream, settings, monkeypatch
):
    """Two messages can pass the service's check for the last place together; the one that
    finds the pool full is refused at once, not queued behind the reply holding the place."""
    settings.CHATSITE_MAX_GENERATIONS = 1
    monkeypatch.setattr(runner, "_executor", None)  # a pool of the configured size
    fake_upstream.queue(Scenario(hang_after=0))
    first = send(alice, api_key, "First")
    wait_for(lambda: fake_upstream.chat_requests)
    raced = Message.objects.create(conversation=first.conversation, role="assistant",
                                   status="pending", model="gpt-4o-mini",
                                   lease_expires_at=replies.lease_expires())

    replies.start(raced.pk)

    assert finished(raced).error_type == "busy"
    assert Message.objects.get(pk=first.pk).status in Message.UNFINISHED  # still holds it
    alice.post(f"/m/{first.pk}/stop")
    assert finished(first).status == "cancelled"
