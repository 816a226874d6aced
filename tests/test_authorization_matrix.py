"""Who may do what, on every URL the site has: a table checked against the URLconf itself.

``EXPECTED`` gives, for each named URL outside the Django admin, what a GET and a POST answer to
four visitors: nobody logged in, the member who owns the conversation in the URL, another
member, and a superuser who does not own it (operators read conversations in the admin, not in
the chat pages). The URL list is walked from ``get_resolver()``, so a URL added without a line
here fails ``test_every_url_has_an_authorization_expectation``. A fifth visitor, a member the
conversation is shared with, gets what another member gets except where ``RECIPIENT`` says.

The Django admin is checked as one group rather than listed URL by URL: its URLs are generated
per registered model (auth, axes and our own models make about ninety), and a table of them
would only restate Django. Instead every admin pattern, filled with existing objects, is
requested generically: anonymous visitors and members are sent to the admin login by GET and
POST and change nothing, a staff user without permissions gets no model page, and a superuser
gets an answer to every GET (not POSTs: those would delete things). A new model, or a custom
admin URL wired up without ``admin_site.admin_view``, is covered without editing this file.

Requests go through ``django.test.Client`` (CSRF checks off: test_pages.py has the CSRF tests).
Replies that a POST starts run in background threads against the fake upstream, so those tests
use transactional databases and wait for the replies to finish.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.urls.resolvers import RegexPattern
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from conftest import PASSWORD, SECRETS, SEEN, wait_for
from conversations import attachments, uploads
from conversations.models import ApiKey, Conversation, Message, Share
from tests.helpers import image_bytes, is_admin, url_patterns

pytestmark = pytest.mark.django_db
# Real transactions where a reply runs in a background thread (it starts on commit) or the
# stream reads the database from its own thread.
IN_TRANSACTIONS = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "owner", "other", "admin")
LOGIN = "login"  # 302 to /accounts/login/?next=<this URL>
ADMIN_LOGIN = "admin login"  # 302 to /admin/login/?next=<this URL>
REDIRECT = "redirect"  # 302 anywhere else

# Text of the owner's conversation: no other visitor may ever receive it.
TITLE = "Surprise party for Bob"  # nothing HTML escaping would change
QUESTION = "Which cake does Bob like?"
ANSWER = "Bob likes carrot cake."


def every(get, post) -> dict[str, tuple]:
    """Return the same (GET, POST) outcome for every visitor."""
    return {role: (get, post) for role in ROLES}


def members(anonymous: tuple, owner: tuple, other: tuple, admin: tuple) -> dict[str, tuple]:
    return {"anonymous": anonymous, "owner": owner, "other": other, "admin": admin}


# An owned object: only its owner gets anywhere; others get a 404 that looks like nothing.
OWNED_PAGE = members((LOGIN, 405), (200, 405), (404, 405), (404, 405))
OWNED_ACTION = members((405, LOGIN), (405, REDIRECT), (405, 404), (405, 404))

EXPECTED: dict[str, dict[str, tuple]] = {
    # The chat pages.
    "conversations:home": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    "conversations:usage": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    # Search: in the visitor's own conversations only (test_search_finds_only_...).
    "conversations:search": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    # Export and import: each member's own conversations, whoever asks (an empty archive for
    # someone without any); an import without a file is refused with the form's error.
    "conversations:export-all": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    "conversations:import": members((LOGIN, LOGIN), (200, 400), (200, 400), (200, 400)),
    # The member's own colour theme: their own setting, nobody else's.
    "conversations:theme": members((405, LOGIN), (405, REDIRECT), (405, REDIRECT), (405, REDIRECT)),
    # A member's own preset: saved for whoever posts it, never for anyone else.
    "conversations:preset-save": members(
        (405, LOGIN), (405, REDIRECT), (405, REDIRECT), (405, REDIRECT)),
    "conversations:message-create-new": members(
        (405, LOGIN), (405, REDIRECT), (405, REDIRECT), (405, REDIRECT)),
    "conversations:detail": OWNED_PAGE,
    "conversations:export": OWNED_PAGE,
    "conversations:message-create": OWNED_ACTION,
    "conversations:rename": OWNED_ACTION,
    "conversations:delete": members(
        (LOGIN, LOGIN), (200, REDIRECT), (404, 404), (404, 404)),
    # The sidebar: pin and archive one's own conversation; the archived ones, one's own.
    "conversations:pin": OWNED_ACTION,
    "conversations:archive": OWNED_ACTION,
    "conversations:archived": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    # Sharing: only the owner shares and revokes; what is shared with a member is theirs to
    # list. A shared conversation's page and copy answer its recipients (RECIPIENT below) and
    # are a 404 for everyone else; its owner is sent to their own page (and may copy it).
    "conversations:share": OWNED_ACTION,
    "conversations:unshare": OWNED_ACTION,
    "conversations:shared": members((LOGIN, 405), (200, 405), (200, 405), (200, 405)),
    "conversations:shared-detail": members((LOGIN, 405), (REDIRECT, 405), (404, 405), (404, 405)),
    "conversations:shared-copy": OWNED_ACTION,
    # The stream answers anonymous visitors with a 404, not a login page: EventSource cannot
    # follow a login, and a 404 says nothing about whether the reply exists.
    "conversations:message-stream": members((404, 405), (200, 405), (404, 405), (404, 405)),
    "conversations:message-stop": OWNED_ACTION,
    "conversations:message-retry": OWNED_ACTION,
    "conversations:message-edit": OWNED_ACTION,
    # A message's attachment: served to readers of the conversation only (its recipients too,
    # RECIPIENT below); a 404 for everyone else, whatever the attachment's number.
    "conversations:attachment": OWNED_PAGE,
    # Open to all: the first-run page is gone once users exist; the health check.
    "conversations:setup": every(404, 404),
    "conversations:healthz": every(200, 405),
    # The language: a member's is remembered with them, a visitor's (login page) in a cookie.
    "conversations:language": every(405, REDIRECT),
    # The translations of the scripts' strings: the same for everyone.
    "javascript-catalog": every(200, 405),
    # Staff only, outside the admin's URL namespace but under its prefix.
    "admin-usage": members(
        (ADMIN_LOGIN, 405), (ADMIN_LOGIN, 405), (ADMIN_LOGIN, 405), (200, 405)),
    # django.contrib.auth.urls.
    "login": every(200, 200),
    "logout": every(405, REDIRECT),
    "password_change": members((LOGIN, LOGIN), (200, 200), (200, 200), (200, 200)),
    "password_change_done": members((LOGIN, LOGIN), (200, 405), (200, 405), (200, 405)),
}

# URLs about one of the owner's objects: for anyone else, nothing may change.
OWNED_OBJECT_URLS = {
    "conversations:detail", "conversations:export", "conversations:message-create", "conversations:rename",
    "conversations:delete", "conversations:message-stream", "conversations:message-stop",
    "conversations:message-retry", "conversations:message-edit", "conversations:pin",
    "conversations:archive", "conversations:share", "conversations:unshare",
    "conversations:shared-detail", "conversations:shared-copy", "conversations:attachment",
}
# POSTs that start a reply (in a background thread) when they succeed.
STARTS_REPLY = {
    "conversations:message-create-new", "conversations:message-create",
    "conversations:message-retry", "conversations:message-edit",
}


# -- the URLconf -----------------------------------------------------------------------------


def test_every_url_has_an_authorization_expectation():
    routes = [(route, name) for route, name, _ in url_patterns() if not is_admin(name, route)]
    unnamed = [route for route, name in routes if name is None]
    missing = sorted(name for _, name in routes if name and name not in EXPECTED)
    stale = sorted(set(EXPECTED) - {name for _, name in routes})

    assert not unnamed, f"URL patterns without a name cannot be checked: {unnamed}"
    assert not missing, f"new URL without an authorization expectation: {missing}"
    assert not stale, f"expectations for URLs that no longer exist: {stale}"


def test_every_admin_pattern_is_checked_by_the_admin_group():
    admin_routes = [route for route, name, _ in url_patterns() if is_admin(name, route)]
    assert len(admin_routes) > 20  # the walk reached the admin's per-model URLs
    assert all(route.startswith("admin/") for route in admin_routes)


# -- who is asking, and about what ------------------------------------------------------------


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def owned(user, api_key):
    """Alice's conversation: her question and a finished reply (so it may be regenerated)."""
    conversation = Conversation.objects.create(
        owner=user, title=TITLE, api_key=api_key, model="gpt-4o-mini"
    )
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=QUESTION, model="gpt-4o-mini"
    )
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content=ANSWER,
        status=Message.Status.COMPLETE, finish_reason="stop", model="gpt-4o-mini",
        api_key=api_key,
    )
    [attachment] = attachments.attachments_create(
        message=question, prepared=[uploads.prepare(SimpleUploadedFile("cake.png", image_bytes()))])
    return {"conversation": conversation, "question": question, "reply": reply,
            "attachment": attachment}


