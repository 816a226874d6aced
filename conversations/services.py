"""Writes: every change to keys, conversations and messages goes through these functions.

Views, admin actions and management commands call them alike; keyword-only arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from . import (
    attachments,
    audit,
    catalog,
    crypto,
    imports,
    languages,
    limits,
    rendering,
    replies,
    selectors,
    text,
    uploads,
)
from .models import ApiKey, Conversation, Message, Preference, Preset, ReasoningEffort, Share

TITLE_LENGTH = 60
MAX_MESSAGE_LENGTH = 100_000


@sensitive_variables("secret")
def api_key_create(
    *, name: str, secret: str, base_url: str = "", organization: str = "", project: str = "",
    default_model: str = "", is_active: bool = True, everyone: bool = False,
) -> ApiKey:
    key = ApiKey(
        name=name, organization=organization.strip(), project=project.strip(),
        default_model=default_model.strip(), is_active=is_active, everyone=everyone,
    )
    if base_url:
        key.base_url = base_url.strip()
    crypto.set_secret(key, secret)
    key.full_clean()
    with transaction.atomic():  # the key with the stamp it writes (access.py)
        key.save()
    catalog.refresh_quietly(key)  # its model list now, not on a member's page
    return key


@transaction.atomic
def api_keys_reencrypt() -> int:
    """Re-encrypt every stored secret under the first encryption key; return how many.

    All or nothing: if any secret cannot be decrypted with the configured keys, nothing changes
    and ``crypto.DecryptionError`` says so.
    """
    keys = list(ApiKey.objects.select_for_update().order_by("pk"))
    for key in keys:
        key.secret_encrypted = crypto.rotate(key.secret_encrypted)
    ApiKey.objects.bulk_update(keys, ["secret_encrypted"])
    audit.record("encryption key rotated", f"{len(keys)} API key(s)",
                 "re-encrypted under the first key of CHATSITE_ENCRYPTION_KEYS")
    return len(keys)


def administrator_create(*, username: str, password: str):
    """Create the first superuser; fail if any user exists already."""
    User = get_user_model()
    with transaction.atomic():
        if User.objects.exists():
            raise ValidationError(_("An administrator exists already."))
        return User.objects.create_superuser(username=username, password=password)


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = _storable(title).strip()[:200]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    for message_id in conversation.messages.filter(
        status__in=Message.UNFINISHED
    ).values_list("id", flat=True):
        reply_stop(message=Message(pk=message_id))
    conversation.delete()


def conversation_pin(*, conversation: Conversation, pinned: bool) -> None:
    """Pin the conversation on top of the sidebar, or unpin it; its place in time stays."""
    conversation.pinned_at = timezone.now() if pinned else None
    Conversation.objects.filter(pk=conversation.pk).update(pinned_at=conversation.pinned_at)


def conversation_archive(*, conversation: Conversation, archived: bool) -> None:
    """Archive the conversation (out of the sidebar, kept and listed under Archived), or bring
    it back."""
    conversation.archived_at = timezone.now() if archived else None
    Conversation.objects.filter(pk=conversation.pk).update(archived_at=conversation.archived_at)


def _audit_target(conversation: Conversation) -> str:
    return f"conversation {conversation.pk} of {conversation.owner.get_username()!r}"


@transaction.atomic
def share_create(*, conversation: Conversation, by, teams=(), users=()) -> list[Share]:
    """Share the conversation read-only with some of its owner's teams and with other active
    members; return the new shares (those that exist already are left as they are)."""
    if conversation.owner_id != by.pk:
        raise ValidationError(_("Only the owner may share a conversation."))
    if any(not by.groups.filter(pk=team.pk).exists() for team in teams):
        raise ValidationError(_("You can share only with a team you belong to."))
    for user in users:
        if user.pk == by.pk:
            raise ValidationError(_("You cannot share a conversation with yourself."))
        if not user.is_active:
            raise ValidationError(_("%(name)s cannot sign in.") % {"name": user.get_username()})
    existing = selectors.share_list(conversation=conversation)
    teams_in = {share.team_id for share in existing}
    users_in = {share.user_id for share in existing}
    created = [Share.objects.create(conversation=conversation, team=team, created_by=by)
               for team in teams if team.pk not in teams_in]
    created += [Share.objects.create(conversation=conversation, user=user, created_by=by)
                for user in users if user.pk not in users_in]
    for share in created:
        kind = "team" if share.team_id else "member"
        audit.record("conversation shared", _audit_target(conversation),
                     f"with {kind} {str(share)!r}")
    return created


@transaction.atomic
def share_revoke(*, share: Share) -> None:
    """Stop sharing: the recipients lose the conversation at once (their next request)."""
    kind = "team" if share.team_id else "member"
    audit.record("share revoked", _audit_target(share.conversation),
                 f"from {kind} {str(share)!r}")
    share.delete()


_COPIED = ("role", "content", "status", "finish_reason", "error_message", "error_type", "model",
           "content_html", "html_version", "context_omitted")


@transaction.atomic
def conversation_copy(*, conversation: Conversation, owner) -> Conversation:
    """Return a new conversation of ``owner`` holding copies of the current, finished messages
    of ``conversation`` (shared with them), with its title and chat settings; the original is
    not touched."""
    copy = Conversation.objects.create(
        owner=owner, title=conversation.title, api_key=conversation.api_key,
        model=conversation.model, system_prompt=conversation.system_prompt,
        temperature=conversation.temperature, max_output_tokens=conversation.max_output_tokens,
        reasoning_effort=conversation.reasoning_effort,
    )
    rows = list(Message.objects.for_conversation(conversation).filter(superseded=False)
                .exclude(status__in=Message.UNFINISHED).values("id", *_COPIED))
    copies = Message.objects.bulk_create(
        Message(conversation=copy, **{name: row[name] for name in _COPIED}) for row in rows)
    for row, message in zip(rows, copies, strict=True):
        attachments.attachments_copy(source=Message(pk=row["id"]), target=message)
    return copy


def _reply_team(*, owner, key: ApiKey | None, model: str):
    """Check that ``owner`` may use ``model`` on ``key`` and is within their limits; return the
    team the reply counts against (or None). Only reads, so callers can run it before their
    write transaction: on SQLite, whose one writer is taken when a transaction begins, checks
    inside it would hold every other writer back."""
    grant = selectors.grant_for(user=owner, key=key, model=model)
    if grant is None:
        raise ValidationError(
            _("You may no longer use %(model)s with this key. Pick another model.")
            % {"model": model or _("this model")},
            code="no_access",
        )
    if not replies.has_capacity():
        raise ValidationError(_(replies.BUSY_MESSAGE), code="busy")
    limits.check(user=owner, team=grant.team)
    return grant.team


def _queue_reply(*, conversation: Conversation, team) -> Message:
    """Store a new pending reply; generation starts once the transaction commits."""
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        api_key=conversation.api_key,
        team=team,
        model=conversation.model,
        lease_expires_at=replies.lease_expires(),
    )
    transaction.on_commit(lambda: replies.start(reply.pk))
    return reply


def _start_reply(*, conversation: Conversation) -> Message:
    """Check access and limits for the conversation's owner, then queue a new reply."""
    team = _reply_team(owner=conversation.owner, key=conversation.api_key,
                       model=conversation.model)
    return _queue_reply(conversation=conversation, team=team)


