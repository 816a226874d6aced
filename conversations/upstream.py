"""Client for OpenAI-compatible chat-completion APIs: the only importer of requests/sseclient-py.

``stream_chat`` posts one streaming chat completion and yields typed events (text, finish,
usage). Every failure — an error status, an error object in the stream, a cut connection, a
timeout — surfaces as one ``UpstreamError`` carrying what the member should read and what the
admin needs to tell which key failed and why. Error text from upstream is masked before it is
kept, since servers echo parts of the key they were sent: every text taken from an upstream
answer (error fields, headers shown to people, model ids, the reply's text) passes the
credentials' one scrub (``Credentials.scrub``) and ``text.clean`` before it leaves this module.

Connections to a provider are kept alive and reused by the next request (``_session``): a new
one per reply would cost a TCP and, with a real provider, a TLS handshake every time.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import requests
import sseclient
import urllib3
from django.conf import settings
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from . import text as text_rules
from .crypto import Credentials, mask_text

__all__ = ["ChatStream", "Credentials", "Event", "Finish", "TextDelta", "UpstreamError", "Usage",
           "classify", "list_models"]

logger = logging.getLogger(__name__)

# After ``data: [DONE]`` the end of the body (a chunked body's last, empty chunk) is read for at
# most this long, so that the connection can serve the next request; a provider slower than that
# costs a new connection, never a later reply.
DRAIN_SECONDS = 0.1
DRAIN_BYTES = 64 * 1024

_threads = threading.local()


def _session(base_url: str) -> requests.Session:
    """Return this thread's session for ``base_url``, whose connections outlive one request.

    One per thread: a ``requests.Session`` is not safe to share between threads, and a connection
    that ``ChatStream.close()`` shut down from another thread must not be handed to a third one.
    Generation threads are a bounded pool, so a provider sees at most
    ``CHATSITE_MAX_GENERATIONS`` idle connections per process. Cookies are refused, as they were
    by a session per request: a provider's cookie for one key never rides along with another's.
    The proxies and CA bundle the environment names for ``base_url`` are read once, here, not on
    every request (and no ``.netrc`` login replaces the key's ``Authorization`` header).
    """
    sessions = getattr(_threads, "sessions", None)
    if sessions is None:
        sessions = _threads.sessions = {}
    session = sessions.get(base_url)
    if session is None:
        session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        environment = session.merge_environment_settings(base_url, {}, None, None, None)
        session.proxies, session.verify = environment["proxies"], environment["verify"]
        session.trust_env = False
        sessions[base_url] = session
    return session


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finish:
    reason: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    # Parts of the figures above (``prompt_tokens_details`` / ``completion_tokens_details``);
    # None where the provider did not report them.
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None  # of the prompt's (``prompt_tokens_details``)


Event = TextDelta | Finish | Usage


class UpstreamError(Exception):
    """A failed upstream call, with a message a member understands.

    ``kind`` names the failure for code (``auth``, ``quota``, ``rate_limit``, ...);
    ``detail`` is the upstream's own (masked) words for the admin.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        error_type: str = "",
        code: str = "",
        detail: str = "",
        retry_after: float | None = None,
        param: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.error_type = error_type or ""
        self.code = code or ""
        self.param = param or ""
        self.detail = mask_text(detail or "")
        self.retry_after = retry_after
        # Whether the provider had accepted the request (answered 200) when it failed: it may
        # have billed it, so it is never sent again automatically.
        self.accepted = False

    def scrubbed(self, scrub) -> UpstreamError:
        """Return this error with ``scrub`` and ``text.clean`` applied to every text field,
        and the short fields cut to what the database keeps."""
        def safe(value: str, limit: int | None = None) -> str:
            value = text_rules.clean(mask_text(scrub(value or "")))
            return value[:limit] if limit else value

        self.message = safe(self.message)
        self.detail = safe(self.detail, 4000)
        self.error_type = safe(self.error_type, 100)
        self.code = safe(self.code, 100)
        self.param = safe(self.param, 100)
        self.args = (self.message,)
        return self

    @property
    def retryable(self) -> bool:
        return self.kind in {"rate_limit", "server", "unavailable", "timeout", "connection"}

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        if self.param:
            parts.append(f"param {self.param}")
        return f"{self.message} ({', '.join(parts)})"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_fields(payload: object) -> tuple[str, str, str, str]:
    """Return (type, code, message, param) of an OpenAI error object, tolerating other
    shapes."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return (
            str(error.get("type") or ""),
            str(error.get("code") or ""),
            str(error.get("message") or ""),
            str(error.get("param") or ""),
        )
    if isinstance(error, str):
        return "", "", error, ""
    return "", "", "", ""


def classify(
    status: int | None, error_type: str, code: str, detail: str, retry_after: float | None = None,
    param: str = "", model: str = "",
) -> UpstreamError:
    """Return the ``UpstreamError`` for an upstream status and OpenAI error type/code (and the
    model the request was for, which a refused parameter's message names)."""
    lowered = f"{error_type} {code}".lower()

    def error(kind: str, message: str) -> UpstreamError:
        return UpstreamError(
            kind, message, status=status, error_type=error_type, code=code,
            detail=detail, retry_after=retry_after, param=param,
        )

    if "insufficient_quota" in lowered:
        return error("quota", _(
            "The API key's quota is used up (billing limit reached). Ask an administrator "
            "to check the plan and billing of this key."
        ))
    if "mismatched_organization" in lowered or "mismatched_project" in lowered or (
        status == 401 and "organization" in detail.lower()
    ):
        return error("scope", _(
            "The API key does not belong to the configured OpenAI organization or project. "
            "Ask an administrator to check the key's organization and project."
        ))
    if status == 401 or "invalid_api_key" in lowered:
        return error("auth", _(
            "The API key was rejected by the AI provider. Ask an administrator to check or "
            "replace it."
        ))
    if status == 403:
        return error("forbidden", _(
            "The AI provider refused this request for this key (no access to this model, "
            "organization or project, or from this region)."
        ))
    if status == 404 or "model_not_found" in lowered:
        return error("not_found", _(
            "The model was not found, or this key has no access to it. Pick another model."
        ))
    if status == 429:
        return error("rate_limit", _(
            "The AI provider is rate limiting this key. Wait a moment and retry."
        ))
    if status in (400, 422):
        if "context_length" in lowered or "context length" in detail.lower():
            return error("context_length", _(
                "The conversation is too long for this model. Start a new chat or pick a "
                "model with a larger context."
            ))
        if "content_filter" in lowered or "content_policy" in lowered:
            return error("content_filter", _(
                "The AI provider's content filter rejected this request."
            ))
        if param:
            return error("parameter", _(
                "The AI provider refused the parameter “%(param)s” for the model %(model)s: "
                "%(detail)s An administrator can change what is sent to this model in its "
                "entry of the model catalog."
            ) % {"param": param, "model": model or _("of this chat"),
                 "detail": mask_text(detail) or code or status})
        return error("bad_request", _("The AI provider rejected the request: %(detail)s") % {
            "detail": mask_text(detail) or status
        })
    if status is not None and status >= 500:
        return error("server", _(
            "The AI provider had an internal error (HTTP %(status)s). Retry in a moment."
        ) % {"status": status})
    return error("server", _("The AI provider reported an error: %(detail)s") % {
        "detail": mask_text(detail) or error_type or code or "unknown"
    })


def _from_response(response: requests.Response, scrub, model: str = "") -> UpstreamError:
    """Return the error an HTTP error response stands for (its text scrubbed by the caller)."""
    content_type = response.headers.get("Content-Type", "")
    try:
        body = response.text[:20_000]
    except requests.RequestException:
        body = ""
    error_type, code, detail, param = "", "", "", ""
    if "json" in content_type:
        try:
            error_type, code, detail, param = _error_fields(json.loads(body))
        except ValueError:
            detail = scrub(body)[:4000]
    else:
        detail = scrub(body)[:300]
    if response.status_code in (502, 503, 504):
        return UpstreamError(
            "unavailable",
            _("The AI provider is unreachable or overloaded (HTTP %(status)s). Retry in a moment.")
            % {"status": response.status_code},
            status=response.status_code, detail=detail, retry_after=_retry_after(response),
        )
    return classify(
        response.status_code, error_type, code, detail, _retry_after(response), param=param,
        model=model,
    )


def _connection_error(exc: Exception, *, during_stream: bool) -> UpstreamError:
    if isinstance(exc, (requests.ConnectTimeout,)):
        return UpstreamError(
            "timeout", _("The AI provider did not answer in time (connection timed out)."),
            detail=str(exc),
        )
    if isinstance(exc, (requests.ReadTimeout,)) or "timed out" in str(exc).lower():
        return UpstreamError(
            "timeout", _("The AI provider stopped sending before the reply was finished "
                         "(timed out waiting for it)."),
            detail=str(exc),
        )
    if during_stream:
        return UpstreamError(
            "connection", _("The connection to the AI provider was cut before the reply was "
                            "finished."),
            detail=str(exc),
        )
    return UpstreamError(
        "connection", _("The AI provider cannot be reached. Check the key's base URL, or "
                        "retry in a moment."),
        detail=str(exc),
    )


def _socket_of(response: requests.Response) -> socket.socket | None:
    """Return the socket under a streamed response, if it can be found."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        buffered = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(buffered, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _drain(response: requests.Response, body: Iterator[bytes]) -> None:
    """Read what is left of a finished reply's body (normally nothing but the end of it), briefly,
    so that its connection goes back to the session's pool; a body that does not end at once is
    left to ``close()``, which drops the connection."""
    sock = _socket_of(response)
    if sock is None or not (response.raw.chunked or response.raw.length_remaining):
        return  # a close-delimited body: its connection cannot serve another request
    try:
        sock.settimeout(DRAIN_SECONDS)  # the next request on this connection sets its own
        read = 0
        for piece in body:
            read += len(piece)
            if read > DRAIN_BYTES:
                return
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError,
            AttributeError):
        return


def _body(response: requests.Response) -> Iterator[bytes]:
    """Yield a streamed response's body as the bytes arrive, however the body is framed."""
    if response.raw.chunked:
        yield from response.iter_content(chunk_size=None)  # one piece per HTTP chunk
        return
    # A close-delimited (or sized) body: iter_content(chunk_size=None) would wait for the end.
    while chunk := response.raw.read1(8192):
        yield chunk


def _timeouts(first_token: float) -> tuple[float, float]:
    # A byte-level backstop only: the deadlines (``ChatStream.check_deadlines``) are what ends
    # a reply that keep-alive comments hold open without text.
    return (
        settings.CHATSITE_CONNECT_TIMEOUT,
        max(first_token, settings.CHATSITE_IDLE_TIMEOUT),
    )


def _is_read_timeout(exc: Exception) -> bool:
    return isinstance(exc, requests.ReadTimeout) or "timed out" in str(exc).lower()


def _deadline_error(kind: str, accepted: bool, first_token: float) -> UpstreamError:
    if kind == "first_token":
        seconds = first_token
        message = _("The AI provider did not start the reply within %(seconds)s seconds, so it "
                    "was stopped. Retry, or pick another model.")
    else:
        seconds = settings.CHATSITE_IDLE_TIMEOUT
        message = _("The AI provider sent nothing for %(seconds)s seconds, so the reply was "
                    "stopped. The text so far is kept; retry to get a complete reply.")
    error = UpstreamError("timeout", message % {"seconds": f"{seconds:g}"},
                          detail=f"deadline: {kind} ({seconds:g} s)")
    error.accepted = accepted
    return error


class ChatStream:
    """One streaming chat completion; iterate for events, ``close()`` to hang up.

    ``close()`` may be called from another thread: it closes the HTTP connection, so a read
    blocked on a silent upstream ends at once and billing stops. ``check_deadlines()``, called
    from another thread every so often, hangs up on a provider that has not sent the first text
    within ``first_token_timeout`` seconds of the request (the model's, from the catalog;
    ``CHATSITE_FIRST_TOKEN_TIMEOUT`` without one), or no text for ``CHATSITE_IDLE_TIMEOUT``
    seconds since — keep-alive comments do not count as text.

    Once the stream is over, its connection may serve the next request of this thread's session:
    from then on ``close()`` leaves it alone.
    """

    @sensitive_variables()
    def __init__(
        self, credentials: Credentials, *, model: str, messages: list[dict],
        extra: dict | None = None, first_token_timeout: float | None = None,
    ) -> None:
        self.credentials = credentials
        self.first_token_timeout = float(
            first_token_timeout or settings.CHATSITE_FIRST_TOKEN_TIMEOUT)
        self.payload = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        self._response: requests.Response | None = None
        self._closed = False
        self._released = False  # the response's connection was given back to the session
        self._lock = threading.Lock()
        self._text = credentials.piece_scrubber()
        # The provider answered 200 with a stream: it may bill from here on.
        self.accepted = False
        self._sent_at: float | None = None
        self._last_text_at: float | None = None
        self._timed_out = ""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            response = None if self._released else self._response
            if response is None:
                return
            sock = _socket_of(response)
            if sock is not None:
                try:
                    # Shutting the socket down wakes a read blocked in another thread.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # Closed, not given back: the generating thread gives the connection back to its
            # session, dead, when its read ends (the pool then opens a new one).
            response.raw.close()

    def _release(self) -> None:
        """Give the response's connection back to the session: kept alive if its body was read
        to the end, closed otherwise."""
        with self._lock:
            self._released = True
        self._response.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _deadline(self, kind: str) -> UpstreamError:
        """The error of a deadline passed after the request was sent (it may be billed)."""
        return _deadline_error(kind, accepted=True, first_token=self.first_token_timeout)

    @property
    def waiting_since(self) -> float | None:
        """When the request was sent, while no text has arrived yet (monotonic clock)."""
        return self._sent_at if self._last_text_at is None else None

    def check_deadlines(self, now: float | None = None) -> bool:
        """Hang up if the provider is past a deadline; return whether it was."""
        sent_at = self._sent_at
        if self._closed or sent_at is None:
            return False
        now = time.monotonic() if now is None else now
        last_text_at = self._last_text_at
        if last_text_at is None:
            if now - sent_at >= self.first_token_timeout:
                self._timed_out = "first_token"
        elif now - last_text_at >= settings.CHATSITE_IDLE_TIMEOUT:
            self._timed_out = "silence"
        if not self._timed_out:
            return False
        self.close()
        return True

    @sensitive_variables()
    def _open(self) -> requests.Response:
        self._sent_at = time.monotonic()
        try:
            # The reading thread's own session: only that thread uses and gives back its connections.
            response = _session(self.credentials.base_url).post(
                self.credentials.url("chat/completions"),
                json=self.payload,
                headers={**self.credentials.headers(), "Accept": "text/event-stream"},
                stream=True,
                timeout=_timeouts(self.first_token_timeout),
            )
        except requests.ReadTimeout:
            # No answer at all: it may have been accepted (and billed); not sent again.
            raise self._deadline("first_token") from None
        except requests.RequestException as exc:
            if self._timed_out:
                raise self._deadline(self._timed_out) from None
            raise _connection_error(exc, during_stream=False) from None
        if response.status_code != 200:
            error = _from_response(response, self.credentials.scrub, self.payload["model"])
            response.close()
            raise error
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            response.close()
            raise UpstreamError(
                "protocol",
                _("The AI provider answered with something other than a reply stream "
                  "(%(type)s). Check the key's base URL.")
                % {"type": content_type[:100] or "no type"},
                status=response.status_code,
            )
        self.accepted = True
        return response

    def __iter__(self) -> Iterator[Event]:
        try:
            yield from self._iterate()
        except UpstreamError as error:
            error.accepted = error.accepted or self.accepted
            raise error.scrubbed(self.credentials.scrub) from None

    def _iterate(self) -> Iterator[Event]:
        if self._closed:  # hung up before the request was sent: send nothing, bill nothing
            return
        self._response = self._open()
        if self._closed:  # closed while connecting
            self._release()
            if self._timed_out:
                raise self._deadline(self._timed_out)
            return
        done = finished = False
        body = _body(self._response)
        try:
            client = sseclient.SSEClient(body)
            for event in client.events():
                if event.event == "error":
                    raise self._stream_error(event.data or "")
                data = (event.data or "").strip()
                if not data:
                    continue
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    logger.warning("Ignoring a malformed chunk from upstream %s",
                                   self.credentials.key_name)
                    continue
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    raise self._stream_error(data)
                for item in self._events(chunk):
                    if isinstance(item, Finish):
                        finished = True
                    yield item
        except UpstreamError:
            raise
        except (
            requests.RequestException, urllib3.exceptions.HTTPError, OSError, AttributeError,
            ValueError,
        ) as exc:
            if self._timed_out:
                raise self._deadline(self._timed_out) from None
            if not self._closed and _is_read_timeout(exc):
                # The byte-level backstop fired first: the same deadline, the same words.
                kind = "first_token" if self._last_text_at is None else "silence"
                raise self._deadline(kind) from None
            if self._closed or finished:
                # Hung up by us, or cut after the model said it had finished: nothing is lost.
                return
            raise _connection_error(exc, during_stream=True) from None
        finally:
            if done and not self._closed:
                _drain(self._response, body)
            self._release()
        if self._timed_out:
            raise self._deadline(self._timed_out)
        if not (done or finished or self._closed):
            raise UpstreamError(
                "incomplete",
                _("The AI provider ended the reply stream before it was finished."),
            )

    def _events(self, chunk: dict) -> Iterator[Event]:
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                delta = {}
            for piece in (delta.get("content"), delta.get("refusal")):
                if piece:
                    self._last_text_at = time.monotonic()
                    yield TextDelta(self._text.feed(text_rules.clean(str(piece))))
            if choice.get("finish_reason"):
                self._last_text_at = time.monotonic()
                reason = text_rules.clean(self.credentials.scrub(str(choice["finish_reason"])))
                yield Finish(reason[:32])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens_details")
            prompt = prompt if isinstance(prompt, dict) else {}
            completion = usage.get("completion_tokens_details")
            completion = completion if isinstance(completion, dict) else {}
            audio = [_count(part.get("audio_tokens")) for part in (prompt, completion)
                     if "audio_tokens" in part]
            yield Usage(
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
                total_tokens=_count(usage.get("total_tokens")),
                cached_tokens=_count(prompt.get("cached_tokens")),
                reasoning_tokens=_count(completion.get("reasoning_tokens")),
                audio_tokens=(sum(audio) if audio and None not in audio else None),
                image_tokens=_count(prompt.get("image_tokens")),
            )

    @staticmethod
    def _stream_error(data: str) -> UpstreamError:
        try:
            error_type, code, detail, param = _error_fields(json.loads(data))
        except ValueError:
            error_type, code, detail, param = "", "", data[:4000], ""
        error = classify(None, error_type, code, detail, param=param)
        if error.kind == "server":
            return UpstreamError(
                "server", _("The AI provider reported an error in the middle of the reply: "
                            "%(detail)s") % {"detail": mask_text(detail) or "unknown"},
                error_type=error_type, code=code, detail=detail, param=param,
            )
        return error


def _count(value: object) -> int | None:
    """Return a token count from a usage chunk, or None where it is not a sane whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return None
    return value


@sensitive_variables()
def list_models(credentials: Credentials) -> list[str]:
    """Return the ids of the models ``credentials`` can use, sorted; raise ``UpstreamError``."""
    try:
        response = _session(credentials.base_url).get(
            credentials.url("models"),
            headers=credentials.headers(),
            timeout=(settings.CHATSITE_CONNECT_TIMEOUT, 15),
        )
    except requests.RequestException as exc:
        raise _connection_error(exc, during_stream=False).scrubbed(credentials.scrub) from None
    with response:
        if response.status_code != 200:
            raise _from_response(response, credentials.scrub).scrubbed(credentials.scrub)
        try:
            data = response.json().get("data") or []
            items = [item for item in data if isinstance(item, dict) and item.get("id")]
        except (ValueError, AttributeError, TypeError):
            raise UpstreamError(
                "protocol", _("The AI provider's model list could not be read."),
                status=response.status_code,
            ) from None
    ids = {text_rules.clean(credentials.scrub(str(item["id"])))[:200] for item in items}
    # A model id the scrub had to mask is no model anyone can pick.
    return sorted(model for model in ids if model and "•" not in model)