@pytest.fixture
def visitors(user, other_user, superuser) -> dict[str, Callable[[], Client]]:
    """Return, per role, a function that returns that visitor's client, logged in afresh if a
    request logged it out. (One client per role: each new client loads the middleware again,
    and WhiteNoise then indexes every static file.)"""
    accounts = {"anonymous": None, "owner": user, "other": other_user, "admin": superuser}
    clients = {role: Client() for role in accounts}

    def visitor(role: str) -> Callable[[], Client]:
        def get() -> Client:
            client, account = clients[role], accounts[role]
            if account is not None and client.session.get("_auth_user_id") != str(account.pk):
                client.force_login(account)
            return client

        return get

    return {role: visitor(role) for role in accounts}


def url_for(name: str, owned: dict, user) -> str:
    kwargs: dict = {}
    if name in {"conversations:detail", "conversations:export", "conversations:message-create",
                "conversations:rename", "conversations:delete", "conversations:pin",
                "conversations:archive", "conversations:share", "conversations:unshare",
                "conversations:shared-detail", "conversations:shared-copy"}:
        kwargs = {"pk": owned["conversation"].pk}
    elif name in {"conversations:message-stream", "conversations:message-stop",
                  "conversations:message-retry"}:
        kwargs = {"pk": owned["reply"].pk}
    elif name == "conversations:message-edit":
        kwargs = {"pk": owned["question"].pk}
    elif name == "conversations:attachment":
        kwargs = {"pk": owned["attachment"].pk}
    elif name == "password_reset_confirm":
        kwargs = {"uidb64": urlsafe_base64_encode(force_bytes(user.pk)), "token": "bogus-token"}
    return reverse(name, kwargs=kwargs)


