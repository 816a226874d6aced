"""Managing upstream API keys: the admin, the ``apikey`` command, production start-up, health.

The secret is write-only everywhere: typed once (admin form, or standard input of the command),
then only ever shown as its masked hint.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from conftest import SECRETS
from conversations import crypto, services
from conversations.models import ApiKey, AuditEvent, Conversation, Message
from tests.helpers import clean_env

ADD_URL = "/admin/conversations/apikey/add/"
CHANGELIST_URL = "/admin/conversations/apikey/"


def new_secret(prefix: str = "sk-proj-") -> str:
    """Return a fresh key-shaped secret the secret guard watches for."""
    secret = prefix + secrets.token_hex(24)
    SECRETS.add(secret)
    return secret


def field_errors(response, name: str) -> list[str]:
    """The errors the admin page shows under field ``name``."""
    shown = re.search(rf'<ul class="errorlist" id="id_{name}_error">(.*?)</ul>',
                      response.content.decode(), re.S)
    return re.findall(r"<li>(.*?)</li>", shown.group(1)) if shown else []


def key_form(**fields) -> dict:
    return {"name": "Team key", "secret": "", "base_url": "http://127.0.0.1:9/v1",
            "organization": "org-team", "project": "proj_chat", "default_model": "gpt-4o-mini",
            "is_active": "on", "_save": "Save", **fields}


def change_url(key: ApiKey) -> str:
    return f"/admin/conversations/apikey/{key.pk}/change/"


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


# -- The admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_page_renders_the_secret_as_an_empty_password_input(admin):
    page = admin.get(ADD_URL).content.decode()

    field = re.search(r'<input[^>]*name="secret"[^>]*>', page).group(0)
    assert 'type="password"' in field
    assert "value=" not in field
    # Not "off", which browsers ignore on password fields: the admin's own saved login password
    # would be filled in and, saved, replace the API key.
    assert 'autocomplete="new-password"' in field


@pytest.mark.django_db
def test_added_key_shows_only_its_hint_on_change_page_and_changelist(admin):
    secret = new_secret()

    response = admin.post(ADD_URL, key_form(secret=secret))

    assert response.status_code == 302
    key = ApiKey.objects.get(name="Team key")
    assert crypto.credentials_for(key).secret == secret
    assert (key.organization, key.project, key.base_url) == (
        "org-team", "proj_chat", "http://127.0.0.1:9/v1"
    )
    hint = f"sk-…{secret[-4:]}"
    assert key.secret_hint == hint
    for url in (change_url(key), CHANGELIST_URL):
        page = admin.get(url).content.decode()
        assert hint in page
        assert secret not in page
        assert key.secret_encrypted not in page
    field = re.search(r'<input[^>]*name="secret"[^>]*>', admin.get(change_url(key)).content.decode())
    assert "value=" not in field.group(0)


@pytest.mark.django_db
def test_rejected_add_form_does_not_render_the_secret_back(admin):
    secret = new_secret()

    response = admin.post(ADD_URL, key_form(secret=secret, base_url="ftp://example.com/v1"))

    assert response.status_code == 200
    assert secret not in response.content.decode()
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_saving_change_form_with_empty_secret_keeps_the_old_one(admin):
    secret = new_secret()
    key = services.api_key_create(name="Team key", secret=secret, base_url="http://127.0.0.1:9/v1",
                                  organization="org-team", project="proj_chat")

    response = admin.post(change_url(key), key_form(secret="", name="Renamed key"))

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "Renamed key"
    assert crypto.credentials_for(key).secret == secret
    assert key.secret_hint == crypto.mask(secret)


@pytest.mark.django_db
def test_entering_a_new_secret_replaces_the_old_one(admin):
    old, new = new_secret(), new_secret()
    key = services.api_key_create(name="Team key", secret=old)

    response = admin.post(change_url(key), key_form(secret=new))

    assert response.status_code == 302
    key.refresh_from_db()
    assert crypto.credentials_for(key).secret == new
    assert key.secret_hint == crypto.mask(new)


@pytest.mark.django_db
def test_new_key_without_a_secret_is_rejected(admin):
    response = admin.post(ADD_URL, key_form(secret=""))

    assert response.status_code == 200
    assert field_errors(response, "secret") == ["Enter the API key."]
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("base_url", ["ftp://example.com/v1", "javascript:alert(1)",
                                      "file:///etc/passwd"])
def test_base_url_must_be_http_or_https(admin, base_url):
    response = admin.post(ADD_URL, key_form(secret=new_secret(), base_url=base_url))

    assert response.status_code == 200
    assert field_errors(response, "base_url")
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_base_url_trailing_slash_is_dropped(admin):
    admin.post(ADD_URL, key_form(secret=new_secret(), base_url="https://llm.example.com/v1/"))

    assert ApiKey.objects.get().base_url == "https://llm.example.com/v1"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/", ADD_URL, CHANGELIST_URL])
def test_member_is_sent_to_the_admin_login(alice, url):
    response = alice.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_staff_without_permissions_cannot_see_keys(client, django_user_model):
    services.api_key_create(name="Team key", secret=new_secret())
    staff = django_user_model.objects.create_user("stafford", is_staff=True)
    client.force_login(staff)

    assert client.get(CHANGELIST_URL).status_code == 403
    assert client.get(ADD_URL).status_code == 403


@pytest.mark.django_db
def test_message_list_names_the_key_and_the_error_of_a_failed_reply(admin, user):
    key = services.api_key_create(name="Billing key", secret=new_secret())
    conversation = Conversation.objects.create(owner=user, api_key=key, model="gpt-4o-mini")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content="hi")
    Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.ERROR,
        api_key=key, model="gpt-4o-mini", error_status=429, error_type="insufficient_quota",
        error_code="insufficient_quota", error_message="The key ran out of credit.",
    )

    page = admin.get("/admin/conversations/message/?status__exact=error").content.decode()

    assert "Billing key" in page
    assert "429" in page
    assert "insufficient_quota" in page


# -- The apikey command --------------------------------------------------------------------------


def run_apikey(monkeypatch, *args: str, stdin: str = "") -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.mark.django_db
def test_command_adds_key_from_stdin_encrypted_and_prints_only_the_mask(monkeypatch):
    secret = new_secret()

    output = run_apikey(
        monkeypatch, "add", "--name", "CLI key", "--organization", "org-x", "--project", "proj_y",
        "--base-url", "http://127.0.0.1:9/v1", stdin=secret + "\n",
    )

    key = ApiKey.objects.get(name="CLI key")
    assert (key.organization, key.project, key.base_url) == (
        "org-x", "proj_y", "http://127.0.0.1:9/v1"
    )
    assert secret not in key.secret_encrypted
    assert crypto.credentials_for(key).secret == secret
    assert crypto.mask(secret) in output
    assert secret not in output


@pytest.mark.django_db
def test_command_lists_keys_masked(monkeypatch):
    first, second = new_secret(), new_secret("sk-")
    services.api_key_create(name="First", secret=first, organization="org-x")
    services.api_key_create(name="Second", secret=second, is_active=False)

    output = run_apikey(monkeypatch, "list")

    assert re.search(rf"First\s+{re.escape(crypto.mask(first))}\s+org-x\s", output)
    assert re.search(rf"Second\s+{re.escape(crypto.mask(second))}\s+-\s.*\sno$", output, re.M)
    assert first not in output and second not in output


@pytest.mark.django_db
@pytest.mark.parametrize("stdin", ["", "\n", "   \n"])
def test_command_refuses_empty_stdin(monkeypatch, stdin):
    with pytest.raises(CommandError, match="No API key"):
        run_apikey(monkeypatch, "add", "--name", "Empty", stdin=stdin)

    assert not ApiKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--secret", "--key"])
def test_command_has_no_option_that_takes_the_secret(monkeypatch, option):
    with pytest.raises((CommandError, SystemExit)):
        run_apikey(monkeypatch, "add", "--name", "Argv", option, "sk-not-a-real-key-0000")
    with pytest.raises(TypeError, match="Unknown option"):
        call_command("apikey", "add", name="Argv", **{option.lstrip("-"): "sk-x"})

    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_command_reports_invalid_fields_without_storing(monkeypatch):
    with pytest.raises(CommandError, match="base_url"):
        run_apikey(monkeypatch, "add", "--name", "Bad", "--base-url", "javascript:alert(1)",
                   stdin=new_secret() + "\n")

    assert not ApiKey.objects.exists()


# -- Processes: the command on a fresh install, production start-up ------------------------------


def manage(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], input=stdin, env=env, cwd=django_settings.BASE_DIR,
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_command_in_a_process_takes_the_secret_on_stdin_only(tmp_path):
    secret = new_secret()
    env = clean_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrated = manage(env, "migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    args = ["apikey", "add", "--name", "Piped", "--organization", "org-x", "--project", "proj_y",
            "--base-url", "http://127.0.0.1:9/v1"]

    added = manage(env, *args, stdin=secret + "\n")
    listed = manage(env, "apikey", "list")

    assert added.returncode == 0, added.stderr
    assert secret not in " ".join(args)
    assert crypto.mask(secret) in added.stdout
    assert crypto.mask(secret) in listed.stdout
    for process in (migrated, added, listed):
        assert secret not in process.stdout + process.stderr
    database = b"".join(path.read_bytes() for path in tmp_path.glob("db.sqlite3*"))
    assert b"Piped" in database
    assert secret.encode() not in database


REQUIRED_IN_PRODUCTION = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "CHATSITE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}


def start_django(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env,
        cwd=django_settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED_IN_PRODUCTION))
def test_production_refuses_to_start_without_a_required_setting(tmp_path, missing):
    present = {name: value for name, value in REQUIRED_IN_PRODUCTION.items() if name != missing}

    started = start_django(clean_env(tmp_path, CHATSITE_PRODUCTION="true", **present))

    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert f"{missing} is required" in started.stderr
    assert not (tmp_path / "secret_key").exists()
    assert not (tmp_path / "encryption.key").exists()


def test_production_starts_with_every_required_setting(tmp_path):
    started = start_django(clean_env(tmp_path, CHATSITE_PRODUCTION="true", **REQUIRED_IN_PRODUCTION))

    assert started.returncode == 0, started.stderr
    assert not (tmp_path / "encryption.key").exists()


# -- Health ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_ok_even_before_the_first_administrator(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- Where a stored key is sent ----------------------------------------------------------------


@pytest.fixture
def key_keeper(client, django_user_model):
    """A staff member who may change keys (not a superuser)."""
    from django.contrib.auth.models import Permission

    keeper = django_user_model.objects.create_user("keeper", password="x", is_staff=True)
    keeper.user_permissions.add(*Permission.objects.filter(
        codename__in=["change_apikey", "view_apikey"]))
    client.force_login(keeper)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("moved", [
    {"base_url": "http://127.0.0.1:9/attacker/v1"},
    {"organization": "org-elsewhere"},
    {"project": "proj_elsewhere"},
])
def test_sending_a_stored_key_elsewhere_needs_its_secret_again(key_keeper, fake_upstream, moved):
    secret = new_secret()
    key = services.api_key_create(name="Team key", secret=secret, base_url="http://127.0.0.1:9/v1",
                                  organization="org-team", project="proj_chat")

    response = key_keeper.post(change_url(key), key_form(**moved))

    assert response.status_code == 200
    assert "needs the secret again" in response.content.decode()
    key.refresh_from_db()
    assert (key.base_url, key.organization, key.project) == (
        "http://127.0.0.1:9/v1", "org-team", "proj_chat")
    assert not AuditEvent.objects.filter(action__startswith="key").exclude(
        action="key created").exists()


@pytest.mark.django_db
def test_with_the_secret_entered_again_the_key_moves_and_the_audit_log_says_where(
    key_keeper, fake_upstream
):
    secret = new_secret()
    key = services.api_key_create(name="Team key", secret=secret, base_url="http://127.0.0.1:9/v1",
                                  organization="org-team", project="proj_chat")

    response = key_keeper.post(change_url(key), key_form(
        secret=secret, base_url=fake_upstream.base_url, project="proj_new"))

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.base_url == fake_upstream.base_url and key.project == "proj_new"
    event = AuditEvent.objects.get(action="key destination changed")
    assert event.actor_name == "keeper"
    assert "http://127.0.0.1:9/v1" in event.details and fake_upstream.base_url in event.details
    assert "proj_new" in event.details and secret not in event.details
