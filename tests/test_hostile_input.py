"""Bad input never gives a 500: hostile values in every query parameter and form field of every URL.

The URLs come from ``get_resolver()``, filled with real objects. The parameters are generated, not
listed: the names a view reads from ``request.GET`` (recorded while it answers a plain request),
the fields of the HTML forms on its page, the parameters of its page's links back to itself, and
on admin changelists the admin's own control parameters. They get dates in year 1 and 9999,
30-digit and just-past-64-bit numbers, NUL, invalid UTF-8 and encoded surrogates as raw bytes,
1 MB strings, far too many fields and repeated keys, as each kind of visitor: nobody, the member
who owns the conversation in the URL, another member, a staff member with a few view permissions,
and a superuser. Requests are many, so the full set of values goes where a page is answered
(the first visitor it renders for, the first form a visitor is shown); the others get a few
values, or all parameters at once (a form checks each field on its own).

Every answer is below 500. A 400 from the chat site says what was wrong, and a POST to the chat
site that changed nothing says why (an error on the page, or a notice on the page it redirects
to): bad input is never silently ignored, and nothing unstorable is stored. The admin answers in
its own way (its list again with ``?e=1``, a form error, a 400 or 404). The admin runs east of
UTC (Seoul), where the first hours of year 1 are year 0 in UTC, and once west of it (New York),
where the last ones of 9999 are year 10000.

Every visitor has a token budget of zero, so a message that passes validation is refused before
a reply starts: no upstream call and no background thread, so plain test transactions do. What
a member's odd characters become when they are stored is checked at the end.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.views import main as changelist
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.signals import got_request_exception
from django.http import QueryDict
from django.test import Client
from django.urls import reverse
from django.urls.resolvers import RegexPattern
from django.utils import timezone

from conftest import PASSWORD, wait_for
from conversations import services
from conversations.forms import MessageForm
from conversations.middleware import forget_users
from conversations.models import AuditEvent, Conversation, Message, UsageDaily, UserLimit
from conversations.text import has_unstorable
from tests.helpers import is_admin, url_patterns

pytestmark = pytest.mark.django_db
IN_TRANSACTIONS = pytest.mark.django_db(transaction=True)

# Values sent as they are (the client percent-encodes them).
HOSTILE: dict[str, str] = {
    "year 1": "0001-01-01",
    "year 9999": "9999-12-31",
    "the year 1": "1",
    "the year 9999": "9999",
    "zero": "0",
    "negative": "-1",
    "30 digits": "9" * 30,
    "past 64 bits": str(2**63),
    "exponent": "1e309",
    "non-ASCII digits": "\u0661\u0662",
    "NUL": "1\x00",
    "blank": "   ",
    "markup and bidi": "<b>x</b>\u202e\ufeff",
}
# Values sent as raw query-string or body bytes (a str here holds one byte per character); a
# NUL is "%00" either way (HOSTILE's NUL).
RAW: dict[str, str] = {
    "invalid UTF-8": "%ff%fe",
    "raw bytes": "\xff\xfe\x80",
    "encoded surrogate": "%ed%a0%80",
}
BIG = "9" * (1 << 20)  # 1 MB: too long for every field, too many digits for int()
# Fewer values where requests are many or dear: those most likely to get past validation into a
# query or a date computation.
FEW = {label: HOSTILE[label] for label in (
    "year 1", "the year 1", "the year 9999", "negative", "30 digits", "NUL")}
FEW_RAW = {"invalid UTF-8": RAW["invalid UTF-8"]}
# Digits only: what an <int:…> converter lets through.
HOSTILE_IDS = ["0", "00", str(2**31), str(2**63), "9" * 30]

# Plausible values for the other fields of a form while one field is hostile.
GOOD = {"content": "Hello", "title": "Renamed", "username": "alice", "password": PASSWORD,
        "old_password": PASSWORD, "new_password1": "a new passphrase 4711",
        "new_password2": "a new passphrase 4711"}
SKIP_FIELDS = {"csrfmiddlewaretoken"}

ROLES = ("anonymous", "owner", "other", "staff", "superuser")


# -- the URLconf -----------------------------------------------------------------------------


SITE_ROUTES = {name: route for route, name, _ in url_patterns() if not is_admin(name, route)}
ADMIN_ROUTES = [(route, name, pattern) for route, name, pattern in url_patterns()
                if is_admin(name, route)]
CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def fill(route: str, values: Callable[[str, str], object]) -> str:
    """Return ``route`` with each ``<converter:name>`` replaced by ``values(converter, name)``."""
    return "/" + CONVERTER.sub(lambda match: str(values(match.group(1), match.group(2))), route)


# -- who is asking, and about what ------------------------------------------------------------


@pytest.fixture
def owned(user, api_key):
    """Alice's conversation: her question and a finished reply; a day of her usage."""
    conversation = Conversation.objects.create(
        owner=user, title="Party plans", api_key=api_key, model="gpt-4o-mini")
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="Which cake?",
        model="gpt-4o-mini")
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Carrot cake.",
        status=Message.Status.COMPLETE, finish_reason="stop", model="gpt-4o-mini",
        api_key=api_key)
    UsageDaily.objects.create(day=timezone.localdate(), user=user, api_key=api_key,
                              model="gpt-4o-mini", requests=1, total_tokens=10)
    AuditEvent.objects.create(actor_name="root", action="key changed", target="Key 1")
    return {"conversation": conversation, "question": question, "reply": reply}