def post_data(name: str, api_key) -> dict:
    model = f"{api_key.pk}:gpt-4o-mini"
    return {
        "conversations:message-create-new": {"content": "Hello", "model": model},
        "conversations:message-create": {"content": "And the candles?", "model": model},
        "conversations:rename": {"title": "Renamed"},
        "conversations:message-edit": {"content": "Which cake does Carol like?"},
        "password_reset": {"email": "nobody@example.com"},
    }.get(name, {})


def snapshot() -> tuple:
    """Return every conversation and message row, all fields."""
    return (list(Conversation.objects.order_by("pk").values()),
            list(Message.objects.order_by("pk").values()))


def owners_rows(user) -> tuple:
    return (list(Conversation.objects.filter(owner=user).order_by("pk").values()),
            list(Message.objects.filter(conversation__owner=user).order_by("pk").values()))


def body_of(response) -> str:
    if response.streaming:
        async def read() -> bytes:
            return b"".join([part async for part in response.streaming_content])

        content = async_to_sync(read)() if response.is_async else b"".join(response)
        SEEN.add(f"stream of {response.request['PATH_INFO']}", content)
        return content.decode(errors="replace")  # an archive is binary
    return response.content.decode()


def outcome(response, path: str) -> str | int:
    """Name what ``response`` did: a status code, or where a redirect sends the visitor."""
    if response.status_code != 302:
        return response.status_code
    location = urlsplit(response["Location"])
    comes_back = parse_qs(location.query).get("next") == [path]
    for login_path, label in (("/accounts/login/", LOGIN), ("/admin/login/", ADMIN_LOGIN)):
        if location.path == login_path and comes_back:
            return label
    return REDIRECT


def replies_finished() -> bool:
    return not Message.objects.filter(status__in=Message.UNFINISHED).exists()