def _storable(value: str) -> str:
    """Return a member's text as it can be stored on every engine: a NUL byte is refused, with
    the words the forms use for it; unpaired surrogates (which no browser sends, but a caller
    decoding JSON can) become U+FFFD, as in model output."""
    ProhibitNullCharactersValidator()(value)
    return text.clean(value)


def _clean_content(content: str, *, attached: bool = False) -> str:
    """Return the member's text as stored; empty only beside attachments (``attached``)."""
    content = _storable(content).strip()
    if not content and not attached:
        raise ValidationError(_("Write a message first."))
    if len(content) > MAX_MESSAGE_LENGTH:
        raise ValidationError(
            _("The message is too long (at most %(limit)s characters).")
            % {"limit": MAX_MESSAGE_LENGTH}
        )
    return content


@dataclass(frozen=True)
class ChatSettings:
    """What a member sets per conversation; sent with every reply from the next one on."""

    instructions: str = ""
    temperature: Decimal | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str = ""  # sent to reasoning models only


def message_send(
    *, owner, conversation: Conversation | None, content: str, api_key: ApiKey, model: str,
    settings: ChatSettings | None = None, files: list[uploads.Prepared] = (),
    image_detail: str = "",
) -> tuple[Message, Message]:
    """Store the member's message (in a new conversation if none) with the ``files`` attached
    (checked by ``uploads.prepare``) and start the reply; with ``settings``, the conversation
    takes them first. Images for a model without image input are refused, nothing sent.
    ``Conversation.DoesNotExist``: the conversation was deleted since it was read."""
    content = _clean_content(content, attached=bool(files))
    _check_files(files, api_key=api_key, model=model)
    if settings is not None:
        _check_effort(settings.reasoning_effort)
    if conversation is not None:
        _ensure_idle(conversation)  # a second message would cut the first reply off
    team = _reply_team(owner=owner, key=api_key, model=model)
    with attachments.removed_unless_kept(), transaction.atomic():
        new = conversation is None
        if new:
            conversation = Conversation(owner=owner)
        # Only what the message sets is written to an existing conversation: a rename, pin or
        # archive made meanwhile (another tab) stays.
        changed = ["api_key", "model", "updated_at"]
        conversation.api_key = api_key
        conversation.model = model
        if settings is not None:
            conversation.system_prompt = text.clean(settings.instructions.strip())
            conversation.temperature = settings.temperature
            conversation.max_output_tokens = settings.max_output_tokens
            conversation.reasoning_effort = settings.reasoning_effort
            changed += ["system_prompt", "temperature", "max_output_tokens", "reasoning_effort"]
        untitled = not conversation.title
        if untitled:  # its first words, or the name of what it attached
            conversation.title = Truncator(" ".join(content.split()) or files[0].name).chars(
                TITLE_LENGTH)
        if new:
            conversation.save()
        else:
            conversation.updated_at = timezone.now()
            row = Conversation.objects.filter(pk=conversation.pk)
            if not row.update(**{name: getattr(conversation, name) for name in changed}):
                raise Conversation.DoesNotExist  # deleted meanwhile (another tab)
            if untitled:  # unless another tab named it meanwhile
                row.filter(title="").update(title=conversation.title)
        question = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=content, model=model,
        )
        attachments.attachments_create(message=question, prepared=files, detail=image_detail)
        return question, _queue_reply(conversation=conversation, team=team)


