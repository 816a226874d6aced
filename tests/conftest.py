"""Shared fixtures: the fake upstream, keys and users, a real ASGI server, and the secret guard.

Import helpers from here as `from conftest import ...` (the module pytest loaded), never as
`tests.conftest`, which would load a second copy with its own state.

The secret guard runs around every test: every response body a test receives (test client,
streams read through ``read_events``, browser pages) and every log record is scanned for every
API key secret the suite has used — the ones tests stored and every bearer token the fake
upstream received. A hit fails the test.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import sseclient
import uvicorn
from django.test import Client

from conversations import middleware, replies, services
from conversations.logging import MaskSecretsFilter
from devtools.fake_upstream import FakeUpstream
from tests.helpers import SCREENS

SECRETS: set[str] = set()
PASSWORD = "correct horse battery staple"
CHROMIUM = os.environ.get("CHATSITE_CHROMIUM", "/usr/bin/chromium")


class SeenText:
    """Everything the suite received or logged during one test."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self.lock:
            self.items.append((where, text))


SEEN = SeenText()


class _CaptureHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        SEEN.add(f"log record {record.name}", self.format(record))


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> None:
    """Hash test passwords cheaply: the real hasher costs a second per login on CI machines."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _attachments_stored_apart(tmp_path_factory) -> Iterator[None]:
    """Store attachments in a folder of this test process: not among the site's own in the data
    directory, and not where the other test process stores its files (a test compares what is
    in storage before and after a send)."""
    from django.conf import settings
    from django.core.files.storage import storages
    from django.test import override_settings

    from conversations.models import Attachment

    configured = settings.STORAGES["attachments"]
    if configured["BACKEND"] != "django.core.files.storage.FileSystemStorage":
        yield  # an operator's backend under test (e.g. S3): leave it as configured
        return
    location = tmp_path_factory.mktemp("attachments")
    options = {**configured.get("OPTIONS", {}), "location": str(location)}
    field = Attachment._meta.get_field("file")
    kept = field.storage
    with override_settings(STORAGES={**settings.STORAGES,
                                     "attachments": {**configured, "OPTIONS": options}}):
        # The field took its storage when the model loaded; give it the one now configured.
        field.storage = storages["attachments"]
        try:
            yield
        finally:
            field.storage = kept


@pytest.fixture(autouse=True, scope="session")
def _templates_render_uninstrumented(django_test_environment) -> None:
    """Render templates as the site does. Django's test setup wraps every template render to
    record its context for ``response.context`` (a copy per template, widget and include: a
    fifth of a chat page's cost); the tests read what the page shows instead."""
    from django.template import Template
    from django.test.utils import _TestState, instrumented_test_render

    # setup_test_environment() keeps the renderer it replaced here (teardown puts it back).
    assert Template._render is instrumented_test_render
    Template._render = _TestState.saved_data.template_render


@pytest.fixture(autouse=True, scope="session")
def _close_database_pools(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Before the test database is dropped: end the reply engine's background threads (which
    would otherwise query a database being dropped, and on PostgreSQL keep it from being
    dropped), then close PostgreSQL connection pools."""
    yield
    from django.db import connections

    from conversations.replies import daemon

    daemon.stop_all()
    with django_db_blocker.unblock():
        for connection in connections.all(initialized_only=True):
            if getattr(connection, "pool", None) is not None:
                connection.close_pool()
        _end_other_sessions(connections["default"])


def _end_other_sessions(connection) -> None:
    """End what still holds the PostgreSQL test database, so that it can be dropped.

    After the browser tests, a few sessions of the in-process ASGI server stay open and idle,
    their last statements those of chat pages: connections its request threads had checked
    out, not given back when the pool closed, so the database could not be dropped (Django
    warned, and left it behind). A server process does not gather them: 30 chat page requests
    cut off by the client left its sessions at the pool's size."""
    if connection.vendor != "postgresql":
        return
    import psycopg

    settings = connection.settings_dict
    with psycopg.connect(host=settings["HOST"] or None, port=settings["PORT"] or None,
                         user=settings["USER"] or None, password=settings["PASSWORD"] or None,
                         dbname="postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", [settings["NAME"]])


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.release()
    SECRETS.update(fake_upstream_server.bearer_tokens())


@pytest.fixture(autouse=True)
def secret_guard(monkeypatch) -> Iterator[None]:
    """Fail the test if any response body or log record holds a stored secret."""
    original = Client.request

    def recording_request(self, **request):
        response = original(self, **request)
        if not response.streaming:
            SEEN.add(f"response to {request.get('PATH_INFO')}", response.content)
            for header, value in response.items():
                SEEN.add(f"header {header} of {request.get('PATH_INFO')}", value)
        return response

    monkeypatch.setattr(Client, "request", recording_request)
    handler = _CaptureHandler(level=logging.DEBUG)
    handler.addFilter(MaskSecretsFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    middleware.forget_users()
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        with SEEN.lock:
            items, SEEN.items = SEEN.items, []
        leaks = [
            where for where, text in items for secret in SECRETS if secret and secret in text
        ]
        assert not leaks, f"an API key secret was found in: {sorted(set(leaks))}"


@pytest.fixture(autouse=True)
def _no_reply_outlives_its_test() -> Iterator[None]:
    yield
    for message_id in replies.live():
        replies.stop_local(message_id)
    assert replies.wait_idle(10), "a reply was still being generated after its test"


@pytest.fixture
def make_api_key(fake_upstream: FakeUpstream) -> Callable[..., object]:
    counter = iter(range(1, 10_000))

    def make(**fields):
        number = next(counter)
        secret = fields.pop("secret", f"sk-test-{number:04d}-QmFzZTY0SGVyZUFuZFRoZXJl")
        SECRETS.add(secret)
        fields.setdefault("name", f"Key {number}")
        fields.setdefault("base_url", fake_upstream.base_url)
        fields.setdefault("everyone", True)
        return services.api_key_create(secret=secret, **fields)

    return make


@pytest.fixture
def api_key(make_api_key):
    return make_api_key(organization="org-team", project="proj_chat", default_model="gpt-4o-mini")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", password=PASSWORD)


@pytest.fixture
def alice(client, user) -> Client:
    client.force_login(user)
    return client


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Serve the real ASGI application under uvicorn on loopback; yield its base URL."""
    from chatsite.asgi import application

    port = _free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", proxy_headers=False)
    server = uvicorn.Server(config)
    with django_db_blocker.unblock():
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=15)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_url(asgi_server, transactional_db) -> str:
    return asgi_server


def session_for(base_url: str, username: str, password: str = PASSWORD) -> requests.Session:
    """Return a requests session logged in to the site like a browser would be."""
    session = requests.Session()
    page = session.get(f"{base_url}/accounts/login/", timeout=10)
    SEEN.add("login page", page.text)
    response = session.post(
        f"{base_url}/accounts/login/",
        data={"username": username, "password": password,
              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{base_url}/accounts/login/"},
        timeout=10,
    )
    assert response.ok and "sessionid" in session.cookies, "login failed"
    return session


def read_events(response: requests.Response) -> Iterator[sseclient.Event]:
    """Yield the SSE events of a streamed response, recording their data for the guard."""
    for event in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
        SEEN.add(f"SSE event {event.event}", event.data)
        yield event


# -- the browser -------------------------------------------------------------------------------


def pytest_collection_modifyitems(items) -> None:
    """Run browser tests last: Playwright's sync API leaves an event loop in the main thread,
    after which Django's test client cannot call async views."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's) for the whole session, driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (Debian package: chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_url):
    """A fresh browser context on the live server; fails the test on any JavaScript error or
    Content-Security-Policy violation, and feeds every response body to the secret guard."""
    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    responses = []
    page.on("response", lambda response: responses.append(response))
    errors = watch(page)
    yield page
    for response in responses:
        if "text/event-stream" in (response.headers.get("content-type") or ""):
            continue
        try:
            SEEN.add(f"browser response {response.url}", response.text())
        except Exception:  # a body the browser no longer holds (redirects, navigations)
            pass
    context.close()
    assert not errors, f"JavaScript errors or policy violations on the page: {errors}"


@pytest.fixture(params=sorted(SCREENS))
def screen(request, browser, live_url):
    """A page on one of two screens, a desktop in light colours or a phone in dark ones: together
    they cover both sizes and both schemes (axe-core runs in all four, test_accessibility.py).
    Fails the test on any JavaScript error or Content-Security-Policy violation."""
    context = browser.new_context(base_url=live_url, accept_downloads=True,
                                  **SCREENS[request.param])
    tab = context.new_page()
    errors = watch(tab)
    yield tab
    context.close()
    assert not errors, errors


def watch(page) -> list[str]:
    """Collect the page's JavaScript errors and Content-Security-Policy violations."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if (
        message.type == "error" and (
            "Content Security Policy" in message.text or "Refused to" in message.text)
    ) else None)
    return errors


def log_in(page, username: str) -> None:
    """Log in on the login page, in whatever language it speaks."""
    page.goto("/accounts/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*/$"))
