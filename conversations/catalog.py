"""The model catalog: which chat models each key offers, and what each one is.

Per key, the provider's list (``ApiKey.listed_models``) and one ``CatalogModel`` row per listed
model, where an admin narrows what members are offered and overrides what the defaults
(``model_defaults.py``) assume: display name, context window, output limit, capabilities,
parameter style, prices, first-text deadline. ``spec_for`` merges the two into a ``ModelSpec``,
the one answer every other module asks (what to send, how long to wait, what it cost).

Pages and the message POST read it and never wait on a provider's network. It is refreshed
outside any member's request: when a key is created or sent somewhere new (the service and the
admin), by the admin's "Refresh models", and by the watchdog once a list is older than
``CHATSITE_MODELS_CACHE_SECONDS`` (a failed refresh is tried again after a minute). A refresh
adds a row for each new model -- offered, unless the admin has narrowed the key (then it waits
for the admin) -- and removes the rows of models no longer listed, except those that hold the
admin's settings: they are kept, offered to nobody, until the provider lists the model again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import FilteredRelation, Q
from django.utils import timezone

from . import access, crypto, model_defaults, upstream
from .models import ApiKey, CatalogModel

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = timedelta(minutes=1)

# Model ids a chat cannot use (embeddings, speech, images, moderation, legacy completions,
# realtime audio sessions).
NON_CHAT_MARKERS = (
    "embedding", "whisper", "tts", "dall-e", "moderation", "davinci", "babbage",
    "transcribe", "image", "search", "realtime",
)


def is_chat_model(model_id: str) -> bool:
    lowered = model_id.lower()
    return not any(marker in lowered for marker in NON_CHAT_MARKERS)


@dataclass(frozen=True)
class ModelSpec:
    """What one model of one key is, defaults and the admin's overrides merged."""

    model: str
    display_name: str
    offered: bool  # members granted the key may pick it (listed, and not narrowed away)
    context_window: int
    max_output_tokens: int | None
    vision: bool
    reasoning: bool
    accepts_temperature: bool
    length_parameter: str  # "max_tokens" | "max_completion_tokens"
    system_role: str  # "system" | "developer"
    # Per million tokens, in the site's currency; None: no price known.
    input_price: Decimal | None
    cached_input_price: Decimal | None
    output_price: Decimal | None
    first_token_timeout: float  # seconds
    accepts_safety_identifier: bool
    accepts_prompt_cache_key: bool
    image_detail: str = "auto"  # "auto" | "low" | "high", for attached images
    # The fields the admin set (the rest are defaults).
    overridden: frozenset[str] = frozenset()


def _first_token_timeout(seconds: float | None) -> float:
    """A default deadline never cuts below the site's own (CHATSITE_FIRST_TOKEN_TIMEOUT)."""
    return max(seconds or 0.0, float(settings.CHATSITE_FIRST_TOKEN_TIMEOUT))


PRICES = ("input_price", "cached_input_price", "output_price")


def merge(model: str, settings_: dict, *, offered: bool) -> ModelSpec:
    """Return the spec of ``model`` from its defaults and the admin's ``settings_`` (the
    ``CatalogModel.SETTINGS`` of its row, None or "" where unset).

    The three prices go together: once the admin sets one, the others are theirs too (unset:
    no price), never the table's; and the table's, in US dollars, apply only on a site that
    counts in them (``CHATSITE_CURRENCY``)."""
    defaults = model_defaults.defaults_for(model)
    overridden = frozenset(name for name in CatalogModel.SETTINGS
                           if settings_.get(name) not in (None, ""))
    if overridden & set(PRICES) or getattr(settings, "CHATSITE_CURRENCY", "USD") != (
            model_defaults.CURRENCY):
        defaults = replace(defaults, **dict.fromkeys(PRICES))
    values = {}
    for field in fields(ModelSpec):
        name = field.name
        if name in ("model", "offered", "overridden", "display_name", "first_token_timeout"):
            continue
        values[name] = settings_[name] if name in overridden else getattr(defaults, name)
    return ModelSpec(
        model=model, display_name=settings_.get("display_name") or model, offered=offered,
        first_token_timeout=(float(settings_["first_token_timeout"])
                             if "first_token_timeout" in overridden
                             else _first_token_timeout(defaults.first_token_timeout)),
        overridden=overridden, **values,
    )


def offered_ids(key: ApiKey) -> list[str]:
    """Return the models ``key`` may offer, in order: those its provider listed, or -- while it
    has never listed any (or listed none) -- its default model and the site's fallbacks."""
    if key.listed_models:
        return list(key.listed_models)
    return list(dict.fromkeys(
        [m for m in [key.default_model] if m] + list(settings.CHATSITE_FALLBACK_MODELS)))


def spec_for(api_key: ApiKey | int, model: str) -> ModelSpec:
    """Return what ``model`` is with ``api_key`` (a key or its id): one query, kept until keys
    or catalogs change (``access.py``)."""
    key_id = api_key.pk if isinstance(api_key, ApiKey) else api_key
    return access.remembered("spec_for", (key_id, model), lambda: _spec_for(key_id, model))


