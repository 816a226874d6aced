"""Settings for chatsite, read from environment variables.

Two modes, both with ``DEBUG`` off unless ``DJANGO_DEBUG=true`` asks for it (development only:
Django's debug page shows settings and code to whoever hits an error):

- the embedded default: SQLite in the data directory (created 0700, the database 0600), one
  process, plain http on 127.0.0.1, and the Django secret key and the encryption key kept in
  files created there on first run;
- production (``CHATSITE_PRODUCTION=true``): every required setting must come from the
  environment (a missing one stops start-up with ``ImproperlyConfigured``), cookies are
  ``Secure``, and HTTPS is enforced with HSTS.

Every variable is documented in the README and ``.env.example``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def env_optional_money(name: str) -> Decimal | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise ImproperlyConfigured(f"{name} must be an amount such as 25 or 12.50, not {value!r}.")
    return amount


def env_optional_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return env_int(name, 0) if value else None


def require(name: str, why: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} is required when CHATSITE_PRODUCTION is true ({why}). See .env.example."
        )
    return value


def local_secret(path: Path, make: callable, what: str, warning: str = "") -> str:
    """Return the secret stored at ``path``, creating it (owner-only) on first run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(make() + "\n")
    print(f"chatsite: created {what} in {path} (readable by this user only). {warning}",
          file=sys.stderr)
    return path.read_text().strip()


DEBUG = env_bool("DJANGO_DEBUG", False)
PRODUCTION = env_bool("CHATSITE_PRODUCTION", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG=true shows code and settings on every error page: it is for development "
        "only and cannot be combined with CHATSITE_PRODUCTION=true."
    )
DATA_DIR = Path(os.environ.get("CHATSITE_DATA_DIR", "") or BASE_DIR / "var").resolve()
# Owner-only: it holds the database and the key files.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
(DATA_DIR / "static").mkdir(exist_ok=True)

if not PRODUCTION:
    SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or local_secret(
        DATA_DIR / "secret_key", get_random_secret_key, "the Django secret key"
    )
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or ["localhost", "127.0.0.1", "[::1]"]
    CHATSITE_ENCRYPTION_KEYS = env_list("CHATSITE_ENCRYPTION_KEYS") or [
        local_secret(
            DATA_DIR / "encryption.key",
            lambda: Fernet.generate_key().decode(),
            "the encryption key for stored API keys",
            "BACK IT UP with the database: without it the stored API keys cannot be decrypted.",
        )
    ]
else:
    SECRET_KEY = require("DJANGO_SECRET_KEY", "it signs sessions and CSRF tokens")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or [
        require("DJANGO_ALLOWED_HOSTS", "the host names this site answers to")
    ]
    CHATSITE_ENCRYPTION_KEYS = env_list("CHATSITE_ENCRYPTION_KEYS") or [
        require("CHATSITE_ENCRYPTION_KEYS", "it encrypts the stored API keys")
    ]

for _key in CHATSITE_ENCRYPTION_KEYS:
    try:
        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            "CHATSITE_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe "
            "base64-encoded bytes). Make one with: python -c 'from cryptography.fernet import "
            "Fernet; print(Fernet.generate_key().decode())'"
        ) from None

CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.forms",  # Django's widget templates, for FORM_RENDERER
    "django_htmx",
    "template_partials",
    "chatsite.apps.AxesConfig",  # django-axes, under a translated name
    "conversations",
]

MIDDLEWARE = [
    # First: every later step sees the real client address and only trusted forwarded headers.
    "conversations.network.trusted_proxy_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "conversations.languages.member_language_middleware",
    "conversations.audit.actor_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "conversations.middleware.first_run_middleware",
    "conversations.middleware.content_security_policy_middleware",
    # Last, as django-axes requires: it answers locked-out logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "conversations.context_processors.theme",
                "conversations.languages.context",
            ],
        },
    },
]

# Forms render their widgets with the site's templates: templates/django/forms/widgets/ writes
# the attributes of the widgets a page shows most (inputs, text areas, selects and each of their
# options) with a filter instead of including attrs.html for each (the same HTML).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = "chatsite.wsgi.application"