@pytest.fixture
def accounts(user, other_user, django_user_model) -> dict:
    staff = django_user_model.objects.create_user("stafford", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_usagedaily", "view_auditevent", "view_apikey", "view_message"]))
    superuser = django_user_model.objects.create_superuser("root", password=PASSWORD)
    people = {"anonymous": None, "owner": user, "other": other_user, "staff": staff,
              "superuser": superuser}
    for person in people.values():
        if person is not None:  # anything that passes validation is refused, no reply starts
            UserLimit.objects.create(user=person, monthly_token_budget=0)
    return people


@pytest.fixture
def visitors(accounts) -> dict[str, Callable[[], Client]]:
    """Return, per role, a function that returns that visitor's client, logged in afresh if a
    request logged it out or in as someone else."""
    clients = {role: Client(raise_request_exception=False) for role in accounts}

    def visitor(role: str) -> Callable[[], Client]:
        def get() -> Client:
            client, account = clients[role], accounts[role]
            if account is not None and client.session.get("_auth_user_id") != str(account.pk):
                client.force_login(account)
            elif account is None and client.session.get("_auth_user_id"):
                client.logout()
            return client

        return get

    return {role: visitor(role) for role in accounts}


def site_url(name: str, owned: dict) -> str:
    """Return the URL ``name`` filled with the owner's objects (a message URL with the one its
    actions apply to: the question for an edit, the reply otherwise)."""
    route = SITE_ROUTES[name]
    message = owned["question"] if name.endswith("edit") else owned["reply"]
    objects = {"c": owned["conversation"].pk, "m": message.pk}
    return fill(route, lambda converter, arg: objects.get(route.split("/")[0], 1))


# -- what a page offers: forms, links, and the parameters its view reads ----------------------


class PageParser(HTMLParser):
    """Collect a page's forms (method, action, and per field the values a browser would send,
    and its kind) and its links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[str] = []
        self.autocompletes: list[dict] = []  # what the admin's autocomplete fields ask for
        self._form: dict | None = None
        self._select: str | None = None
        self._multiple = self._chosen = False
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in attr:
            self.links.append(attr["href"])
        elif tag == "form":
            self._form = {"method": attr.get("method", "get").lower(),
                          "action": attr.get("action", ""), "htmx": "hx-post" in attr,
                          "fields": {}, "kinds": {}}
            self.forms.append(self._form)
        if self._form is None:
            return
        fields, name = self._form["fields"], attr.get("name")
        if name and tag in ("input", "select", "textarea"):
            self._form["kinds"][name] = attr.get("type", "text") if tag == "input" else tag
        if tag == "input" and name and attr.get("type") not in ("submit", "button", "image"):
            values = fields.setdefault(name, [])
            if attr.get("type") not in ("checkbox", "radio"):
                values.append(attr.get("value", ""))
            elif "checked" in attr:
                values.append(attr.get("value") or "on")
        elif tag == "select" and name:
            self._select, self._multiple, self._chosen = name, "multiple" in attr, False
            fields[name] = []
            if "data-app-label" in attr:
                self.autocompletes.append({
                    "app_label": attr["data-app-label"], "model_name": attr["data-model-name"],
                    "field_name": attr["data-field-name"]})
        elif tag == "option" and self._select:
            values, selected = fields[self._select], "selected" in attr
            if self._multiple:
                values += [attr.get("value", "")] if selected else []
            elif not values or (selected and not self._chosen):  # the first, or the selected
                values[:] = [attr.get("value", "")]
                self._chosen = selected
        elif tag == "textarea" and name:
            self._textarea = name
            fields[name] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea and self._form is not None:
            values = self._form["fields"][self._textarea]
            values[0] = (values[0] + data).removeprefix("\n")  # as browsers read it


def parse(response) -> PageParser:
    parser = PageParser()
    if "html" in response.get("Content-Type", "") and not response.streaming:
        parser.feed(response.content.decode())
    return parser


@contextmanager
def reading_recorded() -> Iterator[list[tuple[QueryDict, str]]]:
    """Record every name looked up in a ``QueryDict``, with the dict (``request.GET``, say)."""
    reads: list[tuple[QueryDict, str]] = []
    originals = {attribute: getattr(QueryDict, attribute)
                 for attribute in ("get", "__getitem__", "getlist", "__contains__")}

    def recording(original):
        def lookup(self, key, *args, **kwargs):
            if isinstance(key, str):
                reads.append((self, key))
            return original(self, key, *args, **kwargs)

        return lookup

    for attribute, original in originals.items():
        setattr(QueryDict, attribute, recording(original))
    try:
        yield reads
    finally:
        for attribute, original in originals.items():
            setattr(QueryDict, attribute, original)


def body_of(response, timeout: float = 5.0) -> bytes:
    """Return the response body; a stream is read until it ends or ``timeout`` passes."""
    if not response.streaming:
        return response.content
    if not response.is_async:
        return b"".join(response)

    async def read() -> bytes:
        parts, deadline = [], time.monotonic() + timeout
        async for part in response.streaming_content:
            parts.append(part)
            if time.monotonic() > deadline:
                break
        return b"".join(parts)

    return async_to_sync(read)()


@contextmanager
def server_errors() -> Iterator[list[str]]:
    """Collect the exceptions the views raised (the client answers them with a 500)."""
    errors: list[str] = []

    def record(sender, request=None, **kwargs):
        error = sys.exc_info()[1]
        errors.append(f"{type(error).__name__}: {str(error)[:200]}")

    got_request_exception.connect(record)
    try:
        yield errors
    finally:
        got_request_exception.disconnect(record)


# -- judging answers -------------------------------------------------------------------------

VISIBLE_ERROR = re.compile(
    r'<(?:[a-z]+)[^>]*(?:role="alert"|class="[^"]*\b(?:errorlist|errornote)\b[^"]*"|class="flash")'
    r'[^>]*>(.*?)</',
    re.S,
)


def error_text(html: str) -> str:
    """Return the text of the page's error messages (alerts, form errors, notices); on an
    error page without a form, its heading."""
    found = " ".join(re.sub(r"<[^>]+>", " ", match) for match in VISIBLE_ERROR.findall(html))
    if not found.strip() and "<form" not in html:
        heading = re.search(r"<h1>(.*?)</h1>", html, re.S)
        found = heading.group(1) if heading else ""
    return " ".join(found.split())


def repeat(name: str) -> str:
    """Return a query string that gives parameter ``name`` three values."""
    return f"{quote(name)}=1&{quote(name)}=9999-12-31&{quote(name)}="


class Sweep:
    """Send requests as one visitor; collect what went wrong."""

    def __init__(self, client: Callable[[], Client], role: str, *, site: bool) -> None:
        self.client, self.role, self.site = client, role, site
        self.problems: list[str] = []
        self.requests = 0

    def send(self, method: str, path: str, what: str, **kwargs):
        with server_errors() as errors:
            response = getattr(self.client(), method)(path, **kwargs)
            body = body_of(response)
        self.requests += 1
        where = f"{method.upper()} {path} with {what} as {self.role}"
        if response.status_code >= 500:
            self.problems.append(f"{where}: {response.status_code} {errors}")
        elif self.site and response.status_code == 400:
            if not error_text(body.decode(errors="replace")):
                self.problems.append(f"{where}: 400 without a readable error")
        return response

    def query(self, path: str, base: dict, name: str, values: dict, raw: dict,
              big: bool, repeated: bool = True) -> None:
        """GET ``path`` with ``base`` and each value in parameter ``name`` (also repeated)."""
        prefix = urlencode(base)
        prefix = prefix + "&" if prefix else ""
        for label, value in values.items():
            self.send("get", path, f"{name}={label} {base or ''}", data={**base, name: value})
        for label, value in raw.items():
            self.send("get", path, f"{name}={label} {base or ''}",
                      QUERY_STRING=f"{prefix}{quote(name)}={value}")
        if repeated:
            self.send("get", path, f"repeated {name} {base or ''}",
                      QUERY_STRING=prefix + repeat(name))
        if big:
            self.send("get", path, f"{name}=1 MB {base or ''}", data={**base, name: BIG})

    def everything_at_once(self, path: str, names: set[str], values: dict, raw: dict) -> None:
        """GET ``path`` with every parameter set to each value, and every parameter repeated."""
        self.send("get", path, "every parameter repeated",
                  QUERY_STRING="&".join(repeat(name) for name in sorted(names)))
        for label, value in values.items():
            self.send("get", path, f"every parameter={label}",
                      data=dict.fromkeys(sorted(names), value))
        for label, value in raw.items():
            self.send("get", path, f"every parameter={label}",
                      QUERY_STRING="&".join(f"{quote(name)}={value}" for name in sorted(names)))


def snapshot() -> tuple:
    """Return what a member's POST may change: conversations, messages, logins, passwords."""
    return (list(Conversation.objects.order_by("pk").values()),
            list(Message.objects.order_by("pk").values()),
            list(get_user_model().objects.order_by("pk").values("password", "last_login")))


def same_path_queries(links: list[str], path: str) -> list[dict]:
    """Return the queries of the page's links back to ``path`` (``?…`` or ``path?…``)."""
    queries = []
    for link in links:
        parts = urlsplit(link)
        if parts.query and parts.path in ("", path):
            queries.append(dict(parse_qsl(parts.query, keep_blank_values=True)))
    return queries


def discover(client: Client, path: str) -> tuple[int, set[str], PageParser]:
    """GET ``path``; return its status, the parameter names its view read from the query string
    or its page offers (GET forms aimed at it, links back to it), and the parsed page."""
    with reading_recorded() as reads:
        response = client.get(path)
        body_of(response)
    page = parse(response)
    names = {key for queries, key in reads if queries is response.wsgi_request.GET}
    for form in page.forms:
        if form["method"] == "get" and form["action"] in ("", path):
            names |= set(form["fields"])
    for query in same_path_queries(page.links, path):
        names |= set(query)
    return response.status_code, names - SKIP_FIELDS, page


# -- the chat site: every query parameter ------------------------------------------------------

STREAM = "conversations:message-stream"
UNREAD = "unexpected"  # a parameter no view reads


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[IN_TRANSACTIONS] if name == STREAM else [])
    for name in sorted(SITE_ROUTES)
])
def test_hostile_query_values_never_give_a_server_error(name, visitors, owned):
    """Every parameter × every value for the first visitor the page answers (with 200);
    every parameter at once with each value, and with a few values for the other visitors."""
    path = site_url(name, owned)
    names, bases, full = set(), [{}], None
    for role in ROLES:
        status, read, page = discover(visitors[role](), path)
        names |= read
        for query in same_path_queries(page.links, path):
            if query and query not in bases:
                bases.append(query)
        if full is None and status == 200:
            full = role
    problems, requests = [], 0
    for role in ROLES:
        sweep = Sweep(visitors[role], role, site=True)
        if role == full:
            # Every value on top of the page's own link back to it, if it has one (the usage
            # CSV, cheap to make and carrying the dates); a few on the bare page.
            *others, last = bases
            for parameter in sorted(names):
                sweep.query(path, last, parameter, HOSTILE, FEW_RAW, big=not others)
                for base in others:
                    sweep.query(path, base, parameter, FEW, FEW_RAW, big=True)
            sweep.everything_at_once(path, names | {UNREAD}, HOSTILE, RAW)
        else:
            sweep.everything_at_once(path, names | {UNREAD}, FEW, FEW_RAW)
        problems += sweep.problems
        requests += sweep.requests
    assert not problems, f"{len(problems)} of {requests} requests failed:\n" + "\n".join(problems)


