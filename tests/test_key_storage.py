"""API keys at rest: encrypted in the database, rotatable, masked for display and in logs.

Secrets here are fresh random key-shaped strings, registered in ``conftest.SECRETS`` so the secret
guard also fails a test if one of them reaches a response or a log record.
"""

from __future__ import annotations

import io
import logging
import secrets
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from conftest import SECRETS, wait_for
from conversations import crypto, services
from conversations.logging import MaskSecretsFilter
from conversations.models import ApiKey, Message


def decrypt(token: str) -> str:
    """Decrypt ``token`` the one way the site does: through the credentials of a key."""
    return crypto.credentials_for(ApiKey(secret_encrypted=token, name="t")).secret


def new_secret(prefix: str = "sk-proj-") -> str:
    """Return a fresh key-shaped secret the secret guard watches for."""
    secret = prefix + secrets.token_hex(24)
    SECRETS.add(secret)
    return secret


def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def keys_added_three_ways(client, admin_user, monkeypatch) -> list[tuple[str, str, str]]:
    """Add a key through the service, the admin add form and the command; return
    (secret, name, hint) for each."""
    added = []

    secret, name = new_secret(), f"service-{uuid.uuid4().hex}"
    services.api_key_create(name=name, secret=secret, base_url="http://127.0.0.1:9/v1")
    added.append((secret, name))

    secret, name = new_secret(), f"admin-{uuid.uuid4().hex}"
    client.force_login(admin_user)
    response = client.post("/admin/conversations/apikey/add/", {
        "name": name, "secret": secret, "base_url": "http://127.0.0.1:9/v1",
        "organization": "", "project": "", "default_model": "", "is_active": "on",
        "_save": "Save",
    })
    assert response.status_code == 302, response.content.decode()
    added.append((secret, name))

    secret, name = new_secret(), f"command-{uuid.uuid4().hex}"
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    call_command("apikey", "add", "--name", name, "--base-url", "http://127.0.0.1:9/v1",
                 stdout=io.StringIO())
    added.append((secret, name))

    assert ApiKey.objects.filter(name__in=[name for _secret, name in added]).count() == 3
    return [(secret, name, crypto.mask(secret)) for secret, name in added]


# -- At rest ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sqlite_database_files_hold_no_secret_in_clear(keys_added_three_ways):
    if connection.vendor != "sqlite":
        pytest.skip("reads the SQLite database file; this run uses another database engine")
    database = Path(connection.settings_dict["NAME"])
    files = [path for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
             if path.exists()]
    assert database in files
    # Read in another process: closing a file descriptor of a database file that this process
    # has open drops all of this process's POSIX locks on it, which corrupts SQLite's locking
    # (sqlite.org/howtocorrupt.html, 2.2) for every later test.
    raw = subprocess.run(["cat", *map(str, files)], capture_output=True, check=True).stdout

    for _secret, name, hint in keys_added_three_ways:
        assert name.encode() in raw and hint.encode() in raw, "the scan must find what was stored"
    leaked = [name for secret, name, _hint in keys_added_three_ways if secret.encode() in raw]
    assert leaked == []


@pytest.mark.django_db(transaction=True)
def test_postgresql_rows_hold_no_secret_in_clear(keys_added_three_ways):
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL rows; this run uses another database engine")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM conversations_apikey")
        key_rows = ["\x1f".join(str(value) for value in row) for row in cursor.fetchall()]
        everything = []
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            everything += ["\x1f".join(str(value) for value in row) for row in cursor.fetchall()]

    for _secret, name, hint in keys_added_three_ways:
        assert any(name in row and hint in row for row in key_rows), "the scan must find it"
    leaked = [name for secret, name, _hint in keys_added_three_ways
              if any(secret in row for row in key_rows + everything)]
    assert leaked == []


@pytest.mark.django_db
def test_stored_secret_decrypts_to_what_was_entered():
    secret = new_secret()
    key = services.api_key_create(name="roundtrip", secret=f"  {secret}\n")

    key.refresh_from_db()
    assert secret not in key.secret_encrypted
    assert crypto.credentials_for(key).secret == secret
    assert key.secret_hint == crypto.mask(secret)


@pytest.mark.django_db
def test_same_secret_stored_twice_gives_different_ciphertexts():
    secret = new_secret()
    first = services.api_key_create(name="first", secret=secret)
    second = services.api_key_create(name="second", secret=secret)

    assert first.secret_encrypted != second.secret_encrypted
    assert crypto.credentials_for(first).secret == crypto.credentials_for(second).secret == secret


@pytest.mark.django_db
def test_changing_secret_key_does_not_break_decryption(settings):
    secret = new_secret()
    key = services.api_key_create(name="independent", secret=secret)

    settings.SECRET_KEY = "a-completely-different-django-secret-key-" + secrets.token_hex(16)

    assert crypto.credentials_for(ApiKey.objects.get(pk=key.pk)).secret == secret


# -- Rotation ----------------------------------------------------------------------------------


def test_old_encryption_key_still_decrypts_after_a_new_one_is_put_first(settings):
    old, new, secret = fernet_key(), fernet_key(), new_secret()
    settings.CHATSITE_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt(secret)

    settings.CHATSITE_ENCRYPTION_KEYS = [new, old]

    assert decrypt(token) == secret