def private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only, or take the other users' rights away."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)


DATABASE_URL = os.environ.get("DATABASE_URL", "") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if not os.environ.get("DATABASE_URL", ""):
    # The embedded database, owner-only; SQLite gives its -wal and -shm files the same rights.
    private_file(DATA_DIR / "db.sqlite3")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, keeping closed connections open for the next thread (opening
    # one reads the whole schema: a third of a bare request's CPU). See chatsite/db/sqlite3.
    DATABASES["default"]["ENGINE"] = "chatsite.db.sqlite3"
    # Generation threads write while requests read: WAL, a busy timeout and immediate
    # transactions keep SQLite from answering "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "pool": env_int("CHATSITE_DB_POOL_SIZE", 10),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_int(
    "CHATSITE_DB_POOL_SIZE", 10
):
    # A pool per process: replies and streams open many short-lived connections.
    # Opened up front: growing a pool one connection at a time under a burst of requests
    # delays every request behind it.
    _pool_size = env_int("CHATSITE_DB_POOL_SIZE", 10)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": _pool_size,
        "max_size": _pool_size,
        "timeout": 20,
    }

# Test databases: one per test process, so concurrent runs on one machine do not collide; for
# SQLite a file, not memory, since the test server and generation threads open their own
# connections.
if DATABASES["default"]["ENGINE"] == "chatsite.db.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "conversations:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
# Each has complete catalogues in locale/ (compiled by scripts/setup; tests/test_translations.py
# fails on a string left untranslated). The language follows the member's choice, else the
# browser's Accept-Language (conversations/languages.py).
LANGUAGES = [("en", _("English")), ("ko", _("Korean")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TZ", "UTC") or "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served by WhiteNoise from the app directories, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True

# Redis, when set, carries live reply deltas between worker processes and backs the cache.
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# How viewers in one process follow replies generated in another (a module of
# conversations/replies/relay/, as SESSION_ENGINE names a session backend): Redis when it is
# configured; otherwise the database, which also serves several workers without Redis
# ("conversations.replies.relay.inprocess" saves its polling thread when one process serves all).
CHATSITE_RELAY = os.environ.get("CHATSITE_RELAY", "").strip() or (
    "conversations.replies.relay.redis" if REDIS_URL else "conversations.replies.relay.database"
)
# Namespace of chatsite's Redis keys and channels, for sites sharing one Redis database.
CHATSITE_REDIS_PREFIX = os.environ.get("CHATSITE_REDIS_PREFIX", "").strip() or "chatsite"
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's Redis cache, falling back to this process's memory while Redis is
            # unreachable: pages and sending keep working (/healthz says it is degraded).
            "BACKEND": "conversations.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHATSITE_REDIS_PREFIX,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "chatsite",
        }
    }