def test_the_sweep_finds_the_parameters_views_read_and_forms_offer(visitors, owned):
    """The sweep above is only as good as its discovery: check it finds what we know of."""
    found = {}
    for name, role in [("conversations:usage", "owner"), ("admin-usage", "superuser"),
                       ("conversations:export", "owner"), ("login", "anonymous")]:
        found[name] = discover(visitors[role](), site_url(name, owned))[1]

    assert {"start", "end", "team", "api_key", "organization", "project", "model", "group_by",
            "format"} <= found["conversations:usage"]
    assert "user" not in found["conversations:usage"]
    assert {"user", "format"} <= found["admin-usage"]
    assert "format" in found["conversations:export"]
    assert "next" in found["login"]


@pytest.mark.parametrize("value", [*HOSTILE_IDS, "9" * 5000])
def test_hostile_ids_in_chat_urls_are_not_found_not_server_errors(value, visitors, owned):
    problems = []
    for route in sorted(route for route in SITE_ROUTES.values() if CONVERTER.search(route)):
        path = fill(route, lambda converter, arg: value)
        for role in ("anonymous", "owner", "superuser"):
            sweep = Sweep(visitors[role], role, site=True)
            response = sweep.send("get", path, "the id")
            if role != "anonymous" and response.status_code not in (404, 405):
                problems.append(f"GET {path} as {role}: {response.status_code}, not 404")
            sweep.send("post", path, "the id", data={"content": "Hello", "title": "Renamed"})
            problems += sweep.problems
    assert not problems, "\n".join(problems)


