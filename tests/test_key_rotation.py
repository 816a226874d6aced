"""Encryption keys rotate: a new key goes first, stored secrets are re-encrypted, the old key goes."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from conversations import crypto
from conversations.models import ApiKey

pytestmark = pytest.mark.django_db


def test_rotation_reencrypts_every_key_so_the_old_encryption_key_can_go(settings, make_api_key):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHATSITE_ENCRYPTION_KEYS = [old]
    first = make_api_key(secret="sk-rotate-first-0123456789abcdef")
    second = make_api_key(secret="sk-rotate-second-0123456789abcdef")

    settings.CHATSITE_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_key")

    settings.CHATSITE_ENCRYPTION_KEYS = [new]
    assert crypto.credentials_for(ApiKey.objects.get(pk=first.pk)).secret == "sk-rotate-first-0123456789abcdef"
    assert crypto.credentials_for(ApiKey.objects.get(pk=second.pk)).secret == "sk-rotate-second-0123456789abcdef"


def test_rotation_without_the_old_key_changes_nothing_and_says_why(settings, make_api_key):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHATSITE_ENCRYPTION_KEYS = [old]
    key = make_api_key(secret="sk-rotate-kept-0123456789abcdef")
    stored = ApiKey.objects.get(pk=key.pk).secret_encrypted

    settings.CHATSITE_ENCRYPTION_KEYS = [new]
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("rotate_encryption_key")
    assert ApiKey.objects.get(pk=key.pk).secret_encrypted == stored
