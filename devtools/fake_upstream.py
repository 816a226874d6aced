"""A real, misbehaving OpenAI-compatible HTTP server for tests.

Why this exists: the chat proxy's hardest bugs live on the wire, not in the JSON. A mocked
``requests`` call never splits an SSE event in the middle of a UTF-8 character, never hangs
after three tokens, never resets the connection, never answers a stream with a captive-portal
HTML page, and never lets a test prove that pressing "Stop" really closed the upstream socket.
``FakeUpstream`` is a stdlib ``ThreadingHTTPServer`` on loopback that speaks OpenAI's exact
chat-completion wire format (chunked ``text/event-stream``, ``data: [DONE]``, OpenAI error
JSON) and misbehaves on request, scenario by scenario::

    with FakeUpstream() as fake:
        fake.queue(Scenario(tokens=["héllo", " 世界"], split="mid_utf8"))
        ...  # point the app's API key at fake.base_url and drive it
        assert fake.requests[0].headers["authorization"] == "Bearer sk-test"

Everything is stdlib-only, handler threads are daemons, nothing is logged to stderr, and
``stop()`` returns promptly even while streams are hung.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "DEFAULT_MODELS", "STAMP_MARK", "FakeUpstream", "RecordedRequest", "Scenario", "mask_key",
]

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
PROMPT_TOKENS = 7
HANG_CAP = 60.0  # seconds: a hung stream never outlives this
POLL = 0.02  # seconds: how often sleeping/hung streams look for a closed client
MID_SPLIT_DELAY = 0.002  # default pause between the parts of a "mid_line"/"mid_utf8" event
SPLIT_MODES = (None, "mid_line", "mid_utf8", "bytes")
# Brackets the send time that ``Scenario.stamp_content`` appends to each token's text
# (U+2063 INVISIBLE SEPARATOR: survives HTML escaping and JSON, unlikely in real tokens).
STAMP_MARK = "\u2063"

STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
INCORRECT_KEY_MESSAGE = (
    "Incorrect API key provided: {key}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>"
    "<body><h1>Network login required</h1><p>This proxy needs you to sign in.</p></body></html>\n"
)
HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

# status -> (type, code, message); "{model}" is filled with the requested model.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", ""),  # message built from the key
    403: (
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: ("server_error", None, SERVER_ERROR_MESSAGE),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}

# code -> (type, message) used when a Scenario overrides error_code.
_CODE_ERRORS: dict[str, tuple[str, str]] = {
    "invalid_api_key": ("invalid_request_error", ""),
    "insufficient_quota": (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    ),
    "mismatched_organization": (
        "invalid_request_error",
        "OpenAI-Organization header should match organization for API key.",
    ),
    "mismatched_project": (
        "invalid_request_error",
        "OpenAI-Project header should match project for API key.",
    ),
    "model_not_found": _STATUS_ERRORS[404][::2],
    "rate_limit_exceeded": _STATUS_ERRORS[429][::2],
    "unsupported_country_region_territory": _STATUS_ERRORS[403][::2],
}


def mask_key(key: str) -> str:
    """Mask an API key the way OpenAI echoes it: a few leading chars, stars, the last four."""
    if len(key) >= 14:
        return key[:6] + "*" * (len(key) - 10) + key[-4:]
    if len(key) >= 8:
        return key[:3] + "*" * (len(key) - 7) + key[-4:]
    return "*" * len(key)


@dataclass
class Scenario:
    """How the fake answers one chat-completion request.

    A stream is: [ping] role chunk, [null-content chunk], one chunk per token (or refusal
    piece), finish chunk (empty delta), usage chunk (``"choices": []``, only if the request set
    ``stream_options.include_usage``), ``data: [DONE]``. "N content chunks" in the ``*_after``
    fields counts token/refusal chunks only; 0 means right after the role chunk.

    - ``first_token_delay``: pause after the headers, before the first chunk; ``token_delay``:
      pause between token chunks. Both notice a closed client within ~20 ms.
    - ``split``: None (one write per event), "mid_line" (cut in the middle of the ``data:``
      line; with ``crlf`` also between CR and LF), "mid_utf8" (cut inside the first multi-byte
      character, else like "mid_line"), "bytes" (one byte per write).
    - ``status`` != 200: OpenAI error JSON (type/code/message by status, overridable); 401
      echoes the bearer token masked as OpenAI does, ``echo_key`` puts the full token in any
      error message, mid-stream ones included. ``content_type``: "text/html" answers an HTML
      page (200) or nginx error page (!= 200); a JSON type answers a non-streamed completion.
    - ``error_after`` / ``event_error_after``: an error object as ``data:`` / ``event: error``,
      then a clean end without [DONE]. ``drop_after``: cut the TCP connection (FIN, or RST with
      ``drop_reset``). ``hang_after``: stall until ``FakeUpstream.release()``, the client
      leaving, ``reset()``/``stop()``, or 60 s.
    - ``stamp``: ``"x_sent_at": time.time()`` in each token chunk. ``stamp_content``: the send
      time appended to each token's *text* as ``STAMP_MARK + "%.6f" + STAMP_MARK``, so it travels
      through a proxy to its clients (benchmarks). ``models``: the ids ``GET /v1/models`` lists
      (read from ``FakeUpstream.default``).
    - ``keep_alive``: a chunked stream that ended cleanly leaves the connection open for the next
      request, as OpenAI does (by default every stream says ``Connection: close``);
      ``linger_after_done``: pause after ``data: [DONE]`` before ending the body.
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    finish_reason: str | None = "stop"  # None: no finish chunk
    usage: dict | None = None  # None: computed {"prompt_tokens": 7, "completion_tokens": ...}
    send_usage: bool = True
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    split: str | None = None
    # Pause between the writes of one split event; None: MID_SPLIT_DELAY for "mid_line" and
    # "mid_utf8" (so even a close-delimited reader gets the parts separately), 0 for "bytes".
    split_delay: float | None = None
    crlf: bool = False
    pings: bool = False  # ": ping" comment before every event (and before first_token_delay)
    role_chunk: bool = True
    null_content_chunk: bool = False
    refusal: str | None = None  # streamed word by word as {"content": null, "refusal": ...}
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    echo_key: bool = False
    retry_after: str | None = None  # Retry-After header on error responses
    content_type: str | None = None
    error_after: int | None = None
    event_error_after: int | None = None
    drop_after: int | None = None
    drop_reset: bool = False  # drop_after closes with a TCP RST instead of a FIN
    drop_after_finish: bool = False  # cut the connection right after the finish chunk
    # An error answer's body sent as is (with ``status``), "{key}" replaced by the bearer token;
    # and extra response headers, "{key}" replaced too: a provider echoing the key in any form.
    raw_error_body: str | None = None
    headers: dict[str, str] | None = None
    # Streams use Transfer-Encoding: chunked like OpenAI, one HTTP chunk per write (so a split
    # event really arrives in pieces, and a drop is a protocol error for the client). False: a
    # close-delimited body (requests' iter_content(chunk_size=None) then reads to EOF!).
    chunked: bool = True
    send_done: bool = True
    hang_after: int | None = None
    stamp: bool = False
    stamp_content: bool = False
    models: list[str] | None = None
    keep_alive: bool = False
    linger_after_done: float = 0.0

    def __post_init__(self) -> None:
        if self.split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, not {self.split!r}")


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict | None  # parsed JSON body; None for GET or unparseable bodies
    received_at: float
    raw_body: bytes = b""


