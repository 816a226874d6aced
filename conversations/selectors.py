"""Reads: what pages, streams and generation need from the database and the upstream's lists."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.translation import gettext as _

from . import access, catalog
from . import search as conversation_search
from .models import (
    ApiKey,
    CatalogModel,
    Conversation,
    Message,
    Preference,
    Preset,
    Share,
    Team,
)
from .replies.leases import INTERRUPTED_MESSAGE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelGroup:
    """The models of one key a member may pick, with what the catalog says of each."""

    key: ApiKey
    models: list[str]
    listed: bool  # False: the upstream's list could not be fetched; these are fallbacks
    specs: dict[str, catalog.ModelSpec] = field(default_factory=dict)

    def label(self, model: str) -> str:
        spec = self.specs.get(model)
        return spec.display_name if spec is not None else model

    def narrowed(self, allowed: set[str]) -> ModelGroup:
        """Return this group with only the models in ``allowed``."""
        return replace(self, models=[m for m in self.models if m in allowed],
                       specs={m: s for m, s in self.specs.items() if m in allowed})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LISTED = ("id", "title", "updated_at", "pinned_at", "archived_at")


@dataclass(frozen=True)
class SidebarItem:
    conversation: Conversation
    group: str  # the heading it is listed under; shown where it differs from the one before
    starts_group: bool


@dataclass(frozen=True)
class Sidebar:
    """One page of the member's conversation list: the pinned ones (first page only), then the
    others newest first, grouped by day in the member's time zone; ``next_cursor`` continues it
    (None: nothing older)."""

    pinned: list[Conversation]
    items: list[SidebarItem]
    next_cursor: str | None


def _cursor(conversation: Conversation) -> str:
    return f"{(conversation.updated_at - _EPOCH) // timedelta(microseconds=1)}_{conversation.pk}"


def _parse_cursor(value: str | None) -> tuple[datetime, int] | None:
    """Return the (updated_at, id) a cursor stands for, or None for no or a malformed one."""
    try:
        micros, pk = (value or "").split("_")
        return _EPOCH + timedelta(microseconds=int(micros)), int(pk)
    except (ValueError, OverflowError):
        return None


def day_group(moment: datetime, today: date) -> str:
    """Return the sidebar heading of a conversation last changed at ``moment``."""
    day = timezone.localtime(moment).date()
    if day >= today:
        return _("Today")
    if day == today - timedelta(days=1):
        return _("Yesterday")
    if day >= today - timedelta(days=7):
        return _("Previous 7 days")
    return _("Earlier")


def conversation_list(*, user, before: str | None = None, archived: bool = False) -> Sidebar:
    """Return a page of the member's conversations, newest first, older than ``before`` (a
    cursor from an earlier page): keyset paging on (updated_at, id), so a page costs the same
    however far down it is, and none is skipped or listed twice as conversations change.
    Two queries on the first page (the pinned ones, the page), one on the next ones.
    ``archived``: the archived conversations instead (nothing pinned on top)."""
    size = settings.CHATSITE_SIDEBAR_PAGE_SIZE
    mine = Conversation.objects.owned_by(user).only(*_LISTED).order_by("-updated_at", "-id")
    start = _parse_cursor(before)
    pinned: list[Conversation] = []
    if archived:
        listed = mine.filter(archived_at__isnull=False)
    else:
        listed = mine.filter(archived_at__isnull=True, pinned_at__isnull=True)
        if start is None:
            pinned = list(mine.filter(archived_at__isnull=True, pinned_at__isnull=False)
                          .order_by("-pinned_at", "-id"))
    if start is not None:
        moment, pk = start
        listed = listed.filter(Q(updated_at__lt=moment) | Q(updated_at=moment, id__lt=pk))
    rows = list(listed[:size + 1])
    today = timezone.localdate()
    previous = day_group(start[0], today) if start is not None else None
    items = []
    for conversation in rows[:size]:
        group = day_group(conversation.updated_at, today)
        items.append(SidebarItem(conversation, group, group != previous))
        previous = group
    return Sidebar(pinned=pinned, items=items,
                   next_cursor=_cursor(rows[size - 1]) if len(rows) > size else None)


def conversations_readable_by(user) -> QuerySet[Conversation]:
    """Return the conversations ``user`` may read: their own, and those shared with them or with
    one of their teams. The one answer to "who may read this" (pages, the live stream)."""
    if not user.is_authenticated:
        return Conversation.objects.none()
    shared = Share.objects.filter(conversation=OuterRef("pk"))
    return Conversation.objects.filter(
        Q(owner=user) | Exists(shared.filter(user=user)) | Exists(shared.filter(team__user=user))
    )


def message_reader(*, user, pk: int) -> str | None:
    """Return how ``user`` may read message ``pk``: ``"owner"``, ``"recipient"`` (shared with
    them or one of their teams), or None (no such message, or not theirs to read).

    The owner's in one query on the primary key that reads two ids, not the message's text;
    another member's with one more, asking ``conversations_readable_by`` (opening a reply's
    stream is the commonest request after a message, and nearly always the owner's)."""
    if not user.is_authenticated:
        return None
    found = list(Message.objects.filter(pk=pk).values_list(
        "conversation_id", "conversation__owner_id")[:1])
    if not found:
        return None
    conversation_id, owner_id = found[0]
    if owner_id == user.pk:
        return "owner"
    if conversations_readable_by(user).filter(pk=conversation_id).exists():
        return "recipient"
    return None


