"""Client for OpenAI-compatible chat-completion APIs: the only importer of requests/sseclient-py.

``stream_chat`` posts one streaming chat completion and yields typed events (text, finish,
usage). Every failure — an error status, an error object in the stream, a cut connection, a
timeout — surfaces as one ``UpstreamError`` carrying what the member should read and what the
admin needs to tell which key failed and why. Error text from upstream is masked before it is
kept, since servers echo parts of the key they were sent.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
import sseclient
import urllib3
from django.conf import settings
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .crypto import mask, mask_text

logger = logging.getLogger(__name__)

USER_AGENT = "chatsite/1.0"


@dataclass(frozen=True)
class Credentials:
    """What an upstream call needs of an ``ApiKey``: never logged, never rendered."""

    base_url: str
    secret: str = field(repr=False)
    organization: str = ""
    project: str = ""
    key_name: str = ""

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.secret}", "User-Agent": USER_AGENT}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")


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
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.error_type = error_type or ""
        self.code = code or ""
        self.detail = mask_text(detail or "")
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in {"rate_limit", "server", "unavailable", "timeout", "connection"}

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        return f"{self.message} ({', '.join(parts)})"


@sensitive_variables()
def _scrub(text: str, secret: str) -> str:
    """Return ``text`` with ``secret`` masked: upstreams echo keys ``mask_text`` cannot spot."""
    if secret and secret in text:
        return text.replace(secret, mask(secret))
    return text


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_fields(payload: object) -> tuple[str, str, str]:
    """Return (type, code, message) of an OpenAI error object, tolerating other shapes."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return (
            str(error.get("type") or ""),
            str(error.get("code") or ""),
            str(error.get("message") or ""),
        )
    if isinstance(error, str):
        return "", "", error
    return "", "", ""


