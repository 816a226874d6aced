"""Key material: the only module that sees upstream API keys in clear.

``credentials_for(key)`` is the one function that decrypts a stored key: everything that calls
an upstream gets its ``Credentials`` from it. Every secret it hands out is remembered for this
process's log filter, and ``Credentials.scrub`` masks that secret in anything the upstream sends
back, whatever form it comes back in (escaped, percent-encoded, half-masked, cut in pieces).

Secrets are encrypted with Fernet under the keys in ``settings.CHATSITE_ENCRYPTION_KEYS``: the
first key encrypts, every key decrypts (``MultiFernet``), so a new key can be put first and the
stored secrets re-encrypted while the old one still reads them. The encryption keys are
independent of ``SECRET_KEY``.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

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
def _decrypt(token: str) -> str:
    """Return the plaintext of ``token``; raise ``DecryptionError`` if no key opens it.

    Called by ``credentials_for`` only."""
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
    remember(secret)


# -- Handing a key to the upstream client -----------------------------------------------------

USER_AGENT = "chatsite/1.0"


@dataclass(frozen=True)
class Credentials:
    """What an upstream call needs of an ``ApiKey``: never logged, never rendered."""

    base_url: str
    secret: str = field(repr=False)
    organization: str = ""
    project: str = ""
    key_name: str = ""
    _scrubber: Scrubber = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_scrubber", Scrubber([self.secret]))
        remember(self.secret)

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.secret}", "User-Agent": USER_AGENT}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def scrub(self, text: str) -> str:
        """Return ``text`` (from the upstream) with this secret masked in any form."""
        return self._scrubber.scrub(text)

    def piece_scrubber(self) -> PieceScrubber:
        """Return a scrubber for a text that arrives in pieces (a streamed reply)."""
        return PieceScrubber(self._scrubber)


@sensitive_variables()
def credentials_for(api_key) -> Credentials:
    """Return what calling the upstream with ``api_key`` needs, its secret decrypted.

    The only place a stored secret is decrypted. Raise ``DecryptionError`` if no configured
    encryption key opens it."""
    return Credentials(
        base_url=api_key.base_url, secret=_decrypt(api_key.secret_encrypted),
        organization=api_key.organization, project=api_key.project, key_name=api_key.name,
    )


# -- Scrubbing secrets out of text from outside ------------------------------------------------

# Prefixes that say which kind of key it is and are the same for every key of that kind: they
# may stay visible. Longest first. Anything after them is secret, whatever its shape.
PUBLIC_PREFIXES = tuple(sorted(
    ["sk-proj-", "sk-svcacct-", "sk-admin-", "sk-ant-api03-", "sk-ant-", "sk-or-v1-", "sk-",
     "rk-", "pk-", "gsk_", "xai-", "hf_", "nvapi-", "pplx-"],
    key=len, reverse=True,
))
# A run of this many characters of a secret's private part, anywhere, is masked.
RUN = 8
HIDDEN = "••••"

_ESCAPES = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})|\\(/)")


def public_prefix(secret: str) -> str:
    return next((prefix for prefix in PUBLIC_PREFIXES if secret.startswith(prefix)), "")


def _unescape_once(text: str) -> str:
    if "\\" in text:
        text = _ESCAPES.sub(
            lambda m: chr(int(m.group(1) or m.group(2), 16)) if m.group(3) is None else "/", text
        )
        # Pairs of escaped surrogates become the character they stand for.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if "%" in text:
        text = unquote(text, errors="replace")
    if "&" in text:
        text = html.unescape(text)
    return text


def decode_escapes(text: str) -> str:
    """Return ``text`` with JSON/JavaScript escapes, percent-encoding and HTML character
    references decoded, repeatedly (a value escaped twice is decoded twice)."""
    for _attempt in range(4):
        decoded = _unescape_once(text)
        if decoded == text:
            break
        text = decoded
    return text


class Scrubber:
    """Masks every run of ``RUN`` or more characters of the given secrets' private parts."""

    def __init__(self, secrets: list[str]) -> None:
        self._grams: set[str] = set()
        self._shorts: set[str] = set()  # private parts too short to have a run
        for secret in secrets:
            private = secret[len(public_prefix(secret)):]
            if len(private) >= RUN:
                self._grams.update(private[i:i + RUN] for i in range(len(private) - RUN + 1))
            elif private:
                self._shorts.add(private)
        # A run of a secret is made of the secrets' characters only, so it lies inside a stretch
        # of RUN or more of them: only those stretches are looked at, not every position.
        alphabet = "".join(sorted({char for gram in self._grams for char in gram}))
        self._stretches = re.compile(f"[{re.escape(alphabet)}]{{{RUN},}}") if alphabet else None

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        grams = self._grams
        if self._stretches is not None and len(text) >= RUN:
            for stretch in self._stretches.finditer(text):
                for i in range(stretch.start(), stretch.end() - RUN + 1):
                    if text[i:i + RUN] in grams:
                        if spans and spans[-1][1] >= i:
                            spans[-1] = (spans[-1][0], i + RUN)
                        else:
                            spans.append((i, i + RUN))
        for short in self._shorts:
            start = text.find(short)
            while start >= 0:
                spans.append((start, start + len(short)))
                start = text.find(short, start + 1)
        return sorted(spans)

    def _mask(self, text: str) -> str | None:
        spans = self._spans(text)
        if not spans:
            return None
        out, position = [], 0
        for start, end in spans:
            if end <= position:
                continue
            out.append(text[position:max(start, position)])
            out.append(HIDDEN)
            position = end
        out.append(text[position:])
        return "".join(out)

    def scrub(self, text: str) -> str:
        """Return ``text`` with every run of a secret masked, escaped forms included."""
        if not text or not (self._grams or self._shorts):
            return text
        masked = self._mask(text)
        decoded = decode_escapes(text if masked is None else masked)
        if decoded != (text if masked is None else masked):
            masked_decoded = self._mask(decoded)
            if masked_decoded is not None:
                return masked_decoded
        return text if masked is None else masked