def shared_with(*, user) -> list[Conversation]:
    """Return the conversations others share with ``user`` (or their teams), newest first,
    their owners read along."""
    return list(conversations_readable_by(user).exclude(owner=user).select_related("owner")
                .only("id", "title", "updated_at", "owner__username")
                .order_by("-updated_at", "-id"))


def shared_get(*, user, pk: int) -> Conversation:
    """Return conversation ``pk`` if ``user`` may read it; a 404 otherwise."""
    return get_object_or_404(conversations_readable_by(user).select_related("owner"), pk=pk)


def share_list(*, conversation: Conversation) -> list[Share]:
    """Return who the conversation is shared with."""
    return list(conversation.shares.select_related("team", "user"))


def conversation_get(*, user, pk: int) -> Conversation:
    """Return the user's conversation ``pk``; another user's is a 404."""
    return get_object_or_404(Conversation.objects.select_related("api_key"), pk=pk, owner=user)


def message_get(*, user, pk: int) -> Message:
    """Return message ``pk`` of one of the user's conversations; another user's is a 404."""
    return get_object_or_404(
        Message.objects.select_related("conversation"), pk=pk, conversation__owner=user
    )


def message_list(*, conversation: Conversation) -> list[Message]:
    """Return the conversation's messages as the page shows them, the one reply that offers
    Regenerate or Retry marked (``offers_retry``)."""
    messages = [as_shown(message) for message in Message.objects.for_conversation(conversation)]
    _mark_offers_retry(messages)
    return messages


def _mark_offers_retry(messages) -> None:
    """Mark the one message that offers Regenerate or Retry: the last current message, if it is
    a finished reply."""
    current = [message for message in messages if not message.superseded]
    for message in messages:
        message.offers_retry = False
    if current and current[-1].role == Message.Role.ASSISTANT and not current[-1].is_unfinished:
        current[-1].offers_retry = True


_ROW_FIELDS = ("id", "conversation_id", "role", "status", "superseded", "finish_reason",
               "error_type", "error_message", "model", "html_version", "created_at", "content",
               "content_html", "lease_expires_at", "api_key_id", "context_omitted")


@dataclass
class MessageRow:
    """What the chat page needs of one message, read without building a model instance (a long
    conversation's page reads hundreds of them, and a finished one's HTML is usually cached).
    ``values`` are in ``FIELDS`` order, the model's own field order (``Message.from_db`` needs
    it)."""

    FIELDS = tuple(field.attname for field in Message._meta.concrete_fields
                   if field.attname in _ROW_FIELDS)
    INDEX = {name: index for index, name in enumerate(FIELDS)}

    values: tuple
    offers_retry: bool = False

    def __getattr__(self, name: str):
        try:
            return self.values[MessageRow.INDEX[name]]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def pk(self) -> int:
        return self.values[0]

    @property
    def is_unfinished(self) -> bool:
        """As shown: a reply whose process stopped renewing its lease is shown interrupted."""
        return self.status in Message.UNFINISHED and not (
            self.lease_expires_at is not None and self.lease_expires_at < timezone.now()
        )

    def message(self) -> Message:
        """The message itself, as the page shows it (see ``as_shown``)."""
        message = Message.from_db("default", self.FIELDS, self.values)
        message.offers_retry = self.offers_retry
        return as_shown(message)


def message_rows(*, conversation: Conversation) -> list[MessageRow]:
    """Return the conversation's messages for its page, the one reply that offers Regenerate or
    Retry marked."""
    rows = [MessageRow(values) for values in
            Message.objects.for_conversation(conversation).values_list(*MessageRow.FIELDS)]
    _mark_offers_retry(rows)
    return rows


