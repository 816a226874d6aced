"""All of a member's conversations as one ZIP archive, written as it is sent.

The archive holds ``conversations.json`` (everything an import needs, see ``exports.as_json``)
one Markdown file per conversation, and the files attached to messages under
``attachments/<id>/<name>`` (``conversations.json`` names each one's place). It is produced piece by piece: conversations are read
from the database a chunk at a time and the ZIP is written into a buffer that is emptied after
each piece (``zipfile`` writes to a stream it cannot seek with data descriptors), so thousands
of conversations never sit in memory at once.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.text import slugify

from . import exports
from .models import Conversation, Message

FORMAT = "chatsite"
FORMAT_VERSION = 1
JSON_NAME = "conversations.json"
CHUNK_SIZE = 100  # conversations read from the database at a time
FLUSH_BYTES = 64 * 1024  # send what the buffer holds once it is this large


class _Buffer(io.RawIOBase):
    """A write-only stream that keeps what was written until it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        return data


def _with_messages(conversations: QuerySet[Conversation]) -> Iterator[Conversation]:
    return conversations.select_related("api_key").prefetch_related(
        Prefetch("messages", queryset=Message.objects.order_by("created_at", "id")),
        "messages__attachments",
    ).order_by("created_at", "id").iterator(chunk_size=CHUNK_SIZE)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, timezone.localtime().timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def markdown_name(conversation: Conversation) -> str:
    slug = slugify(conversation.title)[:50] or "chat"
    return f"markdown/{conversation.pk}-{slug}.md"


def zip_chunks(conversations: QuerySet[Conversation]) -> Iterator[bytes]:
    """Yield the archive of ``conversations`` as pieces of bytes."""
    buffer = _Buffer()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(_entry(JSON_NAME), "w", force_zip64=True) as entry:
            header = {"format": FORMAT, "version": FORMAT_VERSION,
                      "exported_at": timezone.now().isoformat()}
            entry.write(json.dumps(header, ensure_ascii=False)[:-1].encode()
                        + b', "conversations": [')
            for index, conversation in enumerate(_with_messages(conversations)):
                data = exports.as_json(conversation, list(conversation.messages.all()))
                entry.write((",\n" if index else "\n").encode()
                            + json.dumps(data, ensure_ascii=False).encode())
                if buffer.size >= FLUSH_BYTES:
                    yield buffer.take()
            entry.write(b"\n]}\n")
        yield buffer.take()
        for conversation in _with_messages(conversations):
            text = exports.as_markdown(conversation, list(conversation.messages.all()))
            archive.writestr(_entry(markdown_name(conversation)), text)
            if buffer.size >= FLUSH_BYTES:
                yield buffer.take()
        for conversation in _with_messages(conversations):
            for message in conversation.messages.all():
                for attachment in message.attachments.all():
                    _write_attachment(archive, attachment)
                    if buffer.size >= FLUSH_BYTES:
                        yield buffer.take()
    yield buffer.take()


def _write_attachment(archive: zipfile.ZipFile, attachment) -> None:
    """Copy an attachment's stored file into the archive (a file gone from storage is left out:
    the import then notes it as not imported)."""
    try:
        stored = attachment.file.storage.open(attachment.file.name, "rb")
    except (FileNotFoundError, OSError):
        return
    with stored, archive.open(_entry(exports.attachment_path(attachment)), "w",
                              force_zip64=True) as entry:
        while piece := stored.read(FLUSH_BYTES):
            entry.write(piece)


async def streamed(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Serve a synchronous producer as an async iterator: under ASGI, Django would read a
    synchronous one whole before sending anything. Each piece is made in the request's thread
    (its database connection holds the open cursor)."""
    step = sync_to_async(next)
    while (chunk := await step(chunks, None)) is not None:
        if chunk:
            yield chunk


def response(conversations: QuerySet[Conversation], *, username: str) -> StreamingHttpResponse:
    """Return a download of the archive of ``conversations``, sent as it is written."""
    day = timezone.localdate().isoformat()
    name = f"chatsite-{slugify(username) or 'member'}-{day}.zip"
    answer = StreamingHttpResponse(streamed(zip_chunks(conversations)),
                                   content_type="application/zip")
    answer["Content-Disposition"] = f'attachment; filename="{name}"'
    answer["Cache-Control"] = "no-store"
    return answer