@IN_TRANSACTIONS
@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_a_stream_resumed_from_a_hostile_last_event_id_still_ends_with_the_reply(
    label, visitors, owned
):
    path = site_url(STREAM, owned)
    with server_errors() as errors:
        response = visitors["owner"]().get(path, HTTP_LAST_EVENT_ID=HOSTILE[label])
        body = body_of(response).decode()
    assert response.status_code == 200, errors
    assert "event: done" in body and "Carrot cake." in body


# -- the chat site: every form field -----------------------------------------------------------


def unstorable(rows: tuple) -> list[str]:
    """Return the stored strings a database should never have been given."""
    return [repr(value)[:80] for table in rows for row in table for value in row.values()
            if isinstance(value, str) and has_unstorable(value)]


class FormSweep(Sweep):
    """POST a form with one hostile field at a time (the others valid), and judge the answer:
    below 500, and an action that changed nothing says why, on the page or after its redirect."""

    def __init__(self, client: Callable[[], Client], role: str) -> None:
        super().__init__(client, role, site=True)

    def post(self, action: str, what: str, htmx: bool, **kwargs) -> None:
        what += " (htmx)" if htmx else ""
        self.client()  # the visitor as they should be, before the snapshot
        before = snapshot()
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        response = self.send("post", action, what, **kwargs, **headers)
        if response.status_code >= 500:
            return
        after = snapshot()
        where = f"POST {action} with {what} as {self.role}"
        if after != before:
            if unstorable(after):
                self.problems.append(f"{where} stored {unstorable(after)}")
            return
        shown = response
        target = response.get("HX-Redirect") or (
            response["Location"] if response.status_code == 302 else None)
        if target:
            shown = self.client().get(target)
        if not error_text(shown.content.decode(errors="replace")):
            self.problems.append(f"{where}: {response.status_code} {target or ''}, nothing "
                                 "changed and no error shown")

    def fields(self, action: str, defaults: dict, htmx: bool, values: dict, raw: dict) -> None:
        """Every field × every value, raw bytes, 1 MB and repeated; then far too many fields,
        and every field at once with each kind of raw bytes."""
        for field in sorted(defaults):
            others = {name: value for name, value in defaults.items() if name != field}
            for label, value in values.items():
                self.post(action, f"{field}={label}", htmx, data={**others, field: value})
            for label, value in raw.items():
                body = f"{urlencode(others, doseq=True)}&{quote(field)}={value}".encode("latin-1")
                self.post(action, f"{field}={label}", htmx, data=body,
                          content_type="application/x-www-form-urlencoded")
            self.post(action, f"{field}=1 MB", htmx, data={**others, field: BIG})
            self.post(action, f"repeated {field}", htmx,
                      data={**others, field: [*defaults[field], "9" * 30, "\x00"]})
        self.post(action, "2,000 fields", htmx, data=urlencode(
            [*defaults.items(), *(("field", str(n)) for n in range(2000))], doseq=True).encode(),
            content_type="application/x-www-form-urlencoded")
        self.all_fields(action, defaults, htmx, {}, RAW)

    def all_fields(self, action: str, defaults: dict, htmx: bool, values: dict,
                   raw: dict) -> None:
        """Every field at once with each value."""
        for label, value in values.items():
            self.post(action, f"every field={label}", htmx, data=dict.fromkeys(defaults, value))
        for label, value in raw.items():
            body = "&".join(f"{quote(field)}={value}" for field in defaults).encode("latin-1")
            self.post(action, f"every field={label}", htmx, data=body,
                      content_type="application/x-www-form-urlencoded")