def _spec_for(key_id: int, model: str) -> ModelSpec:
    found = (
        ApiKey.objects.filter(pk=key_id)
        .annotate(entry=FilteredRelation("catalog", condition=Q(catalog__model=model)))
        .values("listed_models", "default_model", "entry__offered",
                *(f"entry__{name}" for name in CatalogModel.SETTINGS))
        .first()
    )
    if found is None:  # the key is gone: the defaults, offered to nobody
        return merge(model, {}, offered=False)
    listing = ApiKey(pk=key_id, listed_models=found["listed_models"],
                     default_model=found["default_model"])
    settings_ = {name: found[f"entry__{name}"] for name in CatalogModel.SETTINGS}
    offered = model in offered_ids(listing) and found["entry__offered"] is not False
    return merge(model, settings_, offered=offered)


def specs_for(key: ApiKey, rows: list[CatalogModel] | None = None) -> dict[str, ModelSpec]:
    """Return the spec of every model ``key`` may offer (offered or not), in its order; with
    ``rows``, from those catalog rows instead of a query."""
    if rows is None:
        rows = list(CatalogModel.objects.filter(api_key=key))
    by_model = {row.model: row for row in rows}
    specs = {}
    for model in offered_ids(key):
        row = by_model.get(model)
        settings_ = {name: getattr(row, name) for name in CatalogModel.SETTINGS} if row else {}
        specs[model] = merge(model, settings_, offered=row is None or row.offered)
    return specs


# -- refreshing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """What a refresh found: the chat models listed, and how the catalog changed."""

    models: list[str]
    added: list[str]
    removed: list[str]
    kept: list[str]  # no longer listed, kept for the admin's settings


def _holds_settings(row: CatalogModel, with_teams: set[int]) -> bool:
    return (not row.offered or row.pk in with_teams
            or any(getattr(row, name) not in (None, "") for name in CatalogModel.SETTINGS))


@transaction.atomic
def _sync(key: ApiKey, models: list[str]) -> Listing:
    """Give every listed model a row, and drop the rows of models no longer listed that hold
    none of the admin's settings."""
    rows = {row.model: row for row in CatalogModel.objects.filter(api_key=key)}
    narrowed = any(not row.offered for row in rows.values())
    added = [model for model in models if model not in rows]
    CatalogModel.objects.bulk_create(
        [CatalogModel(api_key=key, model=model, offered=not narrowed) for model in added],
        ignore_conflicts=True,  # a refresh running at the same time added it first
    )
    gone = [row for model, row in rows.items() if model not in set(models)]
    with_teams = set(CatalogModel.teams.through.objects.filter(
        catalogmodel__in=gone).values_list("catalogmodel_id", flat=True)) if gone else set()
    removed = [row for row in gone if not _holds_settings(row, with_teams)]
    CatalogModel.objects.filter(pk__in=[row.pk for row in removed]).delete()
    return Listing(models=models, added=added, removed=[row.model for row in removed],
                   kept=[row.model for row in gone if row not in removed])


def refresh(key: ApiKey) -> Listing:
    """Fetch the chat models ``key`` lists and bring its catalog up to date; raise
    ``UpstreamError`` or ``DecryptionError`` (and remember the failure, so it is not tried
    again at once)."""
    now = timezone.now()
    try:
        models = [m for m in upstream.list_models(crypto.credentials_for(key)) if is_chat_model(m)]
    except (upstream.UpstreamError, crypto.DecryptionError):
        ApiKey.objects.filter(pk=key.pk).update(models_listed_at=now)
        key.models_listed_at = now
        raise
    with transaction.atomic():
        listed = ApiKey.objects.filter(pk=key.pk).values_list("listed_models", flat=True).first()
        # update(), not save(): the list is no change of the key's own (no audit, no updated_at).
        ApiKey.objects.filter(pk=key.pk).update(listed_models=models, models_listed_at=now)
        key.listed_models, key.models_listed_at = models, now
        listing = _sync(key, models)
        if listed != models or listing.added or listing.removed:
            access.changed()  # these bulk writes send no signal
        return listing


def refresh_quietly(key: ApiKey) -> None:
    """Refresh, logging a failure instead of raising it (saving a key, the watchdog)."""
    try:
        refresh(key)
    except (upstream.UpstreamError, crypto.DecryptionError) as exc:
        logger.warning("Listing models for API key %r (id %s) failed: %s", key.name, key.pk, exc)


def refresh_due() -> int:
    """Refresh the lists of active keys that are out of date; return how many were tried."""
    now = timezone.now()
    fresh = now - timedelta(seconds=settings.CHATSITE_MODELS_CACHE_SECONDS)
    due = ApiKey.objects.active().filter(models_listed_at__isnull=True) | (
        ApiKey.objects.active().filter(listed_models__isnull=False, models_listed_at__lt=fresh)
    ) | ApiKey.objects.active().filter(listed_models__isnull=True,
                                       models_listed_at__lt=now - RETRY_AFTER_FAILURE)
    keys = list(due.distinct())
    for key in keys:
        refresh_quietly(key)
    return len(keys)