# Rendered message fragments (conversations/fragments.py) and the answers of who may use which
# model (conversations/access.py): this process's own memory, whatever the default cache is.
# Their keys are made of what they show or of a stamp in the database, so processes never need
# to agree, and a page reads 200 of them without a network round trip.
CACHES["fragments"] = {
    "BACKEND": "conversations.cache.OwnKeysMemoryCache",
    "LOCATION": "chatsite-fragments",
    "TIMEOUT": 24 * 3600,
    "OPTIONS": {"MAX_ENTRIES": env_int("CHATSITE_FRAGMENT_CACHE_ENTRIES", 20000)},
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Proxies whose forwarded headers (X-Forwarded-For, X-Forwarded-Proto) are believed: addresses
# or networks, comma-separated. From any other peer those headers are dropped and the peer's
# own address is the client's (conversations.network). uvicorn's own proxy-header handling is
# off (scripts/run passes --no-proxy-headers), so this is the one setting.
CHATSITE_TRUSTED_PROXIES = env_list("CHATSITE_TRUSTED_PROXIES")
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    if not CHATSITE_TRUSTED_PROXIES:
        raise ImproperlyConfigured(
            "DJANGO_BEHIND_TLS_PROXY=true needs CHATSITE_TRUSTED_PROXIES: the address of the "
            "proxy whose X-Forwarded-Proto is believed (e.g. 127.0.0.1)."
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Production is served over HTTPS only (behind a TLS-terminating proxy); /healthz stays
# reachable over plain HTTP for load balancers.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a commitment a site makes on purpose (hard to undo): off unless asked for, so
# `check --deploy`'s reminder to preload (security.W021) is silenced.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Login throttling (django-axes): after CHATSITE_LOGIN_FAILURE_LIMIT failed logins for one
# username from one client address, that pair is locked out for CHATSITE_LOGIN_COOLOFF_MINUTES.
# The client address is REMOTE_ADDR, which conversations.network sets from X-Forwarded-For only
# when the request comes from one of CHATSITE_TRUSTED_PROXIES.
AXES_FAILURE_LIMIT = env_int("CHATSITE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CHATSITE_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

# Privacy: admins read conversations in the admin (to help members and look into failed
# replies) but cannot change or delete them there unless this is true.
CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS = env_bool("CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS", False)

# Site-wide limits for members without their own (admin → User limits); unset means no limit.
CHATSITE_DEFAULT_MONTHLY_TOKENS = env_optional_int("CHATSITE_DEFAULT_MONTHLY_TOKENS")
CHATSITE_DEFAULT_REQUESTS_PER_MINUTE = env_optional_int("CHATSITE_DEFAULT_REQUESTS_PER_MINUTE")
# Money: the currency the catalog's prices, costs and money budgets are in (an ISO 4217 code;
# changing it converts nothing), a site-wide monthly cost budget for members without their own,
# and the share of a budget at which the member, the admin index and the team's admins are told.
CHATSITE_CURRENCY = (os.environ.get("CHATSITE_CURRENCY", "").strip() or "USD").upper()[:3]
CHATSITE_DEFAULT_MONTHLY_COST = env_optional_money("CHATSITE_DEFAULT_MONTHLY_COST")
CHATSITE_BUDGET_ALERT_PERCENT = env_int("CHATSITE_BUDGET_ALERT_PERCENT", 80)
# Mail (budget alerts): printed to the console unless a backend is configured, e.g.
# EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST and friends.
EMAIL_BACKEND = (os.environ.get("EMAIL_BACKEND", "").strip()
                 or "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "").strip() or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "").strip() or "chatsite@localhost"

# Scripts, styles and images from this site only: model output can never run or fetch anything.
CHATSITE_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

# Upstream: how long to wait for a connection; for the first text of a reply (reasoning models
# may think for minutes before they write); and for more text once it has started. Keep-alive
# comments do not count as text. Past a deadline the reply ends, saying which one passed.
CHATSITE_CONNECT_TIMEOUT = float(os.environ.get("CHATSITE_CONNECT_TIMEOUT", "") or 10)
CHATSITE_FIRST_TOKEN_TIMEOUT = float(os.environ.get("CHATSITE_FIRST_TOKEN_TIMEOUT", "") or 300)
CHATSITE_IDLE_TIMEOUT = float(os.environ.get("CHATSITE_IDLE_TIMEOUT", "") or 120)
# The longest reply a member may ask for (tokens), until the model catalog knows each model's.
CHATSITE_MAX_OUTPUT_TOKENS = env_int("CHATSITE_MAX_OUTPUT_TOKENS", 128_000)
# The largest file a member may import (chatsite's own export or ChatGPT's), in bytes.
CHATSITE_IMPORT_MAX_BYTES = env_int("CHATSITE_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
# Attachments (conversations/uploads.py): how many per message; the largest image and text file
# (bytes, as uploaded); the most pixels an image may decode to (larger ones are refused before
# they are decoded: decompression bombs); the size images are reduced to, as OpenAI's vision
# models use them (within a square of the first, the shorter side at most the second); the
# longest text a file (a PDF's text included) may add to a message, in characters.
CHATSITE_ATTACHMENT_MAX_FILES = env_int("CHATSITE_ATTACHMENT_MAX_FILES", 8)
CHATSITE_ATTACHMENT_MAX_IMAGE_BYTES = env_int("CHATSITE_ATTACHMENT_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
CHATSITE_ATTACHMENT_MAX_FILE_BYTES = env_int("CHATSITE_ATTACHMENT_MAX_FILE_BYTES", 10 * 1024 * 1024)
CHATSITE_ATTACHMENT_MAX_PIXELS = env_int("CHATSITE_ATTACHMENT_MAX_PIXELS", 50_000_000)
CHATSITE_ATTACHMENT_IMAGE_SIDE = env_int("CHATSITE_ATTACHMENT_IMAGE_SIDE", 2048)
CHATSITE_ATTACHMENT_IMAGE_SHORT_SIDE = env_int("CHATSITE_ATTACHMENT_IMAGE_SHORT_SIDE", 768)
CHATSITE_ATTACHMENT_MAX_TEXT_CHARS = env_int("CHATSITE_ATTACHMENT_MAX_TEXT_CHARS", 200_000)
# How images reach the provider: "data" (a data: URL in the request, works everywhere) or
# "url" (the attachment storage's own https URL, e.g. a presigned S3 URL; falls back to a data
# URL where the storage gives no https URL).
CHATSITE_ATTACHMENT_IMAGE_URLS = os.environ.get("CHATSITE_ATTACHMENT_IMAGE_URLS", "").strip() or "data"
# Where attachments are stored: the data directory by default; any Django storage backend by
# setting, e.g. CHATSITE_ATTACHMENT_STORAGE=storages.backends.s3.S3Storage with its OPTIONS as
# JSON in CHATSITE_ATTACHMENT_STORAGE_OPTIONS (needs django-storages[s3] installed).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": {
        "BACKEND": os.environ.get("CHATSITE_ATTACHMENT_STORAGE", "").strip()
        or "django.core.files.storage.FileSystemStorage",
        "OPTIONS": json.loads(os.environ.get("CHATSITE_ATTACHMENT_STORAGE_OPTIONS", "") or "null")
        or {"location": str(DATA_DIR / "attachments"), "base_url": None,
            "directory_permissions_mode": 0o700, "file_permissions_mode": 0o600},
    },
}
# Models offered when a key's model list cannot be fetched.
CHATSITE_FALLBACK_MODELS = env_list("CHATSITE_FALLBACK_MODELS") or ["gpt-4o-mini", "gpt-4o"]
CHATSITE_MODELS_CACHE_SECONDS = env_int("CHATSITE_MODELS_CACHE_SECONDS", 600)
# Conversations the sidebar lists at a time; more load as the member scrolls.
CHATSITE_SIDEBAR_PAGE_SIZE = env_int("CHATSITE_SIDEBAR_PAGE_SIZE", 30)
# Streamed text is written to the database at most this often (seconds).
CHATSITE_FLUSH_INTERVAL = float(os.environ.get("CHATSITE_FLUSH_INTERVAL", "") or 2)
# Replies generated at once by one process; beyond it a new message is refused with "busy, try
# again in a moment" (never an endless wait).
CHATSITE_MAX_GENERATIONS = env_int("CHATSITE_MAX_GENERATIONS", 64)
# A reply whose process stops renewing its claim for this long is marked interrupted.
CHATSITE_LEASE_SECONDS = float(os.environ.get("CHATSITE_LEASE_SECONDS", "") or 30)
# Seconds between keep-alive comments on an idle event stream.
CHATSITE_KEEPALIVE_SECONDS = float(os.environ.get("CHATSITE_KEEPALIVE_SECONDS", "") or 15)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_secrets": {"()": "conversations.logging.MaskSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["mask_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("CHATSITE_LOG_LEVEL", "INFO")},
    "loggers": {
        # Quiet per-request lines; errors still propagate to the root handler.
        "django.server": {"level": "WARNING"},
        # Per-chunk debug lines of the stream parser and the Markdown renderer.
        "sseclient": {"level": "WARNING"},
        "markdown_it": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
