"""Read an uploaded file of conversations: chatsite's own export, or ChatGPT's data export.

``read`` returns plain data (``Imported`` conversations) or raises ``ValidationError`` naming the
problem; it writes nothing, so a file that fails anywhere imports nothing
(``services.conversations_import`` writes what it returns, in one transaction).

chatsite's JSON is ``conversations.json`` of the archive (``archive.py``), the archive itself,
or one conversation's JSON export. ChatGPT's ``conversations.json`` is a list of conversations,
each a tree of nodes (``mapping``): the path from the root to ``current_node`` is the
conversation; a branch off that path (an edited message, a regenerated reply) is kept as an
earlier version, followed along its latest replies. System, tool and hidden messages are left
out; what is not text (images, files, audio, code output) becomes a short note in brackets.
Everything stays text: replies are rendered by the sanitizing Markdown path like any other.
The files attached to messages in a chatsite archive are checked again exactly as uploads are
(``uploads.prepare``): an archive is as untrusted as any file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from . import archive, text, uploads
from .models import Message, ReasoningEffort

SOURCE_LENGTH = 200


@dataclass
class ImportedMessage:
    role: str
    content: str
    superseded: bool = False
    status: str = Message.Status.COMPLETE
    finish_reason: str = ""
    error_message: str = ""
    model: str = ""
    created_at: datetime | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    image_tokens: int | None = None
    usage_estimated: bool = False
    # Attached files: first as the JSON names them ({"name", "file", "detail"}), then, once read
    # from the archive and checked again like any upload, as ``uploads.Prepared`` with a detail.
    attachment_refs: list[dict] = field(default_factory=list)
    attachments: list[tuple[uploads.Prepared, str]] = field(default_factory=list)


@dataclass
class Imported:
    """One conversation read from a file, ``source`` naming it for idempotent imports."""

    source: str
    title: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    model: str = ""
    instructions: str = ""
    temperature: Decimal | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str = ""
    messages: list[ImportedMessage] = field(default_factory=list)


def max_bytes() -> int:
    return settings.CHATSITE_IMPORT_MAX_BYTES


def _too_large() -> ValidationError:
    return ValidationError(
        _("The file is too large: at most %(size)s can be imported at once.")
        % {"size": filesizeformat(max_bytes())}, code="too_large")


def read(upload: UploadedFile) -> list[Imported]:
    """Return the conversations in ``upload``; raise ``ValidationError`` naming the problem."""
    if upload.size is None or upload.size > max_bytes():
        raise _too_large()
    data = upload.read(max_bytes() + 1)
    if len(data) > max_bytes():
        raise _too_large()
    files: dict[str, bytes] = {}
    if data.startswith(b"PK\x03\x04"):
        data, files = _from_zip(data)
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValidationError(_("The file is not text in UTF-8: import a JSON file or a "
                                "chatsite archive (ZIP).")) from None
    except json.JSONDecodeError as error:
        raise ValidationError(
            _("The file is not valid JSON (line %(line)s, column %(column)s: %(problem)s).")
            % {"line": error.lineno, "column": error.colno, "problem": error.msg}) from None
    except RecursionError:
        raise ValidationError(_("The file is not valid JSON (it is nested too deeply).")) from None
    conversations = _conversations(parsed)
    _read_attachments(conversations, files)
    return conversations


def _read_attachments(conversations: list[Imported], files: dict[str, bytes]) -> None:
    """Check each attached file the archive holds as an upload is checked; one it does not hold
    (a conversations.json imported alone) becomes a note in the message's text."""
    for conversation in conversations:
        for message in conversation.messages:
            for ref in message.attachment_refs:
                data = files.get(ref["file"])
                if data is None:
                    message.content += "\n\n" + _("[attachment “%(name)s” not imported]") % {
                        "name": ref["name"]}
                    continue
                upload = SimpleUploadedFile(ref["name"], data)
                message.attachments.append((uploads.prepare(upload), ref["detail"]))


