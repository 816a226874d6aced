"""A conversation as a file the member can keep: Markdown to read, JSON to process."""

from __future__ import annotations

from django.utils.translation import gettext as _

from .models import Attachment, Conversation, Message


def as_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation}", ""]
    for message in messages:
        who = _("You") if message.role == Message.Role.USER else _("Assistant")
        heading = f"## {who}"
        if message.role == Message.Role.ASSISTANT and message.model:
            heading += f" ({message.model})"
        if message.superseded:
            heading += " — " + _("earlier version")
        lines += [heading, "", message.content, ""]
        if message.is_incomplete:
            lines += [f"> {message.get_status_display()}: {message.error_message or ''}".rstrip(), ""]
    return "\n".join(lines)


def attachment_path(attachment: Attachment) -> str:
    """Where an attachment's file is in an archive (``archive.py`` writes it there)."""
    return f"attachments/{attachment.pk}/{attachment.name}"


def attachment_entry(attachment: Attachment) -> dict:
    return {"name": attachment.name, "kind": attachment.kind,
            "content_type": attachment.content_type, "detail": attachment.detail,
            "file": attachment_path(attachment)}


def as_json(conversation: Conversation, messages: list[Message]) -> dict:
    """Return the conversation as JSON data, everything an import needs (of its key, the name
    alone; ``imports.read`` reads this shape back)."""
    return {
        "id": conversation.pk,
        "title": str(conversation),
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "model": conversation.model,
        "api_key": conversation.api_key.name if conversation.api_key_id else None,
        "settings": {
            "instructions": conversation.system_prompt,
            "temperature": (None if conversation.temperature is None
                            else str(conversation.temperature)),
            "max_output_tokens": conversation.max_output_tokens,
            "reasoning_effort": conversation.reasoning_effort,
        },
        "messages": [
            {
                "role": message.role,
                "content": message.content,
                "status": message.status,
                "finish_reason": message.finish_reason,
                "error_message": message.error_message,
                "model": message.model,
                "superseded": message.superseded,
                "created_at": message.created_at.isoformat(),
                "attachments": [attachment_entry(attachment)
                                for attachment in message.attachments.all()],
                "usage": {
                    "prompt_tokens": message.prompt_tokens,
                    "completion_tokens": message.completion_tokens,
                    "total_tokens": message.total_tokens,
                    "cached_tokens": message.cached_tokens,
                    "reasoning_tokens": message.reasoning_tokens,
                    "image_tokens": message.image_tokens,
                    "estimated": message.usage_estimated,
                },
            }
            for message in messages
        ],
    }
