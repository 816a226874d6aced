"""The model catalog: which chat models each key offers, kept in the database.

Pages and the message POST read it (``selectors.models_for_key``) and never wait on a provider's
network. It is refreshed outside any member's request: when a key is created or sent somewhere
new (the service and the admin), by the admin's "Refresh models", and by the watchdog once a
list is older than ``CHATSITE_MODELS_CACHE_SECONDS`` (a failed refresh is tried again after a
minute).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from . import crypto, upstream
from .models import ApiKey

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = timedelta(minutes=1)

# Model ids a chat cannot use (embeddings, speech, images, moderation, legacy completions).
NON_CHAT_MARKERS = (
    "embedding", "whisper", "tts", "dall-e", "moderation", "davinci", "babbage",
    "transcribe", "image", "search",
)


def is_chat_model(model_id: str) -> bool:
    lowered = model_id.lower()
    return not any(marker in lowered for marker in NON_CHAT_MARKERS)


def refresh(key: ApiKey) -> list[str]:
    """Fetch the chat models ``key`` lists and store them; raise ``UpstreamError`` or
    ``DecryptionError`` (and remember the failure, so it is not tried again at once)."""
    now = timezone.now()
    try:
        models = [m for m in upstream.list_models(crypto.credentials_for(key)) if is_chat_model(m)]
    except (upstream.UpstreamError, crypto.DecryptionError):
        ApiKey.objects.filter(pk=key.pk).update(models_listed_at=now)
        key.models_listed_at = now
        raise
    # update(), not save(): the list is no change of the key's own (no audit, no updated_at).
    ApiKey.objects.filter(pk=key.pk).update(listed_models=models, models_listed_at=now)
    key.listed_models, key.models_listed_at = models, now
    return models


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