def _check_files(files: list[uploads.Prepared], *, api_key: ApiKey, model: str) -> None:
    uploads.check_count(len(files))
    if any(item.kind == "image" for item in files) and not catalog.spec_for(api_key, model).vision:
        raise ValidationError(
            _("%(model)s does not take images. Pick a model that does, or remove the images; "
              "nothing was sent.") % {"model": model}, code="no_vision")


def _check_effort(effort: str) -> None:
    if effort and effort not in ReasoningEffort.values:
        raise ValidationError(_("Choose a reasoning effort from the list."), code="invalid")


def _ensure_idle(conversation: Conversation) -> None:
    """Refuse a new reply while one is being written (a stale one, whose process died, does not
    count: it is shown as interrupted and may be retried)."""
    if conversation.messages.filter(
        status__in=Message.UNFINISHED, lease_expires_at__gte=timezone.now()
    ).exists():
        raise ValidationError(_("Wait for the reply to finish, or stop it, first."))


@transaction.atomic
def reply_regenerate(*, message: Message) -> Message:
    """Start a new reply in place of ``message``, the last reply of its conversation.

    The earlier reply stays stored and shown as an earlier version; it is no longer sent
    upstream as context.
    """
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    last = Message.objects.for_conversation(conversation).filter(superseded=False).last()
    if last is None or last.pk != message.pk or message.role != Message.Role.ASSISTANT:
        raise ValidationError(_("Only the last reply can be regenerated."))
    _ensure_idle(conversation)
    Message.objects.filter(pk=message.pk).update(superseded=True)
    conversation.save(update_fields=["updated_at"])
    return _start_reply(conversation=conversation)


@transaction.atomic
def message_edit(*, message: Message, content: str) -> tuple[Message, Message]:
    """Resend an edited version of the member's ``message`` and start a new reply.

    The original and everything after it stay stored, shown as earlier versions, and are no
    longer sent upstream: the conversation continues from the edited message.
    """
    content = _clean_content(content, attached=message.attachments.exists())
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    if message.role != Message.Role.USER or message.superseded:
        raise ValidationError(_("Only your own current messages can be edited."))
    _ensure_idle(conversation)
    Message.objects.for_conversation(conversation).filter(id__gte=message.pk).update(
        superseded=True
    )
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=content,
        model=conversation.model,
    )
    attachments.attachments_copy(source=message, target=question)  # the edit keeps them
    conversation.save(update_fields=["updated_at"])
    return question, _start_reply(conversation=conversation)


@dataclass(frozen=True)
class ImportResult:
    imported: int  # conversations added
    skipped: int  # conversations imported before (or twice in the file), left as they are