class PieceScrubber:
    """Scrubs a text that arrives in pieces, such as a streamed reply, piece by piece.

    Each piece is checked together with the last ``RUN - 1`` characters before it, so a run
    split across pieces is caught too; its part in earlier pieces, shorter than a run, has gone
    out already (as anywhere, fewer than ``RUN`` characters are not a leak). Pieces are never
    held back: the reply streams as it arrives.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._tail = ""

    def feed(self, piece: str) -> str:
        window = self._tail + piece
        self._tail = window[-(RUN - 1):]
        spans = self._scrubber._spans(window)
        if not spans:
            return piece
        offset = len(window) - len(piece)
        hidden = [False] * len(piece)
        for start, end in spans:
            for index in range(max(start - offset, 0), max(end - offset, 0)):
                hidden[index] = True
        out, previous = [], False
        for char, is_hidden in zip(piece, hidden, strict=True):
            if not is_hidden:
                out.append(char)
            elif not previous:
                out.append(HIDDEN)
            previous = is_hidden
        return "".join(out)


# Every secret this process has handed out, for the log filter: it masks a key of any shape.
_remembered: set[str] = set()
_remembered_lock = threading.Lock()
_log_scrubber: Scrubber | None = None


def remember(secret: str) -> None:
    """Let the log filter know ``secret`` (called for every secret decrypted or stored)."""
    global _log_scrubber
    if not secret or secret in _remembered:
        return
    with _remembered_lock:
        _remembered.add(secret)
        _log_scrubber = None


def scrub_known_secrets(text: str) -> str:
    """Return ``text`` with every secret this process has seen masked, and anything
    key-shaped too: what the log filter applies to every record."""
    global _log_scrubber
    if not text:
        return text
    scrubber = _log_scrubber
    if scrubber is None:
        with _remembered_lock:
            scrubber = _log_scrubber = Scrubber(sorted(_remembered))
    return mask_text(scrubber.scrub(text))