MATRIX = [
    pytest.param(name, role, id=f"{name}-{role}",
                 marks=[IN_TRANSACTIONS] if name in STARTS_REPLY | {"conversations:message-stream"}
                 else [])
    for name in EXPECTED for role in ROLES
]


@pytest.mark.parametrize(("name", "role"), MATRIX)
def test_url_answers_each_visitor_as_expected_and_leaks_nothing(
    name, role, visitors, owned, user, api_key, fake_upstream
):
    path = url_for(name, owned, user)
    expected_get, expected_post = EXPECTED[name][role]
    for method, expected in (("get", expected_get), ("post", expected_post)):
        before, owners_before = snapshot(), owners_rows(user)
        data = post_data(name, api_key) if method == "post" else {}

        response = getattr(visitors[role](), method)(path, data)
        body = body_of(response)
        wait_for(replies_finished, 10)

        assert outcome(response, path) == expected, (
            f"{method.upper()} {path} as {role}: {response.status_code} "
            f"{response.get('Location', '')}"
        )
        assert response.status_code < 500
        if role != "owner":
            leaked = [text for text in (TITLE, QUESTION, ANSWER) if text in body]
            assert not leaked, f"{method.upper()} {path} showed {role} the owner's {leaked}"
            assert owners_rows(user) == owners_before, f"{role}'s {method.upper()} {path} " \
                "changed the owner's conversation"
        creates_own = role in ("other", "admin") and name == "conversations:message-create-new"
        if role == "anonymous" or (role != "owner" and not creates_own):
            assert snapshot() == before, f"{role}'s {method.upper()} {path} changed the database"
        if role != "owner" and name in OWNED_OBJECT_URLS:
            assert fake_upstream.chat_requests == [], f"{role} started a reply through {path}"


# What a member the owner's conversation is shared with gets, where it differs from what another
# member gets: they read it (its page, its live reply) and copy it, and nothing more.
RECIPIENT = {
    "conversations:shared-detail": (200, 405),
    "conversations:shared-copy": (405, REDIRECT),
    "conversations:message-stream": (200, 405),
    "conversations:attachment": (200, 405),
}
RECIPIENT_READS = {*RECIPIENT, "conversations:shared"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[IN_TRANSACTIONS] if name in STARTS_REPLY
                 | {"conversations:message-stream"} else []) for name in EXPECTED
])
def test_a_recipient_reads_a_shared_conversation_and_nothing_more(
    name, visitors, owned, user, other_user, api_key, fake_upstream
):
    Share.objects.create(conversation=owned["conversation"], user=other_user, created_by=user)
    path = url_for(name, owned, user)
    expected_get, expected_post = RECIPIENT.get(name, EXPECTED[name]["other"])
    for method, expected in (("get", expected_get), ("post", expected_post)):
        owners_before = owners_rows(user)
        data = post_data(name, api_key) if method == "post" else {}

        response = getattr(visitors["other"](), method)(path, data)
        body = body_of(response)
        wait_for(replies_finished, 10)

        assert outcome(response, path) == expected, (
            f"{method.upper()} {path} as a recipient: {response.status_code} "
            f"{response.get('Location', '')}"
        )
        assert owners_rows(user) == owners_before, f"a recipient's {method.upper()} {path} " \
            "changed the owner's conversation"
        if name not in RECIPIENT_READS:
            leaked = [text for text in (TITLE, QUESTION, ANSWER) if text in body]
            assert not leaked, f"{method.upper()} {path} showed a recipient {leaked}"
    if name in OWNED_OBJECT_URLS:
        assert fake_upstream.chat_requests == [], f"a recipient started a reply through {path}"


@IN_TRANSACTIONS
@pytest.mark.parametrize("name", sorted(STARTS_REPLY))
def test_the_owners_successful_posts_really_act(name, visitors, owned, user, api_key,
                                                 fake_upstream):
    """The REDIRECTs above are the actions working, not a refusal in disguise."""
    replies_before = Message.objects.filter(role=Message.Role.ASSISTANT).count()

    response = visitors["owner"]().post(url_for(name, owned, user), post_data(name, api_key))

    assert response.status_code == 302
    wait_for(replies_finished, 10)
    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() == replies_before + 1
    assert Message.objects.filter(role=Message.Role.ASSISTANT).latest("pk").content == (
        "Hello, world!"
    )
    assert len(fake_upstream.chat_requests) == 1


