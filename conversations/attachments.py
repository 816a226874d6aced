"""Attachments once checked (``uploads.py``): storing them with a message, and what the model is
sent of them.

A stored file is named unguessably and handed out only by the serving view, to those who may
read the conversation. Rows may share a file (an edited message keeps its attachments, a copy
of a shared conversation keeps them too): a file leaves storage when the last row naming it is
deleted, once the deletion has committed. Files stored by a transaction that then fails (a database
error, an import refused halfway) are deleted with it (``removed_unless_kept``).

Sent upstream as OpenAI's content parts: the message's text, each text file as a text part with
its name, each image as an ``image_url`` part (a data URL, or the storage's https URL where
``CHATSITE_ATTACHMENT_IMAGE_URLS`` is "url") with its ``detail``. A model without image input is
sent a note in place of an image: the member was told before sending, and an earlier image in
the conversation must not make a later question fail.
"""

from __future__ import annotations

import base64
import contextvars
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models.signals import post_delete

from .catalog import ModelSpec
from .models import Attachment, Message
from .uploads import Prepared

logger = logging.getLogger(__name__)

# The files stored so far inside ``removed_unless_kept`` (storage, name), if any.
_stored: contextvars.ContextVar[list | None] = contextvars.ContextVar("stored", default=None)


@contextmanager
def removed_unless_kept() -> Iterator[None]:
    """Delete the files ``attachments_create`` stores inside this block if the block fails.

    Put it around the transaction that stores them: its rows are rolled back on the way out,
    and the files, which no transaction covers, are deleted here, so none is left that no row
    names."""
    stored: list = []
    token = _stored.set(stored)
    try:
        yield
    except BaseException:
        for storage, name in stored:
            try:
                storage.delete(name)
            except OSError as error:
                logger.warning("Could not delete the stored file of a message that was not "
                               "kept: %s", error)
        raise
    finally:
        _stored.reset(token)


def attachments_create(*, message: Message, prepared: Iterable[Prepared],
                       detail: str = "") -> list[Attachment]:
    """Store ``prepared`` files and attach them to ``message``; return the rows."""
    created = []
    for item in prepared:
        attachment = Attachment(
            message=message, kind=item.kind, name=item.name, content_type=item.content_type,
            size=len(item.data), width=item.width, height=item.height, text=item.text,
            detail=detail if item.kind == Attachment.Kind.IMAGE else "",
        )
        attachment.file.save(item.name, ContentFile(item.data), save=False)
        if (stored := _stored.get()) is not None:
            stored.append((attachment.file.storage, attachment.file.name))
        attachment.save()
        created.append(attachment)
    return created


def attachments_copy(*, source: Message, target: Message) -> None:
    """Give ``target`` the attachments of ``source`` (the same stored files)."""
    rows = [Attachment(message=target, kind=a.kind, name=a.name, content_type=a.content_type,
                       size=a.size, width=a.width, height=a.height, file=a.file.name,
                       text=a.text, detail=a.detail)
            for a in source.attachments.all()]
    Attachment.objects.bulk_create(rows)


def _delete_file(sender, instance: Attachment, **kwargs) -> None:
    """Once the deletion commits, delete the stored file if no other row names it."""
    name = instance.file.name
    if not name:
        return

    def delete() -> None:
        if not Attachment.objects.filter(file=name).exists():
            instance.file.storage.delete(name)

    transaction.on_commit(delete)


def connect() -> None:
    post_delete.connect(_delete_file, sender=Attachment, dispatch_uid="attachment-files")


def by_message(message_ids: Iterable[int]) -> dict[int, list[Attachment]]:
    """Return the attachments of these messages, per message id, in the order attached."""
    found: dict[int, list[Attachment]] = defaultdict(list)
    ids = list(message_ids)
    for start in range(0, len(ids), 500):
        for attachment in Attachment.objects.filter(message_id__in=ids[start:start + 500]):
            found[attachment.message_id].append(attachment)
    return found


def image_url(attachment: Attachment) -> str:
    """Return the URL the provider fetches the image from: the storage's own https URL where
    the site is set up so, else the image itself as a data URL."""
    if settings.CHATSITE_ATTACHMENT_IMAGE_URLS == "url":
        try:
            url = attachment.file.storage.url(attachment.file.name)
        except Exception:
            url = ""
        if url.startswith("https://"):
            return url
    with attachment.file.storage.open(attachment.file.name, "rb") as stored:
        data = stored.read()
    return f"data:{attachment.content_type};base64,{base64.b64encode(data).decode('ascii')}"


def file_part(attachment: Attachment) -> dict:
    """A text file as the model reads it: its name, then its text."""
    return {"type": "text", "text": f'<file name="{attachment.name}">\n{attachment.text}\n</file>'}


def content_for(content: str, attachments: list[Attachment], spec: ModelSpec) -> str | list:
    """Return a user message's ``content`` for the request: the text alone without attachments,
    else OpenAI's content parts."""
    if not attachments:
        return content
    parts: list[dict] = [{"type": "text", "text": content}] if content else []
    for attachment in attachments:
        if not attachment.is_image:
            parts.append(file_part(attachment))
        elif spec.vision:
            try:
                url = image_url(attachment)
            except OSError:  # gone from storage: the rest of the conversation still goes
                parts.append({"type": "text",
                              "text": f"[image “{attachment.name}” is no longer available]"})
                continue
            parts.append({"type": "image_url", "image_url": {
                "url": url, "detail": attachment.detail or spec.image_detail or "auto"}})
        else:
            parts.append({"type": "text", "text": f"[image “{attachment.name}” not sent: this "
                                                  "model does not take images]"})
    return parts


def attachment_get(*, user, pk: int) -> Attachment | None:
    """Return attachment ``pk`` if ``user`` may read its conversation (the owner, or someone it
    is shared with), else None."""
    from . import selectors

    return (Attachment.objects.select_related("message")
            .filter(pk=pk, message__conversation__in=selectors.conversations_readable_by(user))
            .first())