def test_rotate_re_encrypts_under_the_new_key_alone(settings):
    old, new, secret = fernet_key(), fernet_key(), new_secret()
    settings.CHATSITE_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt(secret)

    settings.CHATSITE_ENCRYPTION_KEYS = [new, old]
    rotated = crypto.rotate(token)
    settings.CHATSITE_ENCRYPTION_KEYS = [new]

    assert decrypt(rotated) == secret
    with pytest.raises(crypto.DecryptionError):
        decrypt(token)


def test_secret_under_a_key_no_longer_configured_fails_loudly(settings):
    settings.CHATSITE_ENCRYPTION_KEYS = [fernet_key()]
    token = crypto.encrypt(new_secret())
    settings.CHATSITE_ENCRYPTION_KEYS = [fernet_key()]

    with pytest.raises(crypto.DecryptionError, match="CHATSITE_ENCRYPTION_KEYS"):
        decrypt(token)
    with pytest.raises(crypto.DecryptionError):
        crypto.rotate(token)


def test_garbage_ciphertext_is_a_decryption_error(settings):
    settings.CHATSITE_ENCRYPTION_KEYS = [fernet_key()]

    for token in ["", "not a token", "gAAAAA", "é"]:
        with pytest.raises(crypto.DecryptionError):
            decrypt(token)


@pytest.mark.parametrize("keys", [["not-a-fernet-key"], [fernet_key(), "short"], []])
def test_malformed_or_missing_encryption_key_is_improperly_configured(settings, keys):
    settings.CHATSITE_ENCRYPTION_KEYS = keys

    with pytest.raises(ImproperlyConfigured, match="CHATSITE_ENCRYPTION_KEYS"):
        crypto.encrypt(new_secret())
    with pytest.raises(ImproperlyConfigured, match="CHATSITE_ENCRYPTION_KEYS"):
        decrypt("gAAAAA")


# -- Masking -----------------------------------------------------------------------------------


def test_mask_shows_only_the_kind_and_last_four_characters():
    assert crypto.mask("sk-abcdefghijklmnopqrstabcd") == "sk-…abcd"
    assert crypto.mask("sk-proj-AbCdEfGhIjKlMnOpQrSt_wxyz") == "sk-…wxyz"
    assert crypto.mask("  opaque-token-without-prefix-9876\n") == "…9876"


def test_mask_of_a_short_secret_reveals_nothing():
    shorts = ["sk-abc", "sk-12345678", "abcdefghijk", "x", ""]

    assert {crypto.mask(secret) for secret in shorts} == {"…••••"}


def test_mask_text_masks_keys_and_bearer_tokens_in_free_text():
    plain, project = new_secret("sk-"), new_secret("sk-proj-")
    bearer = "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(24)
    SECRETS.add(bearer)
    text = (f"Incorrect API key provided: {plain}. Also tried {project}; "
            f"sent header Authorization: Bearer {bearer} to the server.")

    masked = crypto.mask_text(text)

    for secret in (plain, project, bearer):
        assert secret not in masked
    assert f"provided: {crypto.mask(plain)}." in masked
    assert f"tried {crypto.mask(project)};" in masked
    assert f"Bearer …{bearer[-4:]} to the server." in masked
    assert crypto.mask_text("Nothing secret, sk-ish words stay.") == (
        "Nothing secret, sk-ish words stay."
    )


def test_mask_text_masks_bearer_tokens_whatever_the_case_of_the_scheme():
    token = secrets.token_urlsafe(24)
    SECRETS.add(token)

    for scheme in ("Bearer", "bearer", "BEARER"):
        masked = crypto.mask_text(f"authorization: {scheme} {token} rejected")
        assert masked == f"authorization: {scheme} …{token[-4:]} rejected"


def test_log_filter_masks_secrets_in_message_and_exception_text():
    secret = new_secret()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecretsFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.key_storage.masking")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"upstream rejected {secret}")
        except RuntimeError:
            logger.exception("Calling upstream with key %s failed", secret)
    finally:
        logger.removeHandler(handler)

    output = stream.getvalue()
    assert secret not in output
    assert f"Calling upstream with key {crypto.mask(secret)} failed" in output
    assert f"RuntimeError: upstream rejected {crypto.mask(secret)}" in output
    assert "Traceback" in output


# -- A key that cannot be decrypted ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_undecryptable_key_fails_the_reply_without_calling_upstream(
    alice, make_api_key, fake_upstream
):
    key = make_api_key(default_model="gpt-4o-mini")
    fake_upstream.reset()  # forget the model list fetched when the key was stored
    other_secret = new_secret()
    other_token = Fernet(fernet_key().encode()).encrypt(other_secret.encode()).decode()
    ApiKey.objects.filter(pk=key.pk).update(secret_encrypted=other_token)

    response = alice.post("/c/new/messages", {"content": "hi", "model": f"{key.pk}:gpt-4o-mini"})
    assert response.status_code == 302

    reply = wait_for(lambda: Message.objects.filter(
        api_key=key, role=Message.Role.ASSISTANT, status=Message.Status.ERROR).first())
    assert reply.error_type == "decryption"
    assert "cannot be unlocked" in reply.error_message
    page = alice.get(f"/c/{reply.conversation_id}/")
    assert "cannot be unlocked" in page.content.decode()
    assert fake_upstream.chat_requests == []
    assert fake_upstream.bearer_tokens() == set()  # not the ciphertext, not anything