def conversations_import(*, owner, conversations: list[imports.Imported]) -> ImportResult:
    """Store ``conversations`` (read by ``imports.read``) as ``owner``'s own, all or none.

    A conversation imported before (the same source in the file) is skipped, so importing a
    file twice adds nothing. Nothing is charged: imported messages record no usage. Replies are
    rendered now, by the sanitizing Markdown path, and keep their times from the file.
    """
    try:
        with attachments.removed_unless_kept(), transaction.atomic():
            return _import(owner=owner, conversations=conversations)
    except IntegrityError:  # the same file, imported at the same moment by another request
        raise ValidationError(_("These conversations are being imported already. Reload the "
                                "page in a moment.")) from None


def _import(*, owner, conversations: list[imports.Imported]) -> ImportResult:
    sources = [conversation.source for conversation in conversations]
    known: set[str] = set()
    for start in range(0, len(sources), 500):
        known.update(Conversation.objects.filter(
            owner=owner, import_source__in=sources[start:start + 500]
        ).values_list("import_source", flat=True))
    imported = 0
    for item in conversations:
        if item.source in known:
            continue
        known.add(item.source)
        _import_one(owner=owner, item=item)
        imported += 1
    return ImportResult(imported=imported, skipped=len(conversations) - imported)


def _import_one(*, owner, item: imports.Imported) -> None:
    now = timezone.now()
    created = item.created_at or now
    conversation = Conversation.objects.create(
        owner=owner, title=item.title, model=item.model, system_prompt=item.instructions,
        temperature=item.temperature, max_output_tokens=item.max_output_tokens,
        reasoning_effort=item.reasoning_effort, import_source=item.source,
    )
    moment = created
    messages, times = [], []
    for entry in item.messages:
        # Times never go backwards: the page orders messages by time, as the file does.
        moment = max(moment, entry.created_at or moment)
        reply = entry.role == Message.Role.ASSISTANT
        messages.append(Message(
            conversation=conversation, role=entry.role, content=entry.content,
            status=entry.status, finish_reason=entry.finish_reason,
            error_message=entry.error_message, model=entry.model, superseded=entry.superseded,
            prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens,
            total_tokens=entry.total_tokens, cached_tokens=entry.cached_tokens,
            reasoning_tokens=entry.reasoning_tokens, image_tokens=entry.image_tokens,
            usage_estimated=entry.usage_estimated,
            content_html=rendering.render_markdown(entry.content) if reply and entry.content
            else "",
            html_version=rendering.VERSION if reply else 0,
            finished_at=moment if reply else None,
        ))
        times.append(moment)
    Message.objects.bulk_create(messages)
    for message, entry in zip(messages, item.messages, strict=True):
        for prepared, detail in entry.attachments:
            attachments.attachments_create(message=message, prepared=[prepared], detail=detail)
    for message, moment in zip(messages, times, strict=True):
        message.created_at = message.updated_at = moment  # an insert sets them to now
    Message.objects.bulk_update(messages, ["created_at", "updated_at"], batch_size=500)
    Conversation.objects.filter(pk=conversation.pk).update(
        created_at=created, updated_at=max(item.updated_at or moment, moment))


def reply_stop(*, message: Message) -> None:
    """Ask the reply to stop, wherever it is being generated."""
    replies.stop(message.pk)


def language_set(*, user, language: str):
    """Remember ``user``'s language ("" follows the browser)."""
    if language and not languages.is_offered(language):
        raise ValidationError(_("Choose one of the languages offered."))
    Preference.objects.update_or_create(user=user, defaults={"language": language})


def theme_set(*, user, theme: str):
    """Remember ``user``'s colour theme ("" follows the system)."""
    if theme not in Preference.Theme.values:
        raise ValidationError(_("Choose light, dark or the system's theme."))
    Preference.objects.update_or_create(user=user, defaults={"theme": theme})


def preset_save(*, owner, name: str, settings: ChatSettings, api_key: ApiKey | None,
                model: str) -> Preset:
    """Save the member's own preset: a model and chat settings under a name."""
    name = text.clean(name.strip())[:100]
    if not name:
        raise ValidationError(_("Give the preset a name."))
    _check_effort(settings.reasoning_effort)
    return Preset.objects.create(
        owner=owner, name=name, api_key=api_key, model=model,
        instructions=text.clean(settings.instructions.strip()),
        temperature=settings.temperature, max_output_tokens=settings.max_output_tokens,
        reasoning_effort=settings.reasoning_effort,
    )