def site_forms(visitors, owned) -> list[tuple[str, str, dict, bool]]:
    """Return (role, action, field defaults, htmx) for each POST form a visitor is shown on
    the chat site's pages and the admin's login page, which answer everyone (the CSRF token is
    no field to fill; forms without fields are left alone: stop, retry, delete and log out act
    on the URL alone)."""
    found = []
    for path in [*(site_url(name, owned) for name in sorted(SITE_ROUTES)), "/admin/login/"]:
        for role in ROLES:
            _status, _names, page = discover(visitors[role](), path)
            for form in page.forms:
                defaults = {field: values if any(values) or field not in GOOD else [GOOD[field]]
                            for field, values in form["fields"].items() if field not in SKIP_FIELDS}
                entry = (role, form["action"] or path, defaults, form["htmx"])
                if form["method"] == "post" and defaults and entry not in found:
                    found.append(entry)
    return found


@pytest.mark.slow
def test_hostile_form_fields_get_an_error_or_are_cleaned(visitors, owned):
    """The first visitor shown a form posts every field × every value (a few values through
    htmx); the others every field at once with each of a few values."""
    forms = site_forms(visitors, owned)
    actions = {action for _role, action, _defaults, _htmx in forms}
    conversation, question = owned["conversation"], owned["question"]
    assert {"/c/new/messages", f"/c/{conversation.pk}/messages", f"/c/{conversation.pk}/rename",
            f"/m/{question.pk}/edit", "/accounts/login/", "/accounts/password_change/",
            "/admin/login/"} <= actions, actions

    problems, requests, done = [], 0, set()
    for role, action, defaults, htmx in forms:
        sweep = FormSweep(visitors[role], role)
        for as_htmx in (False, True) if htmx else (False,):
            if action in done:
                sweep.all_fields(action, defaults, as_htmx, FEW, RAW)
            elif as_htmx:  # the same form and view: only the answer's shape differs
                sweep.fields(action, defaults, as_htmx, FEW, FEW_RAW)
            else:
                sweep.fields(action, defaults, as_htmx, HOSTILE, FEW_RAW)
        done.add(action)
        problems += sweep.problems
        requests += sweep.requests
    assert not problems, f"{len(problems)} of {requests} requests failed:\n" + "\n".join(problems)


def test_hostile_values_in_the_setup_form_get_errors_not_server_errors(django_user_model):
    """On a new install (no users yet) the first-run form takes hostile values too."""
    client = Client(raise_request_exception=False)
    page = parse(client.get("/setup/"))
    (form,) = [form for form in page.forms
               if form["method"] == "post" and form["action"] != "/settings/language"]
    defaults = {"username": "root", "password1": PASSWORD, "password2": PASSWORD}
    assert set(form["fields"]) - SKIP_FIELDS == set(defaults)

    def fresh_install() -> Client:
        django_user_model.objects.all().delete()
        forget_users()
        client.logout()
        return client

    sweep = FormSweep(fresh_install, "a new install's visitor")
    sweep.fields("/setup/", defaults, False, HOSTILE, FEW_RAW)
    assert not sweep.problems, "\n".join(sweep.problems)


# -- the Django admin --------------------------------------------------------------------------

ADMIN_CONTROLS = {changelist.ALL_VAR, changelist.ORDER_VAR, changelist.PAGE_VAR,
                  changelist.SEARCH_VAR, changelist.ERROR_FLAG, changelist.IS_POPUP_VAR,
                  changelist.TO_FIELD_VAR, changelist.IS_FACETS_VAR}
CHANGELISTS = sorted(name for _route, name, _pattern in ADMIN_ROUTES
                     if name and name.endswith("_changelist"))


def changelist_parameters(client: Client, path: str) -> tuple[set[str], list[dict]]:
    """Return the admin's control parameters and every lookup the changelist's links use
    (filters, sorting, the date hierarchy drilled down to a day), and those links' queries."""
    status, names, page = discover(client, path)
    assert status == 200, f"GET {path}: {status}"
    links, queries = page.links, []
    for _depth in range(3):
        deeper = []
        for query in same_path_queries(links, path):
            queries.append(query)
            if set(query) - names:
                names |= set(query)
                deeper += discover(client, f"{path}?{urlencode(query)}")[2].links
        links = deeper
    return names | ADMIN_CONTROLS, queries


@pytest.fixture
def east_of_utc(settings) -> None:
    """Seoul, whose first hours of year 1 are still year 0 in UTC (SQLite stores UTC)."""
    settings.TIME_ZONE = "Asia/Seoul"