# -- the Django admin, as one group ------------------------------------------------------------


def fill(route: str, values: dict) -> str:
    """Return ``route`` with each ``<converter:name>`` replaced by ``values[name]``."""
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(values[match.group(1)]), route)


def admin_urls(owned, user) -> list[tuple[str, str]]:
    """Return (label, path) for every admin pattern, filled with existing objects."""
    objects = {
        "conversations/conversation": owned["conversation"].pk,
        "conversations/message": owned["reply"].pk,
        "conversations/apikey": owned["conversation"].api_key_id,
        "auth/user": user.pk,
    }
    conversation_type = ContentType.objects.get_for_model(Conversation)
    urls = []
    for route, name, pattern in url_patterns():
        if not is_admin(name, route):
            continue
        if isinstance(pattern.pattern, RegexPattern):
            path = "/admin/conversations/" if name == "admin:app_list" else "/admin/no-such-page/"
        else:
            model = "/".join(route.split("/")[1:3])
            values = {"object_id": objects.get(model, 1), "id": user.pk,
                      "content_type_id": conversation_type.pk}
            if name == "admin:view_on_site":
                values["object_id"] = owned["conversation"].pk
            path = "/" + fill(route, values)
        urls.append((name or f"unnamed {route}", path))
    return urls


ADMIN_OPEN = {"admin:login"}  # the admin's login page answers everyone


@pytest.mark.parametrize("role", ["anonymous", "owner", "other"])
def test_every_admin_url_turns_away_visitors_who_are_not_staff(
    role, visitors, owned, user, api_key
):
    problems = []
    for label, path in admin_urls(owned, user):
        for method in ("get", "post"):
            before = snapshot(), list(ApiKey.objects.values())
            response = getattr(visitors[role](), method)(path, {})
            got = outcome(response, path)
            if label in ADMIN_OPEN:
                expected = 200
            elif label == "admin:logout":
                expected = REDIRECT  # back to the admin index, which asks for a login
                if response.get("Location") != "/admin/":
                    problems.append(f"{method.upper()} {path}: to {response.get('Location')}")
            else:
                expected = ADMIN_LOGIN
            if got != expected:
                problems.append(f"{method.upper()} {path} ({label}): {got}, not {expected}")
            if (snapshot(), list(ApiKey.objects.values())) != before:
                problems.append(f"{method.upper()} {path} ({label}) changed the database")
            if any(text in response.content.decode() for text in (TITLE, QUESTION, ANSWER)):
                problems.append(f"{method.upper()} {path} ({label}) showed the conversation")
    assert not problems, f"as {role}:\n" + "\n".join(problems)


def test_every_admin_url_answers_a_superuser(visitors, owned, user):
    problems = []
    for label, path in admin_urls(owned, user):
        response = visitors["admin"]().get(path)
        got = outcome(response, path)
        if got in (ADMIN_LOGIN, LOGIN) or response.status_code >= 500:
            problems.append(f"GET {path} ({label}): {got}")
    assert not problems, "\n".join(problems)


def test_superuser_reads_conversations_in_the_admin_not_in_the_chat(visitors, owned):
    conversation = owned["conversation"]
    admin = visitors["admin"]()

    page = admin.get(f"/admin/conversations/conversation/{conversation.pk}/change/")
    assert page.status_code == 200 and TITLE in page.content.decode()
    assert admin.get(f"/c/{conversation.pk}/").status_code == 404


@pytest.mark.parametrize("query", ["Surprise party", "cake", "Bob", "ca", "o"])
def test_search_finds_only_the_visitors_own_conversations(visitors, owned, query):
    link = f"/c/{owned['conversation'].pk}/"
    owner = visitors["owner"]().get("/search/", {"q": query}).content.decode()
    assert link in owner and "<mark>" in owner

    for role in ("other", "admin"):
        page = visitors[role]().get("/search/", {"q": query}).content.decode()
        assert link not in page and "<mark>" not in page, role
        assert not any(text in page for text in (TITLE, QUESTION, ANSWER)), role