def _from_zip(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """Return ``conversations.json`` from a ZIP archive (chatsite's, or ChatGPT's export), and
    the attached files of a chatsite archive by their place in it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            files, total = {}, 0
            for info in bundle.infolist():
                if info.filename.startswith("attachments/") and not info.is_dir():
                    total += info.file_size
                    if total > max_bytes():
                        raise _too_large()
                    with bundle.open(info) as entry:
                        files[info.filename] = entry.read(max_bytes() + 1)
            names = [info for info in bundle.infolist()
                     if info.filename.rsplit("/", 1)[-1] == archive.JSON_NAME]
            if not names:
                raise ValidationError(_("The ZIP archive holds no conversations.json."))
            info = min(names, key=lambda info: info.filename.count("/"))
            if info.file_size > max_bytes():
                raise _too_large()
            with bundle.open(info) as entry:
                content = entry.read(max_bytes() + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            OSError, ValueError, RuntimeError):
        raise ValidationError(_("The ZIP archive cannot be read (damaged, encrypted or "
                                "incomplete).")) from None
    if len(content) > max_bytes() or sum(map(len, files.values())) > max_bytes():
        raise _too_large()
    return content, files


def _conversations(parsed) -> list[Imported]:
    if isinstance(parsed, dict) and isinstance(parsed.get("conversations"), list):
        items, kind = parsed["conversations"], "chatsite"
    elif isinstance(parsed, dict) and "messages" in parsed:
        items, kind = [parsed], "chatsite"
    elif isinstance(parsed, list):
        items = parsed
        kind = "chatgpt" if any(isinstance(item, dict) and "mapping" in item
                                for item in items) else "chatsite"
    else:
        raise ValidationError(_("The file is neither a chatsite export nor ChatGPT's "
                                "conversations.json: it holds no list of conversations."))
    if not items:
        raise ValidationError(_("The file holds no conversations."))
    reader = _chatgpt if kind == "chatgpt" else _chatsite
    return [reader(item, _where(index, item)) for index, item in enumerate(items, start=1)]


def _where(index: int, item) -> str:
    title = item.get("title") if isinstance(item, dict) else None
    if isinstance(title, str) and title.strip():
        return _("Conversation %(number)s (“%(title)s”)") % {
            "number": index, "title": text.clean(title.strip())[:60]}
    return _("Conversation %(number)s") % {"number": index}


def _problem(where: str, problem: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}", code="invalid")


def _text(value, where: str, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _problem(where, _("“%(field)s” is not text.") % {"field": name})
    return text.clean(value)


def _count(value, where: str, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise _problem(where, _("“%(field)s” is not a whole number from 0.") % {"field": name})
    return value


def _time(value, where: str, name: str) -> datetime | None:
    """Read an ISO 8601 time (chatsite) or seconds since 1970 (ChatGPT)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            # In UTC, as it is stored: a time that has none (past year 9999) is refused here.
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise _problem(where, _("“%(field)s” is not a time.") % {"field": name})


def _source(prefix: str, identifier, item) -> str:
    if isinstance(identifier, str | int) and not isinstance(identifier, bool) \
            and str(identifier).strip():
        source = f"{prefix}:{identifier}"
        if len(source) <= SOURCE_LENGTH:
            return text.clean(source)
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode(
        "utf-8", "replace")).hexdigest()
    return f"{prefix}:sha256:{digest}"


# -- chatsite's own JSON ------------------------------------------------------------------------


def _chatsite(item, where: str) -> Imported:
    if not isinstance(item, dict):
        raise _problem(where, _("it is not a conversation (an object with “messages”)."))
    messages = item.get("messages")
    if not isinstance(messages, list):
        raise _problem(where, _("“messages” is missing or not a list."))
    created = _time(item.get("created_at"), where, "created_at")
    conversation = Imported(
        source=_source("chatsite", f"{item.get('id')}@{item.get('created_at')}"
                       if item.get("id") is not None else None, item),
        title=_text(item.get("title"), where, "title").strip()[:200],
        created_at=created,
        updated_at=_time(item.get("updated_at"), where, "updated_at"),
        model=_text(item.get("model"), where, "model")[:200],
    )
    _chatsite_settings(conversation, item.get("settings"), where)
    for number, entry in enumerate(messages, start=1):
        here = _("%(where)s, message %(number)s") % {"where": where, "number": number}
        message = _chatsite_message(entry, here)
        if message is not None:
            conversation.messages.append(message)
    return conversation