class _ClientGone(Exception):
    """The client closed the connection (a write failed or EOF was seen)."""


class _Aborted(Exception):
    """The server is stopping, was reset, or a hang hit its cap: close quietly."""


def _split_event(data: bytes, mode: str | None, crlf: bool) -> list[bytes]:
    """Cut one SSE event's bytes into the writes the ``split`` mode asks for."""
    if mode is None or len(data) < 2:
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    if mode == "mid_utf8":
        for i, byte in enumerate(data):
            if byte >= 0xC0:  # lead byte of a multi-byte character: cut right after it
                return [data[: i + 1], data[i + 1 :]]
    start = data.find(b"data:")
    if start < 0:
        mid = len(data) // 2
        return [data[:mid], data[mid:]]
    end = start
    while end < len(data) and data[end] not in b"\r\n":
        end += 1
    mid = start + (end - start) // 2
    while mid < end and (data[mid] & 0xC0) == 0x80:  # mid_line stays on a character boundary
        mid += 1
    parts = [data[:mid]]
    if crlf and data[end : end + 2] == b"\r\n":  # also cut between the CR and the LF
        parts += [data[mid : end + 1], data[end + 1 :]]
    else:
        parts.append(data[mid:])
    return [part for part in parts if part]


def _pieces(text: str) -> list[str]:
    """Split a refusal into word-sized deltas the way a model streams it."""
    return re.findall(r"\s*\S+", text) or [text]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away: expected, not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fake-openai/1.0"
    sys_version = ""

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def fake(self) -> FakeUpstream:
        return self.server.fake

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self) -> RecordedRequest:
        raw = self._read_body()
        body: dict | None = None
        if raw:
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = RecordedRequest(self.command, self.path, headers, body, time.time(), raw)
        self.fake._record(request)
        return request

    def _bearer(self) -> str:
        match = re.match(r"\s*bearer\s+(\S+)", self.headers.get("Authorization", ""), re.I)
        return match.group(1) if match else ""

    def _send_body(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"req_fake{uuid.uuid4().hex[:24]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode()
        self._send_body(status, body, "application/json", headers)

    def _error_object(
        self,
        status: int,
        model: str = "",
        *,
        error_type: str | None = None,
        code: str | None = None,
        message: str | None = None,
        echo_key: bool = False,
        param: str | None = None,
    ) -> dict:
        default_type, default_code, default_message = _STATUS_ERRORS.get(
            status,
            ("invalid_request_error" if status < 500 else "server_error", None, ""),
        )
        code = code if code is not None else default_code
        if code in _CODE_ERRORS and code != default_code:
            default_type, default_message = _CODE_ERRORS[code]
        key = self._bearer()
        if message is None:
            if code == "invalid_api_key":
                shown = key if echo_key else mask_key(key)
                message = INCORRECT_KEY_MESSAGE.format(key=shown) if key else NO_KEY_MESSAGE
                echo_key = False  # already in the message
            else:
                message = default_message.format(model=model or "gpt-4o-mini")
                message = message or f"Request failed with status {status}."
        if echo_key:
            message = f"{message} (API key used: {key})"
        return {
            "error": {
                "message": message,
                "type": error_type or default_type,
                "param": param,
                "code": code,
            }
        }

    def _extra_headers(self, sc: Scenario) -> dict[str, str]:
        return {name: value.replace("{key}", self._bearer())
                for name, value in (sc.headers or {}).items()}

    def _send_error_json(self, status: int, error: dict, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        self._send_json(status, error, headers)

    # -- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models" or path.startswith("/v1/models/"):
            self._models(path)
        else:
            self._not_found()

    def do_POST(self) -> None:
        request = self._record()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/chat/completions":
            self._chat(request)
        else:
            self._not_found()

    def _other(self) -> None:
        self._record()
        self._not_found()

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _other  # noqa: N815 - stdlib naming

    def _not_found(self) -> None:
        path = self.path.split("?", 1)[0]
        error = self._error_object(404, code=None, message=f"Invalid URL ({self.command} {path})")
        error["error"]["code"] = None
        self._send_json(404, error)

    def _models(self, path: str) -> None:
        status = self.fake.models_status
        raw = self.fake.default.raw_error_body
        if status != 200 and raw is not None:
            payload = raw.replace("{key}", self._bearer()).encode()
            self._send_body(status, payload, self.fake.default.content_type or "application/json",
                            self._extra_headers(self.fake.default))
            return
        if status != 200:
            self._send_error_json(status, self._error_object(status))
            return
        ids = self.fake.default.models
        ids = list(DEFAULT_MODELS if ids is None else ids)
        created = 1_700_000_000
        models = [{"id": i, "object": "model", "created": created, "owned_by": "fake"} for i in ids]
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": models})
            return
        wanted = path[len("/v1/models/") :]
        for model in models:
            if model["id"] == wanted:
                self._send_json(200, model)
                return
        self._send_json(404, self._error_object(404, wanted))

    # -- chat completions ------------------------------------------------------------------

    def _chat(self, request: RecordedRequest) -> None:
        body = request.body
        if body is None:
            self._send_json(400, self._error_object(400, message=BAD_JSON_MESSAGE))
            return
        if not body.get("model"):
            error = self._error_object(400, message="you must provide a model parameter")
            self._send_json(400, error)
            return
        if "messages" not in body:
            error = self._error_object(
                400,
                code="missing_required_parameter",
                message="Missing required parameter: 'messages'.",
                param="messages",
            )
            self._send_json(400, error)
            return

        scenario, epoch, release_gen = self.fake._take()
        model = str(body["model"])
        sc = scenario
        ct = sc.content_type
        if sc.status != 200 and sc.raw_error_body is not None:
            payload = sc.raw_error_body.replace("{key}", self._bearer()).encode()
            self._send_body(sc.status, payload, ct or "application/json", self._extra_headers(sc))
            return
        if sc.status != 200:
            if ct is not None and "json" not in ct:
                phrase = self.responses.get(sc.status, ("Error",))[0]
                page = HTML_ERROR_PAGE if "html" in ct else "{status} {phrase}\n"
                headers = {"Retry-After": sc.retry_after} if sc.retry_after is not None else None
                payload = page.format(status=sc.status, phrase=phrase).encode()
                self._send_body(sc.status, payload, ct, headers)
                return
            error = self._error_object(
                sc.status,
                model,
                error_type=sc.error_type,
                code=sc.error_code,
                message=sc.error_message,
                echo_key=sc.echo_key,
            )
            self._send_error_json(sc.status, error, sc.retry_after)
            return

        wants_stream = bool(body.get("stream"))
        if ct is None:
            as_stream, as_json = wants_stream, not wants_stream
        else:
            as_stream, as_json = "event-stream" in ct, "json" in ct and "event-stream" not in ct
        stream = _Stream(self, sc, body, epoch, release_gen)
        try:
            if as_stream:
                stream.run()
            elif as_json:
                stream.run_plain()
            else:
                self.close_connection = True
                self._send_body(200, HTML_PAGE.encode(), ct or "text/html", {"Connection": "close"})
        except _ClientGone:
            self.close_connection = True
            self.fake._note_disconnect(epoch)
        except _Aborted:
            self.close_connection = True


class _Stream:
    """Writes one chat completion, streamed or not, following a Scenario."""

    def __init__(
        self, handler: _Handler, sc: Scenario, body: dict, epoch: int, release_gen: int
    ) -> None:
        self.h = handler
        self.sc = sc
        self.fake = handler.fake
        self.sock: socket.socket = handler.connection
        self.epoch = epoch
        self.release_gen = release_gen
        self.model = str(body["model"])
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.id = f"chatcmpl-fake{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.nl = "\r\n" if sc.crlf else "\n"
        self.chunked = False
        self.pieces = _pieces(sc.refusal) if sc.refusal is not None else list(sc.tokens)
        delay = sc.split_delay
        if delay is None:
            delay = MID_SPLIT_DELAY if sc.split in ("mid_line", "mid_utf8") else 0.0
        self.split_delay = delay

    # -- low level -------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.fake._stopping.is_set() or self.fake._epoch != self.epoch:
            raise _Aborted

    def _client_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the socket to become readable; True if the peer closed."""
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data:  # the client sent something (pipelining?): not a close, don't spin on it
            time.sleep(timeout)
            return False
        return True

    def sleep(self, seconds: float) -> None:
        """Sleep in small slices, noticing a closed client or a stopping server."""
        deadline = time.monotonic() + seconds
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._client_closed(min(POLL, remaining)):
                raise _ClientGone

    def hang(self) -> None:
        deadline = time.monotonic() + HANG_CAP
        while self.fake._release_gen <= self.release_gen:
            self._check_alive()
            if time.monotonic() >= deadline:
                raise _Aborted
            if self._client_closed(0.05):
                raise _ClientGone

    def write(self, data: bytes) -> None:
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        try:
            self.h.wfile.write(data)
        except OSError as exc:
            raise _ClientGone from exc

    def write_event(self, text: str) -> None:
        parts = _split_event(text.encode(), self.sc.split, self.sc.crlf)
        for i, part in enumerate(parts):
            if i and self.split_delay:
                self.sleep(self.split_delay)
            self.write(part)

    def ping(self) -> None:
        self.write_event(f": ping{self.nl}{self.nl}")

    def data(self, payload: Any, event: str | None = None) -> None:
        if self.sc.pings:
            self.ping()
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        if re.search("[\ud800-\udfff]", text):  # unpaired surrogates only exist as \u escapes
            text = json.dumps(payload)
        prefix = f"event: {event}{self.nl}" if event else ""
        self.write_event(f"{prefix}data: {text}{self.nl}{self.nl}")

    def drop(self) -> None:
        if self.sc.drop_reset:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                self.h.rfile.close()  # release the makefile reference so close() is real
                self.sock.close()
        else:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.h.close_connection = True

    # -- content ---------------------------------------------------------------------------

    def chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            obj["usage"] = None
        return obj

    def usage(self) -> dict:
        if self.sc.usage is not None:
            return self.sc.usage
        n = len(self.pieces)
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": n,
            "total_tokens": PROMPT_TOKENS + n,
        }

    def error_payload(self) -> dict:
        error = self.h._error_object(
            500,
            self.model,
            error_type=self.sc.error_type or "server_error",
            code=self.sc.error_code,
            message=self.sc.error_message or SERVER_ERROR_MESSAGE,
            echo_key=self.sc.echo_key,
        )
        del error["error"]["param"]
        return error

    def interrupt(self, sent: int) -> bool:
        """Apply whatever misbehaviour is due after ``sent`` content chunks; True: stop now."""
        sc = self.sc
        if sc.hang_after == sent:
            self.hang()
        if sc.drop_after == sent:
            self.drop()
            return True
        if sc.error_after == sent:
            self.data(self.error_payload())
            self.end()
            return True
        if sc.event_error_after == sent:
            self.data(self.error_payload(), event="error")
            self.end()
            return True
        return False

    def end(self) -> None:
        if self.chunked:
            self.chunked = False
            self.write(b"0\r\n\r\n")

    def run(self) -> None:
        sc, h = self.sc, self.h
        # Any way out but a clean end (a drop, an abort, the client leaving) closes it again.
        h.close_connection = not (sc.keep_alive and sc.chunked)
        h.send_response(200)
        h.send_header("Content-Type", sc.content_type or STREAM_CONTENT_TYPE)
        h.send_header("Cache-Control", "no-cache, must-revalidate")
        h.send_header("X-Request-Id", f"req_fake{uuid.uuid4().hex[:24]}")
        for name, value in h._extra_headers(sc).items():
            h.send_header(name, value)
        if sc.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        if h.close_connection:
            h.send_header("Connection", "close")
        try:
            h.end_headers()
        except OSError as exc:
            raise _ClientGone from exc
        self.chunked = sc.chunked

        if sc.first_token_delay > 0:
            if sc.pings:
                self.ping()
            self.sleep(sc.first_token_delay)
        if sc.role_chunk:
            if sc.refusal is not None:
                self.data(self.chunk({"role": "assistant", "content": None, "refusal": ""}))
            else:
                self.data(self.chunk({"role": "assistant", "content": ""}))
        if sc.null_content_chunk:
            self.data(self.chunk({"content": None}))
        for sent, piece in enumerate(self.pieces):
            if self.interrupt(sent):
                return
            if sent and sc.token_delay > 0:
                self.sleep(sc.token_delay)
            if sc.stamp_content:
                piece = f"{piece}{STAMP_MARK}{time.time():.6f}{STAMP_MARK}"
            if sc.refusal is not None:
                obj = self.chunk({"content": None, "refusal": piece})
            else:
                obj = self.chunk({"content": piece})
            if sc.stamp:
                obj["x_sent_at"] = time.time()
            self.data(obj)
        if self.interrupt(len(self.pieces)):
            return
        if sc.finish_reason is not None:
            self.data(self.chunk({}, sc.finish_reason))
        if sc.drop_after_finish:
            self.drop()
            return
        if self.include_usage and sc.send_usage:
            obj = self.chunk({})
            obj["choices"] = []
            obj["usage"] = self.usage()
            self.data(obj)
        if sc.send_done:
            self.data("[DONE]")
        if sc.linger_after_done:
            self.sleep(sc.linger_after_done)
        self.end()

    def run_plain(self) -> None:
        """A non-streaming ``chat.completion`` object with the joined tokens."""
        sc = self.sc
        self.sleep(sc.first_token_delay + sc.token_delay * max(len(self.pieces) - 1, 0))
        if sc.hang_after is not None:
            self.hang()
        if sc.drop_after is not None:
            self.drop()
            return
        text = "".join(self.pieces)
        refusal = text if sc.refusal is not None else None
        message = {"role": "assistant", "content": None if refusal else text, "refusal": refusal}
        obj = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": sc.finish_reason or "stop",
                }
            ],
            "usage": self.usage(),
            "system_fingerprint": "fp_fake",
        }
        try:
            self.h._send_body(
                200,
                json.dumps(obj, ensure_ascii=False).encode(),
                sc.content_type or "application/json",
            )
        except OSError as exc:
            raise _ClientGone from exc


class FakeUpstream:
    """A loopback OpenAI-compatible server; ``queue()`` scenarios, then read ``requests``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.default = Scenario()
        self.models_status = 200
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Scenario] = deque()
        self._disconnects = 0
        self._epoch = 0
        self._release_gen = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, 0), self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeUpstream:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
            connections = list(self._connections)
        server.shutdown()
        server.server_close()
        for conn in connections:  # wake handlers blocked reading a kept-alive connection
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The listening port; after ``stop()`` the old one (connections are then refused)."""
        if self._port is None:
            raise RuntimeError("FakeUpstream was never started")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- test controls ---------------------------------------------------------------------

    def queue(self, *scenarios: Scenario) -> None:
        """Answer the next chat requests with these scenarios, in order, then ``default``."""
        with self._lock:
            self._queue.extend(scenarios)

    def release(self) -> None:
        """Let streams hung by ``hang_after`` (including ones about to hang) continue."""
        with self._changed:
            self._release_gen += 1
            self._changed.notify_all()

    def reset(self) -> None:
        """Forget queue, requests, disconnects and connections; default back to ``Scenario()``.

        Streams still running from before the reset are closed at their next pause and no
        longer count as disconnects.
        """
        with self._changed:
            self._queue.clear()
            self.requests.clear()
            self._disconnects = 0
            self._accepted = 0
            self._epoch += 1
            self.default = Scenario()
            self.models_status = 200
            self._changed.notify_all()

    @property
    def disconnects(self) -> int:
        """Chat streams the client closed before the fake finished writing them."""
        with self._lock:
            return self._disconnects

    @property
    def connections(self) -> int:
        """TCP connections accepted since the last reset (a kept-alive one counts once)."""
        with self._lock:
            return self._accepted

    @property
    def pending(self) -> int:
        """How many queued scenarios are still unused."""
        with self._lock:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/chat/completions")]

    def wait_for_disconnect(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Block until ``disconnects >= count`` (since the last reset); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= count, timeout)

    def bearer_tokens(self) -> set[str]:
        """Every token seen in an ``Authorization: Bearer`` header."""
        with self._lock:
            headers = [r.headers.get("authorization", "") for r in self.requests]
        tokens = set()
        for value in headers:
            match = re.match(r"\s*bearer\s+(\S+)", value, re.I)
            if match:
                tokens.add(match.group(1))
        return tokens

    # -- called by handlers ----------------------------------------------------------------

    def _take(self) -> tuple[Scenario, int, int]:
        with self._lock:
            scenario = self._queue.popleft() if self._queue else self.default
            return scenario, self._epoch, self._release_gen

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _note_disconnect(self, epoch: int) -> None:
        with self._changed:
            if epoch == self._epoch:
                self._disconnects += 1
                self._changed.notify_all()

    def _track(self, conn: socket.socket, active: bool) -> None:
        with self._lock:
            if active:
                self._connections.add(conn)
                self._accepted += 1
            else:
                self._connections.discard(conn)