def classify(
    status: int | None, error_type: str, code: str, detail: str, retry_after: float | None = None
) -> UpstreamError:
    """Return the ``UpstreamError`` for an upstream status and OpenAI error type/code."""
    lowered = f"{error_type} {code}".lower()

    def error(kind: str, message: str) -> UpstreamError:
        return UpstreamError(
            kind, message, status=status, error_type=error_type, code=code,
            detail=detail, retry_after=retry_after,
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


@sensitive_variables()
def _from_response(response: requests.Response, secret: str) -> UpstreamError:
    """Return the error an HTTP error response stands for, without ``secret`` in its text."""
    content_type = response.headers.get("Content-Type", "")
    try:
        body = _scrub(response.text, secret)[:4000]
    except requests.RequestException:
        body = ""
    error_type, code, detail = "", "", ""
    if "json" in content_type:
        try:
            error_type, code, detail = _error_fields(json.loads(body))
        except ValueError:
            detail = body
    else:
        detail = body[:300]
    if response.status_code in (502, 503, 504):
        return UpstreamError(
            "unavailable",
            _("The AI provider is unreachable or overloaded (HTTP %(status)s). Retry in a moment.")
            % {"status": response.status_code},
            status=response.status_code, detail=detail, retry_after=_retry_after(response),
        )
    return classify(response.status_code, error_type, code, detail, _retry_after(response))


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


def _body(response: requests.Response) -> Iterator[bytes]:
    """Yield a streamed response's body as the bytes arrive, however the body is framed."""
    if response.raw.chunked:
        yield from response.iter_content(chunk_size=None)  # one piece per HTTP chunk
        return
    # A close-delimited (or sized) body: iter_content(chunk_size=None) would wait for the end.
    while chunk := response.raw.read1(8192):
        yield chunk


def _timeouts() -> tuple[float, float]:
    return (settings.CHATSITE_CONNECT_TIMEOUT, settings.CHATSITE_READ_TIMEOUT)


class ChatStream:
    """One streaming chat completion; iterate for events, ``close()`` to hang up.

    ``close()`` may be called from another thread: it closes the HTTP connection, so a read
    blocked on a silent upstream ends at once and billing stops.
    """

    @sensitive_variables()
    def __init__(
        self, credentials: Credentials, *, model: str, messages: list[dict],
        session: requests.Session | None = None, extra: dict | None = None,
    ) -> None:
        self.credentials = credentials
        self.payload = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        self._session = session or requests.Session()
        self._response: requests.Response | None = None
        self._closed = False

    def close(self) -> None:
        self._closed = True
        response = self._response
        if response is not None:
            sock = _socket_of(response)
            if sock is not None:
                try:
                    # Shutting the socket down wakes a read blocked in another thread.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            response.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @sensitive_variables()
    def _open(self) -> requests.Response:
        try:
            response = self._session.post(
                self.credentials.url("chat/completions"),
                json=self.payload,
                headers={**self.credentials.headers(), "Accept": "text/event-stream"},
                stream=True,
                timeout=_timeouts(),
            )
        except requests.RequestException as exc:
            raise _connection_error(exc, during_stream=False) from None
        if response.status_code != 200:
            error = _from_response(response, self.credentials.secret)
            response.close()
            raise error
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            response.close()
            raise UpstreamError(
                "protocol",
                _("The AI provider answered with something other than a reply stream "
                  "(%(type)s). Check the key's base URL.") % {"type": content_type or "no type"},
                status=response.status_code,
            )
        return response

    def __iter__(self) -> Iterator[Event]:
        if self._closed:  # hung up before the request was sent: send nothing, bill nothing
            return
        self._response = self._open()
        if self._closed:  # closed while connecting
            self._response.close()
            return
        finished = False
        try:
            client = sseclient.SSEClient(_body(self._response))
            for event in client.events():
                if event.event == "error":
                    raise self._stream_error(_scrub(event.data, self.credentials.secret))
                data = (event.data or "").strip()
                if not data:
                    continue
                if data == "[DONE]":
                    finished = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    logger.warning("Ignoring a malformed chunk from upstream %s", self.credentials.key_name)
                    continue
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    raise self._stream_error(_scrub(data, self.credentials.secret))
                yield from self._events(chunk)
        except UpstreamError:
            raise
        except (
            requests.RequestException, urllib3.exceptions.HTTPError, OSError, AttributeError,
            ValueError,
        ) as exc:
            if self._closed:
                return
            raise _connection_error(exc, during_stream=True) from None
        finally:
            self._response.close()
        if not finished and not self._closed:
            raise UpstreamError(
                "incomplete",
                _("The AI provider ended the reply stream before it was finished."),
            )

    @staticmethod
    def _events(chunk: dict) -> Iterator[Event]:
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                yield TextDelta(str(content))
            refusal = delta.get("refusal")
            if refusal:
                yield TextDelta(str(refusal))
            if choice.get("finish_reason"):
                yield Finish(str(choice["finish_reason"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            yield Usage(
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                total_tokens=usage.get("total_tokens"),
            )

    @staticmethod
    def _stream_error(data: str) -> UpstreamError:
        try:
            error_type, code, detail = _error_fields(json.loads(data))
        except ValueError:
            error_type, code, detail = "", "", data
        error = classify(None, error_type, code, detail)
        if error.kind == "server":
            return UpstreamError(
                "server", _("The AI provider reported an error in the middle of the reply: "
                            "%(detail)s") % {"detail": mask_text(detail) or "unknown"},
                error_type=error_type, code=code, detail=detail,
            )
        return error


@sensitive_variables()
def list_models(credentials: Credentials) -> list[str]:
    """Return the ids of the models ``credentials`` can use, sorted; raise ``UpstreamError``."""
    try:
        response = requests.get(
            credentials.url("models"),
            headers=credentials.headers(),
            timeout=(settings.CHATSITE_CONNECT_TIMEOUT, 15),
        )
    except requests.RequestException as exc:
        raise _connection_error(exc, during_stream=False) from None
    with response:
        if response.status_code != 200:
            raise _from_response(response, credentials.secret)
        try:
            data = response.json().get("data") or []
        except (ValueError, AttributeError):
            raise UpstreamError(
                "protocol", _("The AI provider's model list could not be read."),
                status=response.status_code,
            ) from None
    return sorted({str(item["id"]) for item in data if isinstance(item, dict) and item.get("id")})
