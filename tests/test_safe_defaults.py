"""Safe by default: what `scripts/run` starts without any setting is safe to put in front of a
team — DEBUG off, owner-only data, plain http on 127.0.0.1 still working — and production mode
(HTTPS, HSTS, required settings) stays a choice of its own."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from tests.helpers import clean_env

pytestmark = pytest.mark.slow  # every test here starts a Python process

SHOW = ("import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_PRELOAD)")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=django_settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_default_has_debug_off_and_plain_http(tmp_path):
    shown = run(clean_env(tmp_path / "var"), "-c", SHOW)

    assert shown.returncode == 0, shown.stderr
    # DEBUG off; no Secure cookies, no HTTPS redirect, no HSTS: login works on http://127.0.0.1.
    assert shown.stdout.split() == ["False", "False", "False", "False", "0", "False"]


def test_debug_is_only_on_when_asked_for_and_never_with_production(tmp_path):
    asked = run(clean_env(tmp_path / "a", DJANGO_DEBUG="true"), "-c", SHOW)
    both = run(clean_env(tmp_path / "b", DJANGO_DEBUG="true", CHATSITE_PRODUCTION="true"),
               "-c", SHOW)

    assert asked.stdout.split()[0] == "True"
    assert both.returncode != 0 and "DJANGO_DEBUG=true" in both.stderr


def test_hsts_preload_is_off_in_production_unless_the_site_commits_to_it(tmp_path):
    production = {"CHATSITE_PRODUCTION": "true", "DJANGO_SECRET_KEY": "x" * 60,
                  "DJANGO_ALLOWED_HOSTS": "chat.example.com",
                  "CHATSITE_ENCRYPTION_KEYS": "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg="}
    default = run(clean_env(tmp_path / "a", **production), "-c", SHOW)
    preload = run(clean_env(tmp_path / "b", DJANGO_HSTS_PRELOAD="true", **production), "-c", SHOW)

    assert default.stdout.split() == ["False", "True", "True", "True", "31536000", "False"]
    assert preload.stdout.split()[-1] == "True"


def test_the_data_directory_and_the_database_are_readable_by_their_owner_only(tmp_path):
    data = tmp_path / "var"
    migrated = run(clean_env(data), "manage.py", "migrate", "--noinput")

    assert migrated.returncode == 0, migrated.stderr
    assert mode(data) == 0o700
    files = {path.name: mode(path) for path in data.iterdir() if path.is_file()}
    assert "db.sqlite3" in files and "secret_key" in files and "encryption.key" in files
    assert {name: bits for name, bits in files.items() if bits != 0o600} == {}


def test_a_database_file_left_readable_by_others_is_made_private(tmp_path):
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    (data / "db.sqlite3").touch(mode=0o644)

    assert run(clean_env(data), "-c", SHOW).returncode == 0
    assert mode(data / "db.sqlite3") == 0o600