def offers_retry(message: Message) -> bool:
    """Return whether ``message`` is the reply that offers Regenerate or Retry: the last current
    message of its conversation, an assistant's, finished. (``message_list`` marks the same one
    for a whole page.)"""
    return (
        message.role == Message.Role.ASSISTANT and not message.superseded
        and not message.is_unfinished
        and not Message.objects.filter(conversation_id=message.conversation_id, id__gt=message.pk,
                                       superseded=False).exists()
    )


def last_reply_id(*, conversation_id: int, before: int) -> int | None:
    """Return the id of the last current reply of a conversation before message ``before``."""
    return (Message.objects.filter(conversation_id=conversation_id, id__lt=before,
                                   role=Message.Role.ASSISTANT, superseded=False)
            .order_by("-id").values_list("id", flat=True).first())


def administrators() -> list[str]:
    """Return the usernames of a few active superusers, for "ask an administrator"."""
    from django.contrib.auth import get_user_model

    return list(get_user_model().objects.filter(is_superuser=True, is_active=True)
                .order_by("username").values_list("username", flat=True)[:3])


def as_shown(message: Message) -> Message:
    """Return ``message`` as a page shows it: a reply generated in this process with the text it
    has now (the database gets it every few seconds); a reply whose process died (its lease ran
    out) interrupted — in memory only; pages never write, the watchdog does."""
    if message.is_unfinished:
        from .replies import registry

        live = registry.get(message.pk)
        if live is not None:
            text = live.text()
            if len(text) > len(message.content):
                message.content = text
    if message.is_stale:
        message.status = Message.Status.INTERRUPTED
        message.error_type = "interrupted"
        message.error_message = _(INTERRUPTED_MESSAGE)
    return message


def history_for(message: Message) -> list[tuple[int, str, str]]:
    """Return the (id, role, content) of the current messages before ``message``, oldest first:
    what the model is shown of the conversation (``payload.py`` shapes it, attachments
    included)."""
    return list(
        Message.objects.for_conversation(message.conversation)
        .filter(id__lt=message.id, superseded=False)
        .exclude(role=Message.Role.ASSISTANT, content="")
        .values_list("id", "role", "content")
    )


def models_for_key(key: ApiKey, rows: list[CatalogModel] | None = None) -> ModelGroup:
    """Return the chat models ``key`` offers, from its catalog in the database (``rows``, or a
    query): no network. A key whose list was never fetched offers its default model and the
    fallbacks."""
    offered = {model: spec for model, spec in catalog.specs_for(key, rows).items()
               if spec.offered}
    return ModelGroup(key=key, models=list(offered), listed=bool(key.listed_models),
                      specs=offered)


def model_groups(*, user) -> list[ModelGroup]:
    """Return, per key the user may use, the models they may pick: every offered model of a
    key granted to everyone or to them (or any key, for a superuser), and of a key granted to
    their teams the union of what each team's grant allows. Kept until keys, catalogs or
    grants change (``access.py``)."""
    return access.remembered("model_groups", (user.pk, user.is_superuser),
                             lambda: _model_groups(user))


def _model_groups(user) -> list[ModelGroup]:
    # The secret stays in the database: these keys are kept in memory (access.py).
    keys = list(ApiKey.objects.usable_by(user).defer("secret_encrypted").annotate(direct=Exists(
        ApiKey.users.through.objects.filter(apikey=OuterRef("pk"), user=user))))
    if not keys:
        return []
    rows = defaultdict(list)
    for row in CatalogModel.objects.filter(api_key__in=keys):
        rows[row.api_key_id].append(row)
    through_teams = [key for key in keys
                     if not (user.is_superuser or key.everyone or key.direct)]
    allowed = _team_allowances(user, through_teams) if through_teams else {}
    groups = []
    for key in keys:
        group = models_for_key(key, rows[key.pk])
        if allowed.get(key.pk) is not None:
            group = group.narrowed(allowed[key.pk])
        if group.models:
            groups.append(group)
    return groups


def _team_allowances(user, keys: list[ApiKey]) -> dict[int, set[str] | None]:
    """Return, per key granted to the user's teams, the models their grants allow: None for
    every offered model (a team whose grant is not narrowed), else the union of the models
    that name one of those teams."""
    grants = defaultdict(set)
    for key_id, team_id in ApiKey.teams.through.objects.filter(
            apikey__in=keys, group__user=user).values_list("apikey_id", "group_id"):
        grants[key_id].add(team_id)
    narrowing = defaultdict(lambda: defaultdict(set))
    for key_id, team_id, model in CatalogModel.teams.through.objects.filter(
            catalogmodel__api_key__in=keys, group__user=user).values_list(
            "catalogmodel__api_key_id", "group_id", "catalogmodel__model"):
        narrowing[key_id][team_id].add(model)
    allowed: dict[int, set[str] | None] = {}
    for key_id, teams in grants.items():
        if any(team not in narrowing[key_id] for team in teams):
            allowed[key_id] = None
        else:
            allowed[key_id] = set().union(*(narrowing[key_id][team] for team in teams))
    return allowed


