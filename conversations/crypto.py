"""Key material: the only module that sees upstream API keys in clear.

Secrets are encrypted with Fernet under the keys in ``settings.CHATSITE_ENCRYPTION_KEYS``: the
first key encrypts, every key decrypts (``MultiFernet``), so a new key can be put first and the
stored secrets re-encrypted while the old one still reads them. The encryption keys are
independent of ``SECRET_KEY``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

# Anything that looks like an API key or a bearer token: OpenAI's sk-…, sk-proj-…, and long
# opaque tokens after "Bearer" (in any case, as HTTP auth schemes are). Used to mask text that
# came from outside before it is kept.
KEY_PATTERN = re.compile(
    r"(?:\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{8,}|(?i:(?<=bearer ))[A-Za-z0-9._\-~+/]{12,}=*)"
)


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured encryption key."""


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("CHATSITE_ENCRYPTION_KEYS is empty: no key to encrypt with.")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "CHATSITE_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes; make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
        ) from exc


def _fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.CHATSITE_ENCRYPTION_KEYS))


@sensitive_variables()
def encrypt(plaintext: str) -> str:
    """Return ``plaintext`` encrypted with the first configured encryption key."""
    return _fernet().encrypt(plaintext.encode()).decode()


@sensitive_variables()
def decrypt(token: str) -> str:
    """Return the plaintext of ``token``; raise ``DecryptionError`` if no key opens it."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError, TypeError) as exc:
        raise DecryptionError(
            "A stored API key cannot be decrypted with CHATSITE_ENCRYPTION_KEYS: the encryption "
            "key was changed or lost. Restore it, or enter the API key again."
        ) from exc


def rotate(token: str) -> str:
    """Return ``token`` re-encrypted under the first configured key."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("A stored API key cannot be decrypted for rotation.") from exc


def mask(secret: str) -> str:
    """Return a display form of ``secret`` that shows only its kind and last four characters."""
    secret = secret.strip()
    if len(secret) < 12:
        return "…" + "•" * 4
    prefix = secret[:3] if secret[:3] in {"sk-", "rk-", "pk-"} else ""
    return f"{prefix}…{secret[-4:]}"


def mask_text(text: str) -> str:
    """Return ``text`` with every key-shaped substring masked."""
    if not text:
        return text
    return KEY_PATTERN.sub(lambda match: mask(match.group(0)), text)


@sensitive_variables()
def set_secret(api_key, secret: str) -> None:
    """Store ``secret`` on ``api_key`` (unsaved), encrypted, with its masked hint."""
    secret = secret.strip()
    if not secret:
        raise ValueError("An API key cannot be empty.")
    api_key.secret_encrypted = encrypt(secret)
    api_key.secret_hint = mask(secret)


@sensitive_variables()
def api_key_secret(api_key) -> str:
    """Return the clear secret of ``api_key``, for the upstream client only."""
    return decrypt(api_key.secret_encrypted)
