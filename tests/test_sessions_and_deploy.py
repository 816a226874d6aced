"""Logins are throttled, sessions rotate at login, and production settings pass Django's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


def test_repeated_wrong_passwords_lock_the_login_with_a_clear_message(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 429
    locked = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_lockout_is_per_client_address(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"},
                    REMOTE_ADDR="10.0.0.1")
    other = Client(REMOTE_ADDR="10.0.0.2")
    response = other.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in other.session


def test_the_session_key_changes_at_login(client, user):
    client.get("/accounts/login/")
    client.session.save()
    before = client.session.session_key
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.session.session_key != before


def production_env(tmp_path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DJANGO_", "CHATSITE_")) and name != "DATABASE_URL"}
    env.update(
        CHATSITE_PRODUCTION="true",
        DJANGO_SECRET_KEY="p" + Fernet.generate_key().decode() + "x" * 20,
        DJANGO_ALLOWED_HOSTS="chat.example.com",
        CHATSITE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CHATSITE_DATA_DIR=str(tmp_path),
        DJANGO_BEHIND_TLS_PROXY="true",
        CHATSITE_TRUSTED_PROXIES="127.0.0.1",
    )
    return env


def test_production_settings_pass_check_deploy_without_a_single_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=production_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookies_are_secure_and_https_is_enforced(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS > 0, s.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**production_env(tmp_path), "DJANGO_SETTINGS_MODULE": "chatsite.settings"},
    )
    assert result.stdout.split() == ["True", "True", "True", "True", "False"], result.stderr
