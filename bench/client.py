"""HTTP/1.1 and server-sent events over raw asyncio streams: the load generator's only client.

Why not a library: every event's receive time must be taken the same way on the chatsite path
and on the direct path to the fake upstream, as soon as its bytes leave the socket, with nothing
buffering in between. A request here is one TCP connection (``Connection: close``), as a fresh
EventSource is.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

READ_SIZE = 65536


class ProtocolError(Exception):
    """The server answered something this client cannot read, or an unexpected status."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names, repeated ones joined with ", "
    cookies: dict[str, str]  # from Set-Cookie
    body: bytes = b""


@dataclass
class Event:
    """One server-sent event, stamped with the time its last byte was read."""

    name: str
    data: str
    id: str | None
    received: float


async def connect(host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader,
                                                                   asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=2**20), timeout
    )
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def _request_bytes(
    method: str, path: str, host: str, port: int, headers: dict[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_head(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line {status_line!r}") from None
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if name == "set-cookie":
            cookie_name, _, rest = value.partition("=")
            cookies[cookie_name.strip()] = rest.split(";", 1)[0]
    return Response(status, headers, cookies)


class Dechunker:
    """Incremental decoder of ``Transfer-Encoding: chunked``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0  # bytes of the current chunk's data still to come
        self._skip = 0  # CRLF after a chunk's data still to skip
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        """Return the payload in ``data`` (plus what was held back before)."""
        self._buffer += data
        out = bytearray()
        buffer = self._buffer
        pos = 0
        while pos < len(buffer) and not self.finished:
            if self._skip:
                step = min(self._skip, len(buffer) - pos)
                pos += step
                self._skip -= step
                continue
            if self._remaining:
                step = min(self._remaining, len(buffer) - pos)
                out += buffer[pos : pos + step]
                pos += step
                self._remaining -= step
                if not self._remaining:
                    self._skip = 2
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(bytes(buffer[pos:end]).split(b";", 1)[0] or b"0", 16)
            pos = end + 2
            if size == 0:
                self.finished = True
            self._remaining = size
        del buffer[:pos]
        return bytes(out)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        dechunker, body = Dechunker(), bytearray()
        while not dechunker.finished:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            body += dechunker.feed(data)
        return bytes(body)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def fetch(
    host: str, port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
    body: bytes = b"", timeout: float = 60.0,
) -> Response:
    """Send one request on a new connection and return the whole response."""
    reader, writer = await connect(host, port, timeout)
    try:
        writer.write(_request_bytes(method, path, host, port, headers or {}, body))
        async with asyncio.timeout(timeout):
            response = await _read_head(reader)
            response.body = await _read_body(reader, response.headers)
        return response
    finally:
        writer.close()


@dataclass
class EventStream:
    """An open ``text/event-stream`` response: iterate ``events()``; ``close()`` to hang up."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    response: Response
    opened: float  # when the response head was read
    comments: int = 0  # ":" lines seen (keep-alives, pings)
    eof: bool = False
    _sse: bytes = field(default=b"", repr=False)

    async def events(self) -> AsyncIterator[Event]:
        """Yield events until the body ends (``eof`` is then True)."""
        chunked = "chunked" in self.response.headers.get("transfer-encoding", "").lower()
        dechunker = Dechunker() if chunked else None
        while True:
            data = await self.reader.read(READ_SIZE)
            received = time.time()
            if not data:
                self.eof = True
                return
            if dechunker is not None:
                data = dechunker.feed(data)
            self._sse += data
            if b"\n\n" in self._sse:
                *blocks, self._sse = self._sse.split(b"\n\n")
                for block in blocks:
                    event = self._parse(block, received)
                    if event is not None:
                        yield event
            if dechunker is not None and dechunker.finished:
                self.eof = True
                return

    def _parse(self, block: bytes, received: float) -> Event | None:
        name, event_id, data = "message", None, []
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                self.comments += 1
                continue
            field_name, _, value = line.rstrip(b"\r").partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field_name == b"data":
                data.append(value.decode("utf-8"))
            elif field_name == b"event":
                name = value.decode("utf-8")
            elif field_name == b"id":
                event_id = value.decode("utf-8")
        if not data and name == "message":
            return None  # a comment- or retry-only block
        return Event(name, "\n".join(data), event_id, received)

    def close(self) -> None:
        self.writer.close()


async def open_stream(
    host: str, port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
    body: bytes = b"", timeout: float = 60.0,
) -> EventStream:
    """Send a request and return its event stream once a 200 head has arrived."""
    reader, writer = await connect(host, port, timeout)
    try:
        writer.write(_request_bytes(method, path, host, port, headers or {}, body))
        async with asyncio.timeout(timeout):
            response = await _read_head(reader)
            if response.status != 200:
                response.body = await _read_body(reader, response.headers)
                raise ProtocolError(f"{method} {path}: HTTP {response.status}: "
                                    f"{response.body[:200]!r}")
    except BaseException:
        writer.close()
        raise
    return EventStream(reader, writer, response, time.time())
