"""The Redis relay between processes, with two relays on one Redis standing for two processes:
what a viewer of a reply generated elsewhere receives, and what each process listens to."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone

from conftest import wait_for
from conversations.models import Conversation, Message
from conversations.replies import relay as relays
from conversations.replies import stream as streaming
from conversations.replies import watchdog
from conversations.replies.feed import Delta, End, Lost
from conversations.replies.relay.redis import Relay as RedisRelay

REDIS_TEST_URL = os.environ.get("CHATSITE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}")
        pytest.skip(f"Redis is not reachable at {REDIS_TEST_URL}")
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"chatsite-test-{uuid.uuid4().hex}"


@pytest.fixture
def generating(prefix, redis_client) -> RedisRelay:
    """The process that generates the replies."""
    return RedisRelay(REDIS_TEST_URL, prefix)


@pytest.fixture
def viewing(prefix, redis_client) -> RedisRelay:
    """Another process, where the member's browser is connected."""
    return RedisRelay(REDIS_TEST_URL, prefix)


def listeners(client: redis.Redis, channel: str) -> int:
    """How many connections are subscribed to ``channel``."""
    return dict(client.pubsub_numsub(channel))[channel.encode()]


def text_of(events: list) -> str:
    """Reassemble a reply from deltas as the stream view does: by offset, overlaps dropped."""
    text = ""
    for item in events:
        if isinstance(item, Delta):
            assert item.offset <= len(text), f"gap: {item.offset} > {len(text)}"
            text += item.text[len(text) - item.offset:]
    return text


async def watch(relay: RedisRelay, message_id: int, during=None, timeout: float = 10) -> list:
    """Subscribe, run ``during()`` in a thread, and collect events until the reply ends."""
    subscription = relay.subscribe(message_id)
    events: list = []
    try:
        worker = asyncio.create_task(asyncio.to_thread(during)) if during else None
        async with asyncio.timeout(timeout):
            while not events or not isinstance(events[-1], End):
                events.extend(await subscription.get_batch(timeout))
        if worker:
            await worker
    finally:
        subscription.close()
    return events


def test_a_viewer_elsewhere_gets_the_text_so_far_then_every_delta_once(
    generating, viewing, prefix, redis_client
):
    generating.publish(7, 0, "Hello")
    generating.publish(7, 5, ", wor")
    wait_for(lambda: redis_client.get(f"{prefix}:reply:7:text") == b"Hello, wor")

    def rest_of_the_reply() -> None:
        wait_for(lambda: listeners(redis_client, f"{prefix}:reply:7") == 1)  # live from here
        offset = len("Hello, wor")
        for token in ["ld", "!", " ✓"] + [f" {n}" for n in range(300)]:
            generating.publish(7, offset, token)
            offset += len(token)
        generating.close(7)

    events = asyncio.run(watch(viewing, 7, rest_of_the_reply))
    assert text_of(events) == "Hello, world! ✓" + "".join(f" {n}" for n in range(300))
    assert isinstance(events[-1], End)


def test_a_viewer_arriving_just_after_the_end_is_told_it_ended(generating, viewing, prefix,
                                                              redis_client):
    generating.publish(8, 0, "Done.")
    generating.close(8)
    wait_for(lambda: redis_client.exists(f"{prefix}:reply:8:end"))
    events = asyncio.run(watch(viewing, 8, timeout=5))
    assert events == [End()]


def test_a_process_listens_only_to_the_replies_it_shows(generating, viewing, prefix,
                                                       redis_client):
    shown = threading.Event()

    def meanwhile() -> None:
        wait_for(lambda: listeners(redis_client, f"{prefix}:reply:1") == 1)
        assert listeners(redis_client, f"{prefix}:reply:2") == 0  # another reply, viewed nowhere: nobody parses its tokens
        generating.publish(2, 0, "not shown here")
        generating.publish(1, 0, "shown")
        generating.close(1)
        shown.set()

    events = asyncio.run(watch(viewing, 1, meanwhile))
    assert shown.is_set() and text_of(events) == "shown"
    wait_for(lambda: listeners(redis_client, f"{prefix}:reply:1") == 0)  # the last viewer left: unsubscribed


@pytest.mark.django_db(transaction=True)
def test_with_redis_unreachable_a_viewer_still_learns_that_the_reply_ended(user, api_key):
    relay = RedisRelay("redis://127.0.0.1:1/0")  # nothing listens there
    relays.use(relay)
    conversation = Conversation.objects.create(owner=user, api_key=api_key, model="gpt-4o-mini")
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING,
        lease_expires_at=timezone.now() + timedelta(hours=1),
    )

    def finished_in_another_process() -> None:
        Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE,
                                                   content="Done", lease_expires_at=None)
        watchdog.check()  # what this process's watchdog does every keep-alive interval
        connection.close()

    try:
        events = asyncio.run(watch(relay, reply.pk, finished_in_another_process, timeout=5))
    finally:
        relays.use(None)
    assert events[-1] == End()
    assert set(map(type, events)) <= {Lost, End}  # Lost: the stream view follows the database


@pytest.mark.django_db(transaction=True)
def test_with_redis_unreachable_a_stream_follows_the_reply_through_the_database(
    user, api_key, monkeypatch
):
    relay = RedisRelay("redis://127.0.0.1:1/0")  # nothing listens there
    relays.use(relay)
    conversation = Conversation.objects.create(owner=user, api_key=api_key, model="gpt-4o-mini")
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING,
        lease_expires_at=timezone.now() + timedelta(hours=1),
    )
    parts = ["Written ", "in another ", "process."]

    def written_in_another_process() -> None:
        text = ""
        for part in parts:  # as that process's flusher writes it
            text += part
            Message.objects.filter(pk=reply.pk).update(content=text)
            length = len(text)
            wait_for(lambda: sent_so_far() >= length, timeout=10)  # noqa: B023 - waited at once
        Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE,
                                                   lease_expires_at=None)
        connection.close()

    received: list[str] = []

    def sent_so_far() -> int:
        return len("".join(received))

    async def render_final(message: Message) -> str:
        return f"final: {message.content}"

    async def stream() -> list[str]:
        events = []
        worker = asyncio.create_task(asyncio.to_thread(written_in_another_process))
        async with asyncio.timeout(20):
            async for chunk in streaming.events(reply.pk, 0, render_final):
                event = chunk.decode()
                events.append(event)
                if event.startswith("event: delta"):
                    received.append(event.split("data: ", 1)[1].rstrip("\n"))
        await worker
        return events

    try:
        events = asyncio.run(stream())
    finally:
        relays.use(None)
    assert "".join(received) == "".join(parts)
    assert events[-1].startswith("event: done") and "final: Written in another process." in events[-1]
    assert not relay.available()  # new viewers go straight to the database meanwhile
