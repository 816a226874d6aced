"""Tests of ``conversations.upstream`` against the fake OpenAI server on loopback.

Every test drives the real ``requests``/``sseclient`` stack over a real socket: the wire is where
SSE events split inside a UTF-8 character, streams hang, connections drop and captive portals
answer with HTML, and only a real server can show that ``close()`` hangs up the connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from conftest import SECRETS
from conversations import crypto, upstream
from conversations.upstream import Credentials, Finish, TextDelta, UpstreamError, Usage
from devtools.fake_upstream import Scenario

SECRET = "sk-test-upstream-7Hq2ZxV9LmN4pR8sT1uW"
MESSAGES = [{"role": "user", "content": "hi"}]
MULTIBYTE = ["héllo", " 世界", " 👍🏽"]

SECRETS.add(SECRET)


@pytest.fixture(autouse=True)
def _bounded_read_timeout(settings):
    """Keep a test that wrongly waits on a silent upstream from waiting the default minutes."""
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 5
    settings.CHATSITE_IDLE_TIMEOUT = 5


def credentials(fake, **fields) -> Credentials:
    fields.setdefault("secret", SECRET)
    fields.setdefault("key_name", "Team key")
    return Credentials(base_url=fake.base_url, **fields)


def chat(fake, **fields) -> upstream.ChatStream:
    return upstream.ChatStream(credentials(fake, **fields), model="gpt-4o-mini", messages=MESSAGES)


def fail(stream: upstream.ChatStream) -> tuple[list, UpstreamError]:
    """Iterate ``stream`` until it raises; return the events before the error and the error."""
    events = []
    with pytest.raises(UpstreamError) as caught:
        for event in stream:
            events.append(event)
    return events, caught.value


def text_of(events: list) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


# -- the request ---------------------------------------------------------------------------


def test_chat_posts_a_streaming_completion_with_usage(fake_upstream):
    list(chat(fake_upstream))

    [request] = fake_upstream.chat_requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"


def test_base_url_with_trailing_slash_reaches_the_same_endpoint(fake_upstream):
    creds = Credentials(base_url=fake_upstream.base_url + "/", secret=SECRET)
    list(upstream.ChatStream(creds, model="gpt-4o-mini", messages=MESSAGES))

    assert [r.path for r in fake_upstream.chat_requests] == ["/v1/chat/completions"]


def test_chat_sends_bearer_key_organization_and_project(fake_upstream):
    list(chat(fake_upstream, organization="org-team", project="proj_chat"))

    headers = fake_upstream.chat_requests[0].headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["openai-organization"] == "org-team"
    assert headers["openai-project"] == "proj_chat"
    assert headers["user-agent"] == crypto.USER_AGENT


def test_chat_omits_organization_and_project_when_key_has_none(fake_upstream):
    list(chat(fake_upstream))

    headers = fake_upstream.chat_requests[0].headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert "openai-organization" not in headers
    assert "openai-project" not in headers


def test_credentials_repr_hides_the_secret(fake_upstream):
    assert SECRET not in repr(credentials(fake_upstream))


# -- a good stream -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        {},
        {"split": "mid_line"},
        {"split": "mid_utf8"},
        {"split": "bytes"},
        {"crlf": True},
        {"crlf": True, "split": "mid_line"},
        {"crlf": True, "split": "bytes"},
        {"pings": True},
        {"null_content_chunk": True},
        {"role_chunk": False},
        {"first_token_delay": 0.3, "pings": True},
        {"token_delay": 0.02},
        {"chunked": False},
        {"chunked": False, "split": "mid_utf8"},
    ],
    ids=lambda wire: "-".join(f"{k}={v}" for k, v in wire.items()) or "default",
)
def test_text_arrives_intact_and_in_order(fake_upstream, wire):
    fake_upstream.queue(Scenario(tokens=MULTIBYTE, **wire))

    events = list(chat(fake_upstream))

    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert deltas == MULTIBYTE
    assert events[len(MULTIBYTE):] == [
        Finish("stop"),
        Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10),
    ]


def test_usage_event_carries_the_upstream_numbers(fake_upstream):
    usage = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}
    fake_upstream.queue(Scenario(usage=usage))

    events = list(chat(fake_upstream))

    assert events[-1] == Usage(prompt_tokens=1234, completion_tokens=56, total_tokens=1290)


def test_stream_without_usage_chunk_still_finishes(fake_upstream):
    fake_upstream.queue(Scenario(send_usage=False))

    events = list(chat(fake_upstream))

    assert not any(isinstance(event, Usage) for event in events)
    assert events[-1] == Finish("stop")


@pytest.mark.parametrize("reason", ["stop", "length", "content_filter", "tool_calls"])
def test_finish_event_carries_the_finish_reason(fake_upstream, reason):
    fake_upstream.queue(Scenario(finish_reason=reason))

    events = list(chat(fake_upstream))

    assert [event for event in events if isinstance(event, Finish)] == [Finish(reason)]


def test_refusal_is_yielded_as_text(fake_upstream):
    refusal = "I'm sorry, I can't help with that."
    fake_upstream.queue(Scenario(refusal=refusal))

    events = list(chat(fake_upstream))

    assert text_of(events) == refusal


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_events_are_yielded_as_they_arrive(fake_upstream, chunked):
    fake_upstream.queue(
        Scenario(tokens=["a", "b", "c", "d", "e"], token_delay=0.2, chunked=chunked)
    )
    started = time.monotonic()
    arrivals = []

    for event in chat(fake_upstream):
        if isinstance(event, TextDelta):
            arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started

    assert len(arrivals) == 5
    assert total >= 0.8
    assert arrivals[0] < 0.3
    assert arrivals == sorted(arrivals) and arrivals[1] - arrivals[0] >= 0.15


# -- error statuses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "kind", "retryable"),
    [
        (Scenario(status=401), "auth", False),
        (Scenario(status=401, error_code="mismatched_organization"), "scope", False),
        (Scenario(status=401, error_code="mismatched_project"), "scope", False),
        (Scenario(status=403), "forbidden", False),
        (Scenario(status=404), "not_found", False),
        (Scenario(status=429), "rate_limit", True),
        (Scenario(status=429, error_code="insufficient_quota"), "quota", False),
        (Scenario(status=500), "server", True),
        (
            Scenario(
                status=400,
                error_code="context_length_exceeded",
                error_message="This model's maximum context length is 128000 tokens. However, "
                "your messages resulted in 130000 tokens. Please reduce the length of the "
                "messages.",
            ),
            "context_length",
            False,
        ),
        (Scenario(status=400), "bad_request", False),
    ],
    ids=lambda value: (
        f"{value.status}-{value.error_code or value.content_type or 'json'}"
        if isinstance(value, Scenario)
        else str(value)
    ),
)
def test_error_status_raises_classified_error(fake_upstream, scenario, kind, retryable):
    fake_upstream.queue(scenario)

    events, error = fail(chat(fake_upstream))

    assert events == []
    assert error.kind == kind
    assert error.status == scenario.status
    assert error.retryable is retryable
    if scenario.error_code:
        assert error.code == scenario.error_code


@pytest.mark.parametrize("status", [502, 503, 504])
@pytest.mark.parametrize("content_type", [None, "text/html", "text/plain"])
def test_gateway_and_overload_errors_are_retryable(fake_upstream, status, content_type):
    fake_upstream.queue(Scenario(status=status, content_type=content_type, retry_after="3"))

    _, error = fail(chat(fake_upstream))

    assert error.kind in {"unavailable", "server"}
    assert error.status == status
    assert error.retryable
    assert error.retry_after == 3.0
    assert "<html>" not in error.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 502, 503])
def test_error_message_is_a_sentence_not_json(fake_upstream, status):
    fake_upstream.queue(Scenario(status=status))

    _, error = fail(chat(fake_upstream))

    assert error.message[0].isupper()
    assert error.message.rstrip(")").endswith(".")
    assert "{" not in error.message and '"error"' not in error.message
    assert str(error).startswith(error.message)
    assert str(status) in str(error)


def test_upstream_words_are_kept_as_detail_for_the_admin(fake_upstream):
    fake_upstream.queue(Scenario(status=404))

    _, error = fail(chat(fake_upstream))

    assert error.detail == "The model `gpt-4o-mini` does not exist or you do not have access to it."
    assert error.error_type == "invalid_request_error"
    assert error.code == "model_not_found"


def test_rate_limit_carries_retry_after(fake_upstream):
    fake_upstream.queue(Scenario(status=429, retry_after="20"))

    _, error = fail(chat(fake_upstream))

    assert error.kind == "rate_limit"
    assert error.retry_after == 20.0


def test_rate_limit_without_retry_after_has_none(fake_upstream):
    fake_upstream.queue(Scenario(status=429))

    _, error = fail(chat(fake_upstream))

    assert error.retry_after is None


def test_html_page_with_200_is_a_protocol_error(fake_upstream):
    fake_upstream.queue(Scenario(content_type="text/html"))

    events, error = fail(chat(fake_upstream))

    assert events == []
    assert error.kind == "protocol"
    assert error.status == 200
    assert "text/html" in error.message
    assert not error.retryable


# -- a stream that breaks ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["error_after", "event_error_after"])
def test_error_in_the_stream_raises_after_the_earlier_text(fake_upstream, where):
    fake_upstream.queue(Scenario(tokens=MULTIBYTE, **{where: 2}))

    events, error = fail(chat(fake_upstream))

    assert text_of(events) == "héllo 世界"
    assert error.kind == "server"
    assert error.status is None
    assert error.error_type == "server_error"
    assert "The server had an error while processing your request" in error.message
    assert "{" not in error.message


def test_quota_error_in_the_stream_is_classified(fake_upstream):
    fake_upstream.queue(Scenario(error_after=1, error_code="insufficient_quota"))

    events, error = fail(chat(fake_upstream))

    assert text_of(events) == "Hello"
    assert error.kind == "quota"
    assert not error.retryable


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_dropped_connection_raises_after_the_earlier_text(fake_upstream, reset):
    fake_upstream.queue(Scenario(tokens=MULTIBYTE, drop_after=2, drop_reset=reset))

    events, error = fail(chat(fake_upstream))

    assert text_of(events) == "héllo 世界"
    assert error.kind in {"connection", "incomplete"}
    assert "{" not in error.message


def test_stream_ending_without_done_or_finish_reason_is_incomplete(fake_upstream):
    fake_upstream.queue(Scenario(send_done=False, finish_reason=None))

    events, error = fail(chat(fake_upstream))

    assert text_of(events) == "Hello, world!"
    assert error.kind == "incomplete"


@pytest.mark.parametrize("cut", ["clean close", "reset"])
def test_stream_that_finished_and_closed_without_done_is_complete(fake_upstream, cut):
    # finish_reason "stop", then the connection ends before the usage chunk and [DONE].
    fake_upstream.queue(Scenario(send_done=False, drop_after_finish=True,
                                 drop_reset=cut == "reset"))

    events = list(chat(fake_upstream))

    assert text_of(events) == "Hello, world!"
    assert Finish("stop") in events


def test_close_delimited_stream_cut_short_is_incomplete(fake_upstream):
    fake_upstream.queue(Scenario(chunked=False, drop_after=2))

    events, error = fail(chat(fake_upstream))

    assert text_of(events) == "Hello,"
    assert error.kind in {"connection", "incomplete"}


def test_silent_upstream_times_out(fake_upstream, settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = settings.CHATSITE_IDLE_TIMEOUT = 0.5
    fake_upstream.queue(Scenario(hang_after=2))
    started = time.monotonic()

    events, error = fail(chat(fake_upstream))

    assert time.monotonic() - started < 2
    assert text_of(events) == "Hello,"
    assert error.kind == "timeout"
    assert error.retryable
    assert fake_upstream.wait_for_disconnect(timeout=2)


def test_upstream_that_never_answers_times_out(fake_upstream, settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = settings.CHATSITE_IDLE_TIMEOUT = 0.5
    fake_upstream.queue(Scenario(hang_after=0, content_type="application/json"))
    started = time.monotonic()

    _, error = fail(chat(fake_upstream))

    assert time.monotonic() - started < 2
    assert error.kind == "timeout"


def test_refused_connection_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    creds = Credentials(base_url=f"http://127.0.0.1:{port}/v1", secret=SECRET)

    _, error = fail(upstream.ChatStream(creds, model="gpt-4o-mini", messages=MESSAGES))

    assert error.kind == "connection"
    assert error.status is None
    assert error.retryable


# -- hanging up ----------------------------------------------------------------------------


def test_close_from_another_thread_ends_a_hung_stream(fake_upstream):
    fake_upstream.queue(Scenario(tokens=MULTIBYTE, hang_after=2))
    stream = chat(fake_upstream)
    events = []
    closed_at = None

    for event in stream:
        events.append(event)
        if len(events) == 2:
            closer = threading.Timer(0.2, stream.close)
            closer.start()
            closed_at = time.monotonic() + 0.2
    ended_at = time.monotonic()
    closer.join()

    assert text_of(events) == "héllo 世界"
    assert stream.closed
    assert ended_at - closed_at < 1
    assert fake_upstream.wait_for_disconnect(timeout=2)


def test_close_before_iterating_sends_no_request(fake_upstream):
    stream = chat(fake_upstream)
    stream.close()

    assert list(stream) == []
    assert fake_upstream.chat_requests == []


# -- kept-alive connections ----------------------------------------------------------------


def test_a_kept_alive_connection_serves_the_next_reply(fake_upstream):
    fake_upstream.queue(Scenario(tokens=["one"], keep_alive=True),
                        Scenario(tokens=["two"], keep_alive=True))
    first = chat(fake_upstream)
    assert text_of(list(first)) == "one"
    first.close()  # as the runner does once a reply is over: the connection stays usable
    opened = fake_upstream.connections

    assert text_of(list(chat(fake_upstream))) == "two"
    assert fake_upstream.connections == opened
    assert len(fake_upstream.chat_requests) == 2


def test_close_drops_a_kept_alive_connection_and_the_next_reply_opens_another(fake_upstream):
    fake_upstream.queue(Scenario(tokens=MULTIBYTE, hang_after=1, keep_alive=True),
                        Scenario(tokens=["after"], keep_alive=True))
    stream = chat(fake_upstream)
    events = []
    for event in stream:
        events.append(event)
        if isinstance(event, TextDelta):
            threading.Timer(0.1, stream.close).start()
    assert text_of(events) == "héllo"
    assert fake_upstream.wait_for_disconnect(timeout=2)
    opened = fake_upstream.connections

    assert text_of(list(chat(fake_upstream))) == "after"
    assert fake_upstream.connections == opened + 1


def test_a_body_that_does_not_end_after_done_costs_its_connection_not_the_reply(fake_upstream):
    fake_upstream.queue(Scenario(tokens=["slow end"], keep_alive=True, linger_after_done=3),
                        Scenario(tokens=["next"], keep_alive=True))
    started = time.monotonic()
    events = list(chat(fake_upstream))
    assert time.monotonic() - started < 1
    assert text_of(events) == "slow end" and isinstance(events[-1], Usage)
    opened = fake_upstream.connections

    assert text_of(list(chat(fake_upstream))) == "next"
    assert fake_upstream.connections == opened + 1


# -- secrets in error text -----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        SECRET,
        "sk-proj-Xy7_Qm2-Vb9LkP3rTz8WnE4sHd6Ju1Ca",
        # OpenAI-compatible providers whose keys are not shaped like OpenAI's.
        "gsk_4fT9qLm2Xv7Rb8Nw3Kp6Zs1Hd5Jc0YeA",
        "Zq8mX3vT7pL2rN9wK4sB6hD1jF5gC0aY",
    ],
    ids=["sk-test", "sk-proj", "groq-style", "opaque"],
)
@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(status=401, echo_key=True),
        Scenario(status=429, echo_key=True),
        Scenario(error_after=1, echo_key=True),
        Scenario(event_error_after=1, echo_key=True),
    ],
    ids=["401", "429", "error_after", "event_error_after"],
)
def test_echoed_key_never_reaches_the_error(fake_upstream, scenario, secret):
    SECRETS.add(secret)
    fake_upstream.queue(scenario)

    _, error = fail(chat(fake_upstream, secret=secret))

    assert fake_upstream.bearer_tokens() == {secret}
    for text in (str(error), error.message, error.detail, repr(error), repr(error.args)):
        assert secret not in text
    assert "••••" in error.detail or "…" in error.detail  # the admin reads that a key was hidden


def test_echoed_key_in_the_error_status_body_is_masked(fake_upstream):
    fake_upstream.queue(Scenario(status=401, echo_key=True))

    _, error = fail(chat(fake_upstream))

    assert error.kind == "auth"
    assert error.detail.startswith("Incorrect API key provided: sk-")
    assert SECRET not in json.dumps(vars(error))


# -- list_models ---------------------------------------------------------------------------


def test_list_models_returns_sorted_ids(fake_upstream):
    fake_upstream.default.models = ["gpt-4o-mini", "o3-mini", "gpt-4o", "gpt-4o-mini"]

    models = upstream.list_models(credentials(fake_upstream, organization="org-team"))

    assert models == ["gpt-4o", "gpt-4o-mini", "o3-mini"]
    [request] = fake_upstream.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["openai-organization"] == "org-team"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "auth"), (403, "forbidden"), (429, "rate_limit"), (500, "server")],
)
def test_list_models_error_status_raises(fake_upstream, status, kind):
    fake_upstream.models_status = status

    with pytest.raises(UpstreamError) as caught:
        upstream.list_models(credentials(fake_upstream))

    assert caught.value.kind == kind
    assert caught.value.status == status


def test_list_models_from_a_refused_connection_raises():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(UpstreamError) as caught:
        upstream.list_models(Credentials(base_url=f"http://127.0.0.1:{port}/v1", secret=SECRET))

    assert caught.value.kind == "connection"
