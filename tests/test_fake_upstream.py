"""Tests of the fake OpenAI upstream itself: raw HTTP, raw sockets and sseclient, no Django."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import sseclient

from devtools.fake_upstream import FakeUpstream, Scenario, mask_key

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def chat_body(stream: bool = True, usage: bool = False, **extra: object) -> dict:
    body: dict = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    if usage:
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def post(fake: FakeUpstream, body: dict | None = None, **kwargs: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return requests.post(
        fake.base_url + "/chat/completions",
        json=chat_body() if body is None else body,
        headers=headers,
        stream=True,
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


def sse_events(response: requests.Response) -> list[sseclient.Event]:
    return list(sseclient.SSEClient(response.iter_content(chunk_size=None)).events())


def payloads(events: list[sseclient.Event]) -> list[dict | str]:
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]


def content_of(items: list[dict | str]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for item in items
        if isinstance(item, dict) and "choices" in item
        for choice in item["choices"]
    )


def dechunk(body: bytes) -> list[bytes]:
    """Split a chunked HTTP body into its chunk payloads (= the fake's individual writes)."""
    payloads: list[bytes] = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payloads.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]
    return payloads


def raw_chat(fake: FakeUpstream, body: dict) -> tuple[bytes, list[bytes]]:
    """POST over a bare socket; return the response head and the body's pieces.

    The pieces are the chunk payloads of a chunked body, or every recv() of a close-delimited one.
    """
    payload = json.dumps(body, ensure_ascii=False).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    reads: list[bytes] = []
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(head.encode() + payload)
        while data := sock.recv(65536):
            reads.append(data)
    raw = b"".join(reads)
    head_bytes, _, body_bytes = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        return head_bytes, dechunk(body_bytes)
    # drop the head from the recv() list, keeping the body's own boundaries
    skip = len(head_bytes) + 4
    pieces = []
    for read in reads:
        if skip >= len(read):
            skip -= len(read)
            continue
        pieces.append(read[skip:])
        skip = 0
    return head_bytes, pieces


# -- the happy path ----------------------------------------------------------------------------


def test_default_stream_wire_format(fake: FakeUpstream) -> None:
    response = post(fake, chat_body(usage=True))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Connection"] == "close"
    assert "Content-Length" not in response.headers
    items = payloads(sse_events(response))

    assert items[-1] == "[DONE]"
    role, *tokens, finish, usage, _ = items
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [t["choices"][0]["delta"] for t in tokens] == [
        {"content": "Hello"},
        {"content": ","},
        {"content": " world"},
        {"content": "!"},
    ]
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    chunks = [role, *tokens, finish, usage]
    assert {c["id"] for c in chunks} == {role["id"]}
    assert role["id"].startswith("chatcmpl-fake")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "gpt-4o-mini"
        assert chunk["system_fingerprint"] == "fp_fake"
        assert isinstance(chunk["created"], int)
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI does with include_usage


def test_no_usage_chunk_unless_asked_or_when_disabled(fake: FakeUpstream) -> None:
    items = payloads(sse_events(post(fake)))
    assert len(items) == 7
    assert all("usage" not in i for i in items if isinstance(i, dict))

    fake.queue(Scenario(send_usage=False), Scenario(usage={"total_tokens": 99}))
    items = payloads(sse_events(post(fake, chat_body(usage=True))))
    assert not any(i.get("usage") for i in items if isinstance(i, dict))
    items = payloads(sse_events(post(fake, chat_body(usage=True))))
    assert items[-2]["usage"] == {"total_tokens": 99}


def test_non_streaming_completion(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["Bon", "jour ", "😀"]))
    response = post(fake, chat_body(stream=False))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Bonjour 😀",
        "refusal": None,
    }
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 3


def test_queue_is_fifo_then_default(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["one"]), Scenario(tokens=["two"]))
    fake.default = Scenario(tokens=["dflt"])
    got = [content_of(payloads(sse_events(post(fake)))) for _ in range(3)]
    assert got == ["one", "two", "dflt"]
    assert fake.pending == 0