def _chatsite_settings(conversation: Imported, values, where: str) -> None:
    if values is None:
        return
    if not isinstance(values, dict):
        raise _problem(where, _("“settings” is not an object."))
    conversation.instructions = _text(values.get("instructions"), where, "instructions")
    temperature = values.get("temperature")
    if temperature is not None:
        try:
            number = Decimal(str(temperature))
            if not (number.is_finite() and 0 <= number <= 2):
                raise InvalidOperation
        except InvalidOperation:
            raise _problem(where, _("“temperature” is not a number from 0 to 2.")) from None
        conversation.temperature = number.quantize(Decimal("0.01"))
    tokens = _count(values.get("max_output_tokens"), where, "max_output_tokens")
    conversation.max_output_tokens = tokens or None
    effort = _text(values.get("reasoning_effort"), where, "reasoning_effort")
    if effort and effort not in ReasoningEffort.values:
        raise _problem(where, _("“reasoning_effort” is not low, medium or high."))
    conversation.reasoning_effort = effort


def _chatsite_message(entry, where: str) -> ImportedMessage | None:
    if not isinstance(entry, dict):
        raise _problem(where, _("it is not an object."))
    role = entry.get("role")
    if role == Message.Role.SYSTEM:
        return None
    if role not in (Message.Role.USER, Message.Role.ASSISTANT):
        raise _problem(where, _("“role” is neither “user” nor “assistant”."))
    status = entry.get("status") or Message.Status.COMPLETE
    if status not in Message.Status.values:
        raise _problem(where, _("“status” is not one chatsite knows."))
    if status in Message.UNFINISHED:
        status = Message.Status.INTERRUPTED  # nothing is writing it here
    usage = entry.get("usage") or {}
    if not isinstance(usage, dict):
        raise _problem(where, _("“usage” is not an object."))
    refs = entry.get("attachments") or []
    if not isinstance(refs, list) or not all(isinstance(ref, dict) for ref in refs):
        raise _problem(where, _("“attachments” is not a list of objects."))
    attachment_refs = [{
        "name": uploads.clean_name(_text(ref.get("name"), where, "name")),
        "file": _text(ref.get("file"), where, "file"),
        "detail": (detail if (detail := _text(ref.get("detail"), where, "detail"))
                   in ("low", "high", "auto") else ""),
    } for ref in refs]
    return ImportedMessage(
        attachment_refs=attachment_refs,
        role=role,
        content=_text(entry.get("content"), where, "content"),
        superseded=bool(entry.get("superseded")),
        status=status,
        finish_reason=_text(entry.get("finish_reason"), where, "finish_reason")[:32],
        error_message=_text(entry.get("error_message"), where, "error_message"),
        model=_text(entry.get("model"), where, "model")[:200],
        created_at=_time(entry.get("created_at"), where, "created_at"),
        prompt_tokens=_count(usage.get("prompt_tokens"), where, "prompt_tokens"),
        completion_tokens=_count(usage.get("completion_tokens"), where, "completion_tokens"),
        total_tokens=_count(usage.get("total_tokens"), where, "total_tokens"),
        cached_tokens=_count(usage.get("cached_tokens"), where, "cached_tokens"),
        reasoning_tokens=_count(usage.get("reasoning_tokens"), where, "reasoning_tokens"),
        image_tokens=_count(usage.get("image_tokens"), where, "image_tokens"),
        usage_estimated=bool(usage.get("estimated")),
    )


# -- ChatGPT's data export ----------------------------------------------------------------------

# Content types that are not part of the conversation as it reads (the model's browsing,
# quotes, hidden thoughts, the member's saved context): left out.
_LEFT_OUT = {"tether_browsing_display", "tether_quote", "thoughts", "reasoning_recap",
             "user_editable_context", "model_editable_context", "system_error",
             "sonic_webpage", "app_pairing_context"}


def _chatgpt(item, where: str) -> Imported:
    if not isinstance(item, dict):
        raise _problem(where, _("it is not a conversation (an object with “mapping”)."))
    mapping = item.get("mapping")
    if not isinstance(mapping, dict) or not all(isinstance(node, dict)
                                                for node in mapping.values()):
        raise _problem(where, _("“mapping” is missing or not an object of nodes."))
    conversation = Imported(
        source=_source("chatgpt", item.get("conversation_id") or item.get("id"), item),
        title=_text(item.get("title"), where, "title").strip()[:200],
        created_at=_time(item.get("create_time"), where, "create_time"),
        updated_at=_time(item.get("update_time"), where, "update_time"),
    )
    path = _current_path(mapping, item.get("current_node"), where)
    on_path = set(path)
    for node_id in path:
        parent_id = mapping[node_id].get("parent")
        parent = mapping.get(parent_id) if isinstance(parent_id, str) else None
        siblings = parent.get("children") if parent else None
        for sibling in siblings if isinstance(siblings, list) else []:
            if isinstance(sibling, str) and sibling in mapping and sibling not in on_path:
                _add(conversation, mapping, _branch(mapping, sibling), where, superseded=True)
        _add(conversation, mapping, [node_id], where, superseded=False)
    conversation.model = next((m.model for m in reversed(conversation.messages) if m.model), "")
    return conversation