MOMENT = re.compile(r"\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d)?)?|\d\d:\d\d(?::\d\d)?")


def extremes(values: dict, day: str, time: str) -> dict:
    """Return form or query ``values`` with every date, time, or date and time in them (a time
    zone offset stays) replaced by ``day`` and ``time``."""

    def extreme(match: re.Match) -> str:
        found = match.group()
        if ":" not in found:
            return day
        return time if "-" not in found else f"{day} {time}"

    def replace(value: str | list) -> str | list:
        if isinstance(value, list):
            return [replace(item) for item in value]
        return MOMENT.sub(extreme, value, count=1) if MOMENT.match(value) else value

    return {name: replace(value) for name, value in values.items()}


@pytest.mark.slow
@pytest.mark.usefixtures("east_of_utc")
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime")  # on purpose
@pytest.mark.parametrize("name", CHANGELISTS)
def test_hostile_admin_changelist_lookups_never_give_a_server_error(name, visitors, owned):
    """Every parameter × a few values as the superuser (and 1 MB in the search), and in the
    drilled-down date hierarchy each step with the others kept; then, as every kind of visitor,
    every parameter at once with each value, and every parameter repeated."""
    path = reverse(name)
    names, queries = changelist_parameters(visitors["superuser"](), path)
    longest = max(queries, key=len, default={})
    problems, requests = [], 0
    for role in ("anonymous", "owner", "staff", "superuser"):  # one member stands for both
        sweep = Sweep(visitors[role], role, site=False)
        if role == "superuser":
            for parameter in sorted(names):
                sweep.query(path, {}, parameter, FEW, FEW_RAW,
                            big=parameter == changelist.SEARCH_VAR, repeated=False)
            for parameter in sorted(longest) if len(longest) > 1 else ():
                base = {key: value for key, value in longest.items() if key != parameter}
                sweep.query(path, base, parameter, FEW, {}, big=False, repeated=False)
        sweep.everything_at_once(path, names, FEW, FEW_RAW)
        problems += sweep.problems
        requests += sweep.requests
    assert not problems, f"{len(problems)} of {requests} requests failed:\n" + "\n".join(problems)


ADMIN_OBJECT_IDS = ["0", "-1", "9" * 30, str(2**63), "%00", "%ff"]


def admin_path(route: str, object_id: str) -> str | None:
    """Return the admin ``route`` with ``object_id`` in its object's place (None where a
    converter would not take it), other arguments filled with real values."""
    if not CONVERTER.search(route):
        return None
    if "<int:" in route and not object_id.isdigit():
        return None
    content_type = ContentType.objects.get_for_model(Conversation).pk

    def value(converter: str | None, name: str) -> object:
        return content_type if name == "content_type_id" else object_id

    return fill(route, value)


@pytest.mark.slow
@pytest.mark.usefixtures("east_of_utc")
@pytest.mark.parametrize("object_id", ADMIN_OBJECT_IDS)
def test_hostile_object_ids_in_admin_urls_are_not_server_errors(object_id, visitors, owned):
    problems = []
    paths = [admin_path(route, object_id) for route, _name, pattern in ADMIN_ROUTES
             if not isinstance(pattern.pattern, RegexPattern)]
    paths.append(f"/admin/{object_id}/")  # the admin's catch-all pattern
    for role in ("superuser", "staff"):
        if role == "staff" and object_id not in ("9" * 30, "%00"):
            continue  # most of staff's answers are 403s: two values suffice
        sweep = Sweep(visitors[role], role, site=False)
        for path in filter(None, paths):
            sweep.send("get", path, "a hostile object id")
        problems += sweep.problems
    assert not problems, "\n".join(problems)


def our_admin_forms(owned) -> list[str]:
    """Return the add and change pages of the admin classes this project defines."""
    objects = {Conversation: owned["conversation"].pk, Message: owned["reply"].pk,
               UserLimit: owned["conversation"].owner_id}
    pages = []
    for model in apps.get_models():
        if not admin.site.is_registered(model) or (
                type(admin.site.get_model_admin(model)).__module__ != "conversations.admin"):
            continue
        info = f"/admin/{model._meta.app_label}/{model._meta.model_name}"
        instance = model._default_manager.filter(pk=objects.get(model)).first() if (
            model in objects) else model._default_manager.order_by("pk").first()
        pages.append(f"{info}/add/")
        if instance is not None:
            pages.append(f"{info}/{instance.pk}/change/")
    return sorted(pages)


ADMIN_FORM_VALUES = {label: HOSTILE[label] for label in ("year 1", "negative", "30 digits", "NUL")}
# Controls whose values name rows, numbers or switches: the ones that reach a lookup or a save
# (hidden inputs, the inline forms' counts and keys, get every value at once).
NOT_TEXT = {"select", "number", "checkbox", "radio"}