def test_optional_chunks(fake: FakeUpstream) -> None:
    fake.queue(
        Scenario(role_chunk=False, null_content_chunk=True, finish_reason=None, send_done=False),
        Scenario(refusal="I can't help with that.", finish_reason="stop"),
        Scenario(tokens=["a", "b"], stamp=True),
        Scenario(finish_reason="length"),
    )
    items = payloads(sse_events(post(fake)))
    assert items[0]["choices"][0]["delta"] == {"content": None}
    assert "[DONE]" not in items
    assert all(i["choices"][0]["finish_reason"] is None for i in items)

    items = payloads(sse_events(post(fake)))
    deltas = [i["choices"][0]["delta"] for i in items[1:-2]]
    assert all(d["content"] is None for d in deltas)
    assert "".join(d["refusal"] for d in deltas) == "I can't help with that."

    before = time.time()
    items = payloads(sse_events(post(fake)))
    stamps = [i["x_sent_at"] for i in items[1:3]]
    assert before <= stamps[0] <= stamps[1] <= time.time()
    assert "x_sent_at" not in items[0]

    items = payloads(sse_events(post(fake)))
    assert items[-2]["choices"][0]["finish_reason"] == "length"


# -- framing misbehaviour -----------------------------------------------------------------------


def _cut_inside_char(read: bytes) -> bool:
    try:
        read.decode()
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"
    return False


def test_mid_utf8_split_cuts_inside_a_character(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["héllo", " 世界"], split="mid_utf8"))
    _, writes = raw_chat(fake, chat_body())
    assert sum(_cut_inside_char(w) for w in writes) == 2  # one cut per multi-byte event
    body = b"".join(writes)
    assert '"héllo"'.encode() in body  # raw UTF-8, not \u escapes
    assert '" 世界"'.encode() in body

    fake.queue(Scenario(tokens=["héllo", " 世界"], split="mid_utf8"))
    assert content_of(payloads(sse_events(post(fake)))) == "héllo 世界"


def test_mid_utf8_split_reaches_a_close_delimited_reader_in_pieces(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["世界"], split="mid_utf8", chunked=False, split_delay=0.05))
    head, reads = raw_chat(fake, chat_body())
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert any(_cut_inside_char(r) for r in reads)
    assert "世界" in content_of(
        payloads(
            [
                sseclient.Event(data=line[6:].decode())
                for line in b"".join(reads).split(b"\n")
                if line.startswith(b"data: ") and line != b"data: [DONE]"
            ]
        )
    )


def test_mid_line_split_and_crlf(fake: FakeUpstream) -> None:
    fake.queue(Scenario(split="mid_line", crlf=True))
    _, writes = raw_chat(fake, chat_body())
    body = b"".join(writes)
    assert b"\n\n" not in body.replace(b"\r\n", b"")
    assert body.count(b"\r\n\r\n") == 7
    assert len(writes) == 3 * 7
    assert any(w.startswith(b'data: {"id"') and not w.endswith(b"\n") for w in writes)
    assert sum(w.endswith(b"}\r") for w in writes) == 6  # CR and LF arrive separately

    fake.queue(Scenario(split="mid_line", crlf=True))
    assert content_of(payloads(sse_events(post(fake)))) == "Hello, world!"


def test_byte_by_byte(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["é", "世"], split="bytes", crlf=True))
    items = payloads(sse_events(post(fake)))
    assert content_of(items) == "é世"
    assert items[-1] == "[DONE]"


def test_pings(fake: FakeUpstream) -> None:
    fake.queue(Scenario(pings=True))
    _, writes = raw_chat(fake, chat_body())
    assert writes[0] == b": ping\n\n"
    assert writes.count(b": ping\n\n") == 7
    assert writes[1::2] == [w for w in writes if w.startswith(b"data: ")]
    fake.queue(Scenario(pings=True, crlf=True))
    items = payloads(sse_events(post(fake)))
    assert content_of(items) == "Hello, world!"
    assert len(items) == 7