def _current_path(mapping: dict, current, where: str) -> list[str]:
    """Return the node ids from the root to ``current`` (the latest node if it is missing)."""
    if not isinstance(current, str) or current not in mapping:
        if current is not None:
            raise _problem(where, _("“current_node” is not a node of its “mapping”."))
        leaves = [key for key, node in mapping.items() if not node.get("children")]
        if not leaves:
            return []
        current = leaves[-1]
    path, seen = [], set()
    while isinstance(current, str) and current in mapping:
        if current in seen:
            raise _problem(where, _("its “mapping” has a loop."))
        seen.add(current)
        path.append(current)
        current = mapping[current].get("parent")
    return path[::-1]


def _branch(mapping: dict, node_id: str) -> list[str]:
    """Return a branch's nodes: from ``node_id`` along the latest child each time."""
    path, seen = [], set()
    while node_id in mapping and node_id not in seen:
        seen.add(node_id)
        path.append(node_id)
        children = [child for child in mapping[node_id].get("children") or []
                    if isinstance(child, str) and child in mapping]
        if not children:
            break
        node_id = children[-1]
    return path


def _add(conversation: Imported, mapping: dict, node_ids: list[str], where: str, *,
         superseded: bool) -> None:
    """Append the messages of consecutive nodes; a reply in several parts (a tool call, its
    output, the answer) is joined into one, as it reads."""
    joinable = bool(conversation.messages) and not superseded and \
        not conversation.messages[-1].superseded
    for node_id in node_ids:
        message = _chatgpt_message(mapping[node_id].get("message"), where)
        if message is None:
            continue
        message.superseded = superseded
        last = conversation.messages[-1] if conversation.messages else None
        if joinable and last is not None and last.role == message.role == "assistant":
            last.content += "\n\n" + message.content
            last.model = last.model or message.model
        else:
            conversation.messages.append(message)
        joinable = True


def _chatgpt_message(message, where: str) -> ImportedMessage | None:
    if message is None:
        return None
    if not isinstance(message, dict):
        raise _problem(where, _("a node's “message” is not an object."))
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    role, kind = author.get("role"), content.get("content_type")
    if metadata.get("is_visually_hidden_from_conversation") or kind in _LEFT_OUT:
        return None
    if role == "tool":
        if kind not in ("multimodal_text", "execution_output"):
            return None  # the model's tools at work (browsing, plugins): not the answer
        role = "assistant"
    if role not in ("user", "assistant"):
        return None  # system messages: ChatGPT's own instructions
    body = text.clean(_content_text(content, kind)).strip()
    if not body:
        return None
    model = metadata.get("model_slug")
    return ImportedMessage(
        role=role, content=body,
        model=text.clean(model)[:200] if isinstance(model, str) else "",
        created_at=_time(message.get("create_time"), where, "create_time"),
        finish_reason="stop" if role == "assistant" else "",
    )


def _content_text(content: dict, kind) -> str:
    if kind == "code":
        code = content.get("text") if isinstance(content.get("text"), str) else ""
        language = content.get("language") if isinstance(content.get("language"), str) else ""
        language = language if language.isalnum() else ""
        return f"```{language}\n{code}\n```" if code.strip() else ""
    if kind == "execution_output":
        return _("[code output not imported]")
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n\n".join(piece for piece in (_part(part) for part in parts) if piece)
    if isinstance(content.get("text"), str):
        return content["text"]
    return _("[%(kind)s not imported]") % {"kind": str(kind or _("content"))[:40]}


def _part(part) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    kind = part.get("content_type")
    if kind == "image_asset_pointer":
        return _("[image not imported]")
    if kind == "audio_transcription" and isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(kind, str) and "audio" in kind:
        return _("[audio not imported]")
    if isinstance(kind, str) and "video" in kind:
        return _("[video not imported]")
    return _("[attachment not imported]")