@pytest.fixture
def staff(django_user_model):
    """A staff member without any permission."""
    return django_user_model.objects.create_user("stafford", password=PASSWORD, is_staff=True)


MODEL_PAGE = re.compile(r"admin:[a-z]+_[a-z]+_(changelist|add|change|delete|history|password_change)$")


def test_staff_without_permissions_gets_no_model_page_of_the_admin(staff, owned, user):
    client = Client()
    client.force_login(staff)
    problems = []
    for label, path in admin_urls(owned, user):
        if not MODEL_PAGE.match(label):
            continue
        response = client.get(path)
        # 403, or for an object id that does not exist (models this file creates no row of)
        # the admin's "no such object" redirect to its index: never the page itself.
        if response.status_code != 403 and not (
            response.status_code == 302 and response["Location"] == "/admin/"
        ):
            problems.append(f"GET {path} ({label}): {response.status_code}")
        if TITLE in response.content.decode() or QUESTION in response.content.decode():
            problems.append(f"GET {path} ({label}) showed the conversation")
    assert not problems, "\n".join(problems)


# -- API keys in the admin ---------------------------------------------------------------------

ADD_KEY = "/admin/conversations/apikey/add/"


def key_form(secret: str, name: str = "Stolen key") -> dict:
    SECRETS.add(secret)
    return {"name": name, "secret": secret, "base_url": "http://127.0.0.1:9/v1",
            "organization": "", "project": "", "default_model": "",
            "is_active": "on", "_save": "Save"}


def test_superuser_adds_and_changes_api_keys(superuser, api_key):
    client = Client()
    client.force_login(superuser)

    assert client.get(ADD_KEY).status_code == 200
    response = client.post(ADD_KEY, key_form("sk-matrix-added-0123456789abcdef", "New key"))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ApiKey.objects.filter(name="New key").exists()
    change = f"/admin/conversations/apikey/{api_key.pk}/change/"
    assert client.get(change).status_code == 200
    # The same destination as the key's: a rename needs no secret (moving it would).
    response = client.post(change, {**key_form("", "Renamed key"), "secret": "",
                                    "base_url": api_key.base_url,
                                    "organization": api_key.organization,
                                    "project": api_key.project})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ApiKey.objects.get(pk=api_key.pk).name == "Renamed key"


@pytest.mark.parametrize("who", ["staff without permissions", "superuser who is not staff",
                                 "member", "anonymous"])
def test_only_staff_superusers_may_add_or_change_api_keys(who, django_user_model, api_key, user):
    accounts = {
        "staff without permissions": lambda: django_user_model.objects.create_user(
            "stafford", is_staff=True),
        "superuser who is not staff": lambda: django_user_model.objects.create_user(
            "root", is_superuser=True, is_staff=False),
        "member": lambda: user,
        "anonymous": lambda: None,
    }
    client = Client()
    account = accounts[who]()
    if account is not None:
        client.force_login(account)
    change = f"/admin/conversations/apikey/{api_key.pk}/change/"
    before = list(ApiKey.objects.values())
    expected = 403 if who == "staff without permissions" else ADMIN_LOGIN

    for method, path, data in [
        ("get", ADD_KEY, {}),
        ("post", ADD_KEY, key_form("sk-matrix-forged-0123456789abcdef")),
        ("get", change, {}),
        ("post", change, key_form("sk-matrix-swapped-0123456789abcdef", "Hijacked")),
    ]:
        response = getattr(client, method)(path, data)
        assert outcome(response, path) == expected, f"{method.upper()} {path}"

    assert list(ApiKey.objects.values()) == before


def test_staff_with_only_the_view_permission_cannot_add_or_change_keys(
    django_user_model, api_key
):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client = Client()
    client.force_login(viewer)
    change = f"/admin/conversations/apikey/{api_key.pk}/change/"
    before = list(ApiKey.objects.values())

    assert client.get(change).status_code == 200  # read-only
    assert client.get(ADD_KEY).status_code == 403
    assert client.post(ADD_KEY, key_form("sk-matrix-viewer-0123456789abcdef")).status_code == 403
    assert client.post(change, key_form("sk-matrix-viewer2-0123456789abcdef",
                                        "Hijacked")).status_code == 403
    assert list(ApiKey.objects.values()) == before