@pytest.mark.slow
@pytest.mark.usefixtures("east_of_utc")
def test_hostile_values_in_our_admin_forms_get_errors_not_server_errors(visitors, owned):
    """The add and change forms of our admin classes, as the superuser: every field at once
    with each value (a form checks each field on its own), and each control that names a row,
    a number or a switch alone, the other fields as the form shows them. The inline forms'
    empty templates (``__prefix__``) are never read; their counts (``…_FORMS``) keep their
    values but on the page with the fewest fields: a huge count makes Django build its most,
    1,000 forms per inline."""
    client = visitors["superuser"]
    pages = our_admin_forms(owned)
    assert len(pages) > 10, pages
    forms = []
    for path in pages:
        response = client().get(path)
        if response.status_code == 200:
            (form,) = [form for form in parse(response).forms
                       if form["method"] == "post" and form["action"] in ("", path)]
            defaults = {name: values for name, values in form["fields"].items()
                        if name not in SKIP_FIELDS and "__prefix__" not in name}
            forms += [(path, form, defaults)] if defaults else []
    sweep = Sweep(client, "superuser", site=False)
    path, _form, defaults = min(
        [page for page in forms if any(name.endswith("_FORMS") for name in page[2])],
        key=lambda page: len(page[2]))
    sweep.send("post", path, "every form count=30 digits", data={
        name: HOSTILE["30 digits"] if name.endswith("_FORMS") else values
        for name, values in defaults.items()})
    for path, form, defaults in forms:
        counts = {name: values for name, values in defaults.items() if name.endswith("_FORMS")}
        for label, value in [*ADMIN_FORM_VALUES.items(), ("1 MB", BIG)]:
            sweep.send("post", path, f"every field={label}",
                       data={**dict.fromkeys(defaults, value), **counts})
        sweep.send("post", path, "every date and time at the start of year 1",
                   data=extremes(defaults, "0001-01-01", "00:00:00"))
        for field in sorted(name for name in defaults if form["kinds"][name] in NOT_TEXT):
            sweep.send("post", path, f"{field}=30 digits",
                       data={**defaults, field: HOSTILE["30 digits"]})
    assert sweep.requests > 50
    assert not sweep.problems, (f"{len(sweep.problems)} of {sweep.requests} requests failed:\n"
                                + "\n".join(sweep.problems))


# -- a member's own text: refused with a clear error, or cleaned -------------------------------

NUL_ERROR = "Null characters are not allowed."


def test_a_message_with_a_nul_byte_is_refused_with_a_clear_error(alice, user, api_key):
    for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
        response = alice.post("/c/new/messages", {"content": "Hello\x00there",
                                                  "model": f"{api_key.pk}:gpt-4o-mini"},
                              **headers)
        assert response.status_code in (200, 400)
        assert NUL_ERROR in error_text(response.content.decode())
    assert not Message.objects.exists()


def test_an_edit_with_a_nul_byte_is_refused_with_a_clear_notice(alice, owned):
    question = owned["question"]
    before = snapshot()

    response = alice.post(f"/m/{question.pk}/edit", {"content": "Which\x00 pie?"}, follow=True)

    assert response.status_code == 200
    assert NUL_ERROR in error_text(response.content.decode())
    assert snapshot() == before


@pytest.mark.parametrize(("title", "error"), [
    ("Party\x00plans", NUL_ERROR),
    ("   ", "This field is required."),
    ("x" * 201, "Ensure this value has at most 200 characters (it has 201)."),
])
def test_a_title_that_cannot_be_taken_is_refused_with_a_clear_notice(alice, owned, title, error):
    conversation = owned["conversation"]

    response = alice.post(f"/c/{conversation.pk}/rename", {"title": title}, follow=True)

    assert response.status_code == 200
    assert error in error_text(response.content.decode())
    conversation.refresh_from_db()
    assert conversation.title == "Party plans"


def test_the_service_refuses_a_nul_byte_as_the_form_does(user, api_key):
    form = MessageForm({"content": "a\x00b", "model": ""}, groups=[])
    assert not form.is_valid() and form.errors["content"] == [NUL_ERROR]
    with pytest.raises(ValidationError) as refused:
        services.message_send(owner=user, conversation=None, content="a\x00b",
                              api_key=api_key, model="gpt-4o-mini")
    assert refused.value.messages == [NUL_ERROR]
    assert not Message.objects.exists()


def replies_finished() -> bool:
    return not Message.objects.filter(status__in=Message.UNFINISHED).exists()


@IN_TRANSACTIONS
def test_unpaired_surrogates_in_a_message_are_stored_as_replacement_characters(
    user, api_key, fake_upstream
):
    """No browser sends them (forms encode text as UTF-8), but a service caller can."""
    question, _reply = services.message_send(
        owner=user, conversation=None, content="caf\udce9 au lait", api_key=api_key,
        model="gpt-4o-mini")
    wait_for(replies_finished, 10)
    edited, _reply = services.message_edit(message=question, content="th\U0001f600 \ud800")
    wait_for(replies_finished, 10)
    conversation = services.conversation_rename(conversation=question.conversation,
                                                title="caf\udce9")

    assert Message.objects.get(pk=question.pk).content == "caf\ufffd au lait"
    assert Message.objects.get(pk=edited.pk).content == "th\U0001f600 \ufffd"
    conversation.refresh_from_db()
    assert conversation.title == "caf\ufffd"