def test_default_stream_is_chunked_and_close_delimited_is_available(fake: FakeUpstream) -> None:
    response = post(fake)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    fake.queue(Scenario(chunked=False, split="mid_line"))
    response = post(fake)
    assert "Transfer-Encoding" not in response.headers
    assert "Content-Length" not in response.headers
    assert response.headers["Connection"] == "close"
    assert content_of(payloads(sse_events(response))) == "Hello, world!"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (403, "request_forbidden", "unsupported_country_region_territory"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (502, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_error_statuses(fake: FakeUpstream, status: int, error_type: str, code: str | None) -> None:
    fake.queue(Scenario(status=status, retry_after="7"))
    response = post(fake)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "7"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (error_type, code, None)
    assert error["message"]
    assert KEY not in error["message"]


def test_401_masks_the_key_like_openai_and_echo_key_does_not(fake: FakeUpstream) -> None:
    fake.queue(Scenario(status=401), Scenario(status=401, echo_key=True))
    message = post(fake).json()["error"]["message"]
    assert message.startswith(f"Incorrect API key provided: {mask_key(KEY)}.")
    assert mask_key(KEY).startswith("sk-pro*") and mask_key(KEY).endswith("*WXYZ")
    assert KEY not in message
    assert KEY in post(fake).json()["error"]["message"]

    fake.queue(Scenario(status=500, echo_key=True, error_message="boom"))
    assert post(fake).json()["error"]["message"] == f"boom (API key used: {KEY})"


def test_error_overrides(fake: FakeUpstream) -> None:
    fake.queue(
        Scenario(status=429, error_code="insufficient_quota"),
        Scenario(status=401, error_code="mismatched_organization", error_message="Nope."),
        Scenario(status=418, error_type="teapot"),
    )
    error = post(fake).json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "exceeded your current quota" in error["message"]
    assert post(fake).json()["error"] == {
        "message": "Nope.",
        "type": "invalid_request_error",
        "param": None,
        "code": "mismatched_organization",
    }
    response = post(fake)
    assert response.status_code == 418
    assert "Retry-After" not in response.headers
    assert (response.json()["error"]["type"], response.json()["error"]["code"]) == ("teapot", None)


def test_html_instead_of_a_stream(fake: FakeUpstream) -> None:
    fake.queue(Scenario(content_type="text/html"), Scenario(status=502, content_type="text/html"))
    response = post(fake)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html"
    assert response.text.startswith("<!DOCTYPE html>")
    response = post(fake)
    assert response.status_code == 502
    assert "502 Bad Gateway" in response.text


def test_request_validation_and_unknown_paths(fake: FakeUpstream) -> None:
    fake.queue(Scenario(tokens=["kept"]))
    response = post(fake, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "you must provide a model parameter"
    response = post(fake, {"model": "gpt-4o", "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    response = requests.post(fake.base_url + "/chat/completions", data=b"{nope", timeout=5)
    assert response.status_code == 400
    assert "could not parse the JSON body" in response.json()["error"]["message"]
    assert fake.pending == 1  # invalid requests do not consume scenarios

    response = requests.post(fake.base_url + "/chat/completion", json={}, timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Invalid URL (POST /v1/chat/completion)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# -- mid-stream failures ----------------------------------------------------------------------


def test_error_after(fake: FakeUpstream) -> None:
    fake.queue(Scenario(error_after=2))
    items = payloads(sse_events(post(fake)))
    assert content_of(items) == "Hello,"
    assert items[-1] == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "code": None,
        }
    }
    assert "[DONE]" not in items


def test_event_error_after_with_echoed_key(fake: FakeUpstream) -> None:
    fake.queue(Scenario(event_error_after=1, echo_key=True, error_code="overloaded"))
    events = sse_events(post(fake))
    assert events[-1].event == "error"
    error = json.loads(events[-1].data)["error"]
    assert error["code"] == "overloaded"
    assert KEY in error["message"]
    assert content_of(payloads(events[:-1])) == "Hello"


def test_drop_after_is_a_protocol_error_when_chunked(fake: FakeUpstream) -> None:
    fake.queue(Scenario(drop_after=1))
    seen = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for part in post(fake).iter_content(chunk_size=None):
            seen += part
    assert b'"Hello"' in seen
    assert b"[DONE]" not in seen


def test_drop_after_close_delimited_ends_without_done(fake: FakeUpstream) -> None:
    fake.queue(Scenario(drop_after=2, chunked=False))
    items = payloads(sse_events(post(fake)))
    assert content_of(items) == "Hello,"
    assert "[DONE]" not in items
    assert all(i["choices"][0]["finish_reason"] is None for i in items)


def test_drop_reset(fake: FakeUpstream) -> None:
    fake.queue(Scenario(drop_after=0, drop_reset=True, first_token_delay=0.05))
    try:
        body = b"".join(post(fake).iter_content(chunk_size=None))
    except requests.exceptions.RequestException:
        body = b""
    assert b"[DONE]" not in body


# -- delays, hangs and disconnects -----------------------------------------------------------


def test_first_token_delay_after_headers(fake: FakeUpstream) -> None:
    fake.queue(Scenario(first_token_delay=0.3))
    started = time.monotonic()
    response = post(fake)
    headers_at = time.monotonic() - started
    first = next(response.iter_content(chunk_size=None))
    first_at = time.monotonic() - started
    assert headers_at < 0.25 <= first_at
    assert first.startswith(b"data: ")
    response.close()


def test_hang_then_client_close_counts_a_disconnect(fake: FakeUpstream) -> None:
    fake.queue(Scenario(hang_after=2))
    response = post(fake)
    parts = response.iter_content(chunk_size=None)
    seen = b""
    while seen.count(b"data: ") < 3:
        seen += next(parts)
    assert fake.disconnects == 0
    started = time.monotonic()
    response.close()
    assert fake.wait_for_disconnect(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert fake.disconnects == 1


def test_hang_then_release_completes(fake: FakeUpstream) -> None:
    fake.queue(Scenario(hang_after=1))
    response = post(fake)
    timer = threading.Timer(0.2, fake.release)
    timer.start()
    started = time.monotonic()
    items = payloads(sse_events(response))
    assert time.monotonic() - started >= 0.15
    assert content_of(items) == "Hello, world!"
    assert items[-1] == "[DONE]"
    assert fake.disconnects == 0


def test_stop_during_token_delay_is_seen_quickly(fake: FakeUpstream) -> None:
    fake.queue(Scenario(token_delay=2.0))
    response = post(fake)
    parts = response.iter_content(chunk_size=None)
    seen = b""
    while b'"Hello"' not in seen:
        seen += next(parts)
    started = time.monotonic()
    response.close()
    assert fake.wait_for_disconnect(timeout=1.0)
    assert time.monotonic() - started < 0.5


def test_stop_returns_promptly_with_hung_streams() -> None:
    fake = FakeUpstream().start()
    fake.queue(Scenario(hang_after=0))
    response = post(fake)
    next(response.iter_content(chunk_size=None))
    keep_alive = requests.Session()
    assert keep_alive.get(fake.base_url + "/models", timeout=5).status_code == 200
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    assert b"[DONE]" not in b"".join(response.iter_content(chunk_size=None))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(fake.base_url + "/models", timeout=1)
    keep_alive.close()


def test_reset(fake: FakeUpstream) -> None:
    fake.queue(Scenario(hang_after=0))
    response = post(fake)
    next(response.iter_content(chunk_size=None))
    fake.default = Scenario(tokens=["x"])
    fake.reset()
    response.close()  # a stream from before the reset no longer counts
    assert not fake.wait_for_disconnect(timeout=0.2)
    assert fake.requests == [] and fake.pending == 0 and fake.disconnects == 0
    assert fake.default == Scenario()


# -- recording and models ---------------------------------------------------------------------


def test_recorded_requests_and_bearer_tokens(fake: FakeUpstream) -> None:
    before = time.time()
    post(fake, headers={"OpenAI-Organization": "org-1", "OpenAI-Project": "proj_2"}).close()
    requests.get(fake.base_url + "/models", headers={"Authorization": "Bearer sk-other"}, timeout=5)
    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["openai-organization"] == "org-1"
    assert first.headers["openai-project"] == "proj_2"
    assert first.body == chat_body()
    assert before <= first.received_at <= second.received_at
    assert (second.method, second.path, second.body) == ("GET", "/v1/models", None)
    assert fake.bearer_tokens() == {KEY, "sk-other"}
    assert fake.chat_requests == [first]


def test_models_endpoint(fake: FakeUpstream) -> None:
    data = requests.get(fake.base_url + "/models", timeout=5).json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert data["data"][0]["object"] == "model" and data["data"][0]["owned_by"] == "fake"

    fake.default = Scenario(models=["m1"])
    data = requests.get(fake.base_url + "/models", timeout=5).json()
    assert [m["id"] for m in data["data"]] == ["m1"]

    fake.models_status = 401
    response = requests.get(
        fake.base_url + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert mask_key(KEY) in response.json()["error"]["message"]