@dataclass(frozen=True)
class Grant:
    """Why a member may use a key: the team charged with the usage (the first, by name, of
    their teams whose grant of the key allows the model), or None if it is granted to everyone
    or to them."""

    team: Group | None


def grant_for(*, user, key: ApiKey | None, model: str) -> Grant | None:
    """Return how ``user`` may chat with ``model`` through ``key`` right now, or None if they
    may not: the key must offer the model, and one of the member's grants allow it.

    The team is read first, and only while the key is active: a team found is a grant, so the
    key's other grants are read only for a key without one. One query for a key granted to a
    team, two otherwise; kept until keys, catalogs or grants change (``access.py``).
    """
    if key is None or model not in catalog.offered_ids(key):
        return None
    # What is kept reads the database only: never the listing of the key the caller holds.
    return access.remembered("grant_for", (user.pk, user.is_superuser, key.pk, model),
                             lambda: _grant_for(user, key, model))


def _grant_for(user, key: ApiKey, model: str) -> Grant | None:
    narrowed_away = CatalogModel.objects.filter(api_key=key, model=model, offered=False)
    narrowing = CatalogModel.teams.through.objects.filter(catalogmodel__api_key=key,
                                                          group=OuterRef("pk"))
    team = (Group.objects.filter(api_keys=key, api_keys__is_active=True, user=user)
            .filter(~Exists(narrowing) | Exists(narrowing.filter(catalogmodel__model=model)))
            .filter(~Exists(narrowed_away))
            .order_by("name").first())
    if team is not None:
        return Grant(team=team)
    direct = ApiKey.objects.active().filter(pk=key.pk).filter(~Exists(narrowed_away))
    if not user.is_superuser:
        direct = direct.filter(Q(everyone=True) | Q(users=user))
    return Grant(team=None) if direct.exists() else None


def default_choice(*, user) -> tuple[int, str] | None:
    """Return the (key id, model) of the user's first team that has a default, if any."""
    team = (
        Team.objects.filter(group__user=user, default_key__isnull=False)
        .select_related("default_key").order_by("group__name").first()
    )
    if team is None:
        return None
    return team.default_key_id, team.default_model or team.default_key.default_model


def degraded_services() -> dict[str, str]:
    """Return, for each service the site runs without right now, what that means."""
    if not settings.REDIS_URL:
        return {}
    from django.core.cache import cache as default_cache

    ping = getattr(default_cache, "ping", None)
    if ping is None or ping():
        return {}
    return {"redis": "unreachable: live replies between workers follow the database, caches "
                     "and the per-minute limit are kept per process"}


def preferences_of(*, user) -> tuple[str, str]:
    """Return the member's chosen language and colour theme ("" for each not chosen)."""
    found = Preference.objects.filter(user=user).values_list("language", "theme").first()
    return found or ("", "")


def preset_list(*, user) -> list[Preset]:
    """Return the presets ``user`` may start a chat from: their own and the site's granted to
    them."""
    return list(Preset.objects.available_to(user).select_related("api_key"))


def default_preset(*, user, presets: list[Preset]) -> Preset | None:
    """Return the preset of the member's first team that has one (if available to them)."""
    chosen = (Team.objects.filter(group__user=user, default_preset__isnull=False)
              .order_by("group__name").values_list("default_preset", flat=True).first())
    return next((preset for preset in presets if preset.pk == chosen), None)


def search(*, user, query: str, before: int | None = None) -> conversation_search.Results:
    """Return a page of what matches ``query`` in the conversations ``user`` may read: their
    own, and those shared with them (marked ``shared``: they open read-only)."""
    found = conversation_search.search(conversations=conversations_readable_by(user),
                                       query=query, before=before)
    hits = found.hits
    others = {hit.conversation_id for hit in hits} - set(
        Conversation.objects.owned_by(user).filter(pk__in={hit.conversation_id for hit in hits})
        .values_list("pk", flat=True)) if hits else set()
    return replace(found, hits=[replace(hit, shared=hit.conversation_id in others)
                                for hit in hits])