def test_the_last_second_of_year_9999_west_of_utc_is_refused_not_a_server_error(
    settings, visitors, owned
):
    """In New York, 9999-12-31 23:59:59 is already year 10000 in UTC: in every date and time a
    changelist's links carry and in our admin forms."""
    settings.TIME_ZONE = "America/New_York"
    client = visitors["superuser"]
    sweep = Sweep(client, "superuser", site=False)

    for name in CHANGELISTS:
        path, tried = reverse(name), []
        for query in changelist_parameters(client(), path)[1]:
            late = extremes(query, "9999-12-31", "23:59:59")
            if late != query and late not in tried:
                tried.append(late)
                sweep.send("get", path, f"the last second of 9999 in {sorted(query)}", data=late)
    for path in our_admin_forms(owned):
        response = client().get(path)
        forms = [form for form in parse(response).forms
                 if form["method"] == "post" and form["action"] in ("", path)]
        for form in forms:
            defaults = {name: values for name, values in form["fields"].items()
                        if name not in SKIP_FIELDS and "__prefix__" not in name}
            late = extremes(defaults, "9999-12-31", "23:59:59")
            if late != defaults:
                sweep.send("post", path, "every date and time at the end of 9999", data=late)
    assert sweep.requests >= 2, "no date or time found to try"
    assert not sweep.problems, "\n".join(sweep.problems)


def other_admin_pages() -> list[str]:
    """Return every admin page that is no changelist, filled with an existing object."""
    content_type = ContentType.objects.get_for_model(Conversation).pk
    pages = []
    for route, name, pattern in ADMIN_ROUTES:
        if isinstance(pattern.pattern, RegexPattern) or (name or "").endswith("_changelist"):
            continue
        parts = route.split("/")
        try:
            model = apps.get_model(parts[1], parts[2])
        except (LookupError, ValueError, IndexError):
            model = Conversation
        instance = model._default_manager.order_by("pk").first()
        object_id = instance.pk if instance else 1
        pages.append(fill(route, lambda converter, arg, object_id=object_id: (
            content_type if arg == "content_type_id" else object_id)))
    return pages


@pytest.mark.slow
@pytest.mark.usefixtures("east_of_utc")
def test_hostile_query_values_on_the_other_admin_pages_never_give_a_server_error(
    visitors, owned
):
    """Add, change, delete and history pages, the index, login and password pages, as the
    superuser (the authorization matrix turns everyone else away from them): every parameter
    the view reads at once with each of a few values, and repeated. The autocomplete answers
    only for a field that has one, so it is asked for the fields the forms name, each parameter
    on its own, 1 MB in the search term."""
    superuser, problems, fields = visitors["superuser"], [], []
    for path in other_admin_pages():
        _status, names, page = discover(superuser(), path)
        fields += [field for field in page.autocompletes if field not in fields]
        sweep = Sweep(superuser, "superuser", site=False)
        sweep.everything_at_once(path, names | {UNREAD}, FEW, FEW_RAW)
        problems += sweep.problems
    assert fields, "no autocomplete field found to ask for"
    sweep = Sweep(superuser, "superuser", site=False)
    for field in fields:
        names = discover(superuser(), f"/admin/autocomplete/?{urlencode(field)}")[1]
        assert "term" in names
        for parameter in sorted(names):
            base = {name: value for name, value in field.items() if name != parameter}
            sweep.query("/admin/autocomplete/", base, parameter, FEW, FEW_RAW,
                        big=parameter == "term")
    assert not [*problems, *sweep.problems], "\n".join([*problems, *sweep.problems])


# -- hostile attachments -----------------------------------------------------------------------

HTML_PAYLOAD = b"<html><script>alert(document.cookie)</script></html>"


def _attach(client, api_key, name: str, data: bytes, content_type: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post("/c/new/messages", {
        "content": "Look", "model": f"{api_key.pk}:gpt-4o-mini",
        "attachments": [SimpleUploadedFile(name, data, content_type=content_type)]})


def _huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, holding a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def test_a_polyglot_image_is_stored_as_pixels_only_and_never_served_as_html(alice, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from conversations import attachments, uploads
    from tests.helpers import image_bytes

    polyglot = image_bytes() + HTML_PAYLOAD  # a valid PNG, and HTML to a sniffing browser
    prepared = uploads.prepare(SimpleUploadedFile("cat.png", polyglot, content_type="text/html"))
    conversation = Conversation.objects.create(owner=user, title="Poly")
    message = Message.objects.create(conversation=conversation, role=Message.Role.USER,
                                     content="Look")
    [attachment] = attachments.attachments_create(message=message, prepared=[prepared])

    response = alice.get(f"/a/{attachment.pk}")
    body = b"".join(response.streaming_content)

    assert b"<script" not in body and b"<html" not in body
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert not response.get("Content-Disposition", "").startswith("attachment")


@pytest.mark.parametrize(("name", "data", "content_type", "error"), [
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     "image/svg+xml", "is not an image this site takes"),
    ("huge.png", _huge_png(100_000, 100_000), "image/png", "has too many pixels"),
    ("photo.png", HTML_PAYLOAD, "image/png", "is not an image this site takes"),
    ("notes.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "text/plain", "is not a text file"),
    ("report.pdf", HTML_PAYLOAD, "application/pdf", "is not a readable PDF"),
    ("tool.exe", b"MZ\x90\x00", "application/octet-stream", "cannot be attached"),
])
def test_hostile_or_mislabelled_files_are_refused_with_a_clear_message(
        alice, api_key, name, data, content_type, error):
    from conversations.models import Attachment

    started = time.monotonic()
    response = _attach(alice, api_key, name, data, content_type)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert time.monotonic() - started < 5  # the huge PNG is refused from its header
    assert not Attachment.objects.exists() and not Message.objects.exists()
