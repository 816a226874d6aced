"""What a member sees and may do on the pages, short of how a reply streams (test_replies.py).

Pages are read through the Django test client against the real database; the model list comes
from the fake upstream over HTTP. HTML is inspected with a small stdlib parser so that tests
check elements and their attributes (labels, aria attributes, htmx attributes), not spelling.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from conftest import PASSWORD, wait_for
from conversations import replies
from conversations.models import Conversation, Message
from conversations.text import isolate
from devtools.fake_upstream import Scenario
from tests.helpers import Element, finished_reply, page

# -- reading pages ---------------------------------------------------------------------------

def labelled(document: Element, label_text: str) -> Element:
    """Return the control whose <label for=…> reads ``label_text``."""
    labels = [label for label in document.find_all("label") if label.text == label_text]
    assert len(labels) == 1, f"expected one label {label_text!r}, found {len(labels)}"
    control_id = labels[0].attrs.get("for")
    assert control_id, f"the label {label_text!r} names no control"
    return document.find(id=control_id)


def sidebar_titles(document: Element) -> list[str]:
    return [link.text for link in document.find("ul", class_="conversation-list").find_all("a")]


def form_token(document: Element, action: str | None = None) -> str:
    forms = document.find_all("form")
    if action is not None:
        forms = [form for form in forms if form.attrs.get("action") == action]
    return forms[0].find("input", name="csrfmiddlewaretoken").attrs["value"]


# -- data ------------------------------------------------------------------------------------


def conversation_of(owner, title: str = "Trip plans", api_key=None, **fields) -> Conversation:
    return Conversation.objects.create(
        owner=owner, title=title, api_key=api_key, model=fields.pop("model", "gpt-4o-mini"),
        **fields,
    )


def exchange(conversation: Conversation, reply_status: str = Message.Status.COMPLETE,
             question: str = "Where should we go?", answer: str = "Lisbon.") -> Message:
    """Store a question and its reply in ``conversation``; return the reply."""
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content=answer,
        status=reply_status, model=conversation.model, api_key=conversation.api_key,
    )


def choice(api_key, model: str = "gpt-4o-mini") -> str:
    return f"{api_key.pk}:{model}"


HTMX = {"HTTP_HX_REQUEST": "true"}


# -- signing in ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/c/{conversation}/"])
def test_anonymous_visitor_is_sent_to_login_and_back(client, user, path):
    path = path.format(conversation=conversation_of(user).pk)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.django_db
def test_login_with_username_and_password_lands_on_the_chat_page(client, user):
    login_page = page(client.get("/accounts/login/?next=/"))
    assert labelled(login_page, "Username").attrs["name"] == "username"
    assert labelled(login_page, "Password").attrs["type"] == "password"

    response = client.post("/accounts/login/", {
        "username": "alice", "password": PASSWORD, "next": "/",
    }, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert page(response).find("a", class_="new-chat").text == "New chat"
    assert "alice" in page(response).find("div", class_="account").text


@pytest.mark.django_db
def test_wrong_password_stays_on_login_page_with_an_error(client, user):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert page(response).find(role="alert").text.startswith("Please enter a correct username")
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_logout_from_the_page_form_ends_the_session(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    home = page(browser.get("/"))
    logout_form = home.find("form", action="/accounts/logout/")
    assert logout_form.attrs["method"] == "post"

    response = browser.post("/accounts/logout/", {
        "csrfmiddlewaretoken": form_token(home, "/accounts/logout/"),
    })

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert browser.get("/")["Location"] == "/accounts/login/?next=/"


def test_a_member_changes_their_password_from_the_chat_page(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    link = page(browser.get("/")).find("a", href="/accounts/password_change/")
    assert link.text == "Change password"
    form = page(browser.get(link.attrs["href"]))
    response = browser.post("/accounts/password_change/", {
        "csrfmiddlewaretoken": form_token(form),
        "old_password": PASSWORD, "new_password1": "a new long passphrase 42",
        "new_password2": "a new long passphrase 42",
    })
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password_change/done/"
    user.refresh_from_db()
    assert user.check_password("a new long passphrase 42")
    assert browser.get("/").status_code == 200  # still logged in


@pytest.mark.django_db
def test_logout_by_get_is_refused(alice):
    assert alice.get("/accounts/logout/").status_code == 405
    assert alice.get("/").status_code == 200


# -- new install -----------------------------------------------------------------------------

SETUP = {"username": "root", "password1": PASSWORD, "password2": PASSWORD}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/c/1/", "/accounts/login/", "/admin/"])
def test_new_install_sends_every_page_to_setup(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == "/setup/"


@pytest.mark.django_db
def test_setup_form_asks_for_username_and_password_twice(client):
    document = page(client.get("/setup/"))

    assert labelled(document, "Username").attrs["name"] == "username"
    assert labelled(document, "Password").attrs["type"] == "password"
    assert labelled(document, "Password again").attrs["type"] == "password"


@pytest.mark.django_db
@pytest.mark.parametrize(("password1", "password2", "error"), [
    (PASSWORD, PASSWORD + "!", "The two passwords differ."),
    ("12345678", "12345678", "This password is too common."),
    ("x7#q", "x7#q", "This password is too short."),
    ("administrator1", "administrator1", "The password is too similar to the username."),
])
def test_setup_with_bad_password_shows_error_and_creates_nobody(
    client, password1, password2, error
):
    response = client.post("/setup/", {"username": "administrator", "password1": password1,
                                       "password2": password2})

    assert response.status_code == 200
    errors = " ".join(alert.text for alert in page(response).find_all(role="alert"))
    assert error in errors
    assert not get_user_model().objects.exists()
    assert client.get("/")["Location"] == "/setup/"


@pytest.mark.django_db
def test_setup_creates_logged_in_superuser_and_opens_api_key_form(client):
    response = client.post("/setup/", SETUP)

    assert response.status_code == 302
    assert response["Location"] == "/admin/conversations/apikey/add/"
    admin = get_user_model().objects.get()
    assert (admin.username, admin.is_superuser, admin.is_staff) == ("root", True, True)
    assert admin.check_password(PASSWORD)
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.django_db
def test_setup_is_gone_for_good_once_the_administrator_exists(client):
    client.post("/setup/", SETUP)
    stranger = Client()

    assert client.get("/setup/").status_code == 404
    assert stranger.get("/setup/").status_code == 404
    assert stranger.post("/setup/", {**SETUP, "username": "intruder"}).status_code == 404
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["root"]
    assert stranger.get("/")["Location"] == "/accounts/login/?next=/"


@pytest.mark.django_db
def test_setup_is_404_on_an_install_with_users(client, user):
    assert client.get("/setup/").status_code == 404
    assert client.post("/setup/", SETUP).status_code == 404
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("with_users", [False, True])
def test_health_check_answers_ok_without_login(client, django_user_model, with_users):
    if with_users:
        django_user_model.objects.create_user("alice", password=PASSWORD)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- the chat page ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_chat_page_controls_have_accessible_names(alice, api_key):
    document = page(alice.get("/"))

    message = labelled(document, "Message")
    assert (message.tag, message.attrs["name"]) == ("textarea", "content")
    model = labelled(document, "Model")
    assert (model.tag, model.attrs["name"]) == ("select", "model")
    options = {option.text: option.attrs["value"] for option in model.find_all("option")}
    assert options == {"gpt-4o-mini": choice(api_key), "gpt-4o": choice(api_key, "gpt-4o")}
    assert "text-embedding-3-small" not in alice.get("/").content.decode()
    selected = [option.text for option in model.find_all("option") if "selected" in option.attrs]
    assert selected == ["gpt-4o-mini"]  # the key's default model
    send = [b for b in document.find("form", id="composer").find_all("button") if b.text == "Send"]
    assert len(send) == 1 and send[0].attrs["type"] == "submit"
    assert document.find("a", class_="new-chat").attrs["href"] == "/"
    assert document.find("a", class_="new-chat").text == "New chat"


@pytest.mark.django_db
def test_unfinished_reply_sits_in_a_polite_live_region(alice, user, api_key):
    conversation = conversation_of(user, api_key=api_key)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content="Hi")
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Hel",
        status=Message.Status.STREAMING, model="gpt-4o-mini", api_key=api_key,
    )

    document = page(alice.get(f"/c/{conversation.pk}/"))

    bubble = document.find("article", id=f"message-{reply.pk}")
    assert bubble.attrs["sse-connect"] == f"/m/{reply.pk}/stream?offset=3"
    assert bubble.attrs["sse-close"] == "done"
    live = bubble.find(aria_live="polite")
    assert live.text == "Hel"
    assert [b.text for b in bubble.find_all("button")] == ["Stop"]


@pytest.mark.django_db
def test_finished_reply_is_not_streamed(alice, user, api_key):
    conversation = conversation_of(user, api_key=api_key)
    reply = exchange(conversation)

    document = page(alice.get(f"/c/{conversation.pk}/"))

    bubble = document.find("article", id=f"message-{reply.pk}")
    assert "sse-connect" not in bubble.attrs
    assert bubble.find_all(aria_live="polite") == []
    assert "Lisbon." in bubble.text


@pytest.mark.django_db
def test_chat_page_preselects_the_conversations_model(alice, user, api_key):
    conversation = conversation_of(user, api_key=api_key, model="gpt-4o")

    document = page(alice.get(f"/c/{conversation.pk}/"))

    assert labelled(document, "Model").find("option", selected="").text == "gpt-4o"
    composer = document.find("form", id="composer")
    assert composer.attrs["action"] == composer.attrs["hx-post"] == (
        f"/c/{conversation.pk}/messages"
    )


@pytest.mark.django_db
def test_model_list_is_fetched_once_and_cached(alice, api_key, fake_upstream):
    cache.clear()

    first = alice.get("/")
    second = alice.get("/")

    model_requests = [r for r in fake_upstream.requests if r.path.startswith("/v1/models")]
    assert len(model_requests) == 1
    assert model_requests[0].method == "GET"
    assert model_requests[0].headers["openai-organization"] == "org-team"
    assert model_requests[0].headers["openai-project"] == "proj_chat"
    for response in (first, second):
        options = labelled(page(response), "Model").find_all("option")
        assert {option.text for option in options} == {"gpt-4o-mini", "gpt-4o"}


@pytest.mark.django_db
def test_failed_model_list_still_offers_fallback_and_default_models(
    alice, make_api_key, fake_upstream
):
    cache.clear()
    fake_upstream.models_status = 500
    key = make_api_key(default_model="team-model-1")

    response = alice.get("/")

    assert response.status_code == 200
    offered = [o.text for o in labelled(page(response), "Model").find_all("option")]
    assert offered[0] == "team-model-1"
    assert set(offered) == {"team-model-1", *settings.CHATSITE_FALLBACK_MODELS}
    assert alice.post("/c/new/messages", {"content": "Hi", "model": choice(key, "team-model-1")},
                      **HTMX).status_code == 200
    assert Message.objects.filter(content="Hi").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("inactive_key", [False, True])
def test_page_says_no_api_key_is_set_up(alice, make_api_key, inactive_key):
    if inactive_key:
        make_api_key(is_active=False)

    response = alice.get("/")

    assert response.status_code == 200
    document = page(response)
    assert "No API key is set up yet." in document.find("p", class_="notice").text
    assert labelled(document, "Model").find_all("option") == []


@pytest.mark.django_db
def test_sidebar_lists_only_own_conversations_newest_first(alice, user, other_user):
    now = timezone.now()
    for title, owner, minutes_ago in [
        ("Old budget", user, 30), ("Mallory's secret plan", other_user, 5),
        ("Fresh idea", user, 1), ("Middle draft", user, 10),
    ]:
        Conversation.objects.filter(pk=conversation_of(owner, title).pk).update(
            updated_at=now - timezone.timedelta(minutes=minutes_ago)
        )

    response = alice.get("/")

    assert sidebar_titles(page(response)) == ["Fresh idea", "Middle draft", "Old budget"]
    assert "secret plan" not in response.content.decode()


@pytest.mark.django_db
def test_new_member_sees_no_chats_yet(alice, other_user):
    conversation_of(other_user, "Mallory's secret plan")

    response = alice.get("/")

    assert sidebar_titles(page(response)) == []
    assert "No chats yet." in response.content.decode()
    assert "secret plan" not in response.content.decode()


# -- ownership -------------------------------------------------------------------------------

OTHERS_URLS = [
    ("get", "/c/{conversation}/", {}),
    ("post", "/c/{conversation}/messages", {"content": "Hi", "model": "{model}"}),
    ("post", "/c/{conversation}/rename", {"title": "Pwned"}),
    ("get", "/c/{conversation}/delete", {}),
    ("post", "/c/{conversation}/delete", {}),
    ("get", "/m/{message}/stream", {}),
    ("post", "/m/{message}/stop", {}),
    ("post", "/m/{message}/retry", {}),
]


def snapshot(conversation: Conversation) -> tuple:
    """Return everything a request about ``conversation`` could change."""
    return (
        Conversation.objects.count(),
        list(Conversation.objects.filter(pk=conversation.pk).values_list("title", "updated_at")),
        list(Message.objects.filter(conversation=conversation).values_list(
            "id", "status", "content", "cancel_requested", "superseded",
        )),
        Message.objects.count(),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("reply_status", [Message.Status.STREAMING, Message.Status.ERROR])
@pytest.mark.parametrize(("method", "url", "data"), OTHERS_URLS)
def test_other_users_conversation_is_404_and_left_alone(
    alice, other_user, api_key, method, url, data, reply_status, fake_upstream
):
    conversation = conversation_of(other_user, "Mallory's plans", api_key=api_key)
    message = exchange(conversation, reply_status=reply_status)
    before = snapshot(conversation)
    url = url.format(conversation=conversation.pk, message=message.pk)
    data = {name: value.format(model=choice(api_key)) for name, value in data.items()}

    response = getattr(alice, method)(url, data)

    assert response.status_code == 404
    assert "Mallory" not in response.content.decode()
    assert snapshot(conversation) == before
    assert replies.live() == []
    assert fake_upstream.chat_requests == []


@pytest.mark.django_db
def test_missing_conversation_is_404(alice):
    assert alice.get("/c/999999/").status_code == 404
    assert alice.get("/m/999999/stream").status_code == 404


# -- CSRF ------------------------------------------------------------------------------------


@pytest.fixture
def strict_alice(user) -> Client:
    """Alice in a client that checks CSRF tokens, as a real browser session is checked."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    return browser


@pytest.mark.django_db(transaction=True)
def test_a_message_shown_before_to_another_session_carries_this_sessions_csrf_token(
    user, api_key, fake_upstream
):
    """Finished messages are rendered once and reused (conversations/fragments.py): the forms in
    them must still carry the token of the session viewing the page, or Edit would be refused."""
    fake_upstream.queue(Scenario(tokens=["Dogs then"]))
    conversation = conversation_of(user, api_key=api_key)
    exchange(conversation, question="Tell me about cats", answer="Cats.")
    question = Message.objects.get(role="user")
    first_session = Client(enforce_csrf_checks=True)
    first_session.force_login(user)
    first_session.get(f"/c/{conversation.pk}/")  # renders and keeps the fragments
    second_session = Client(enforce_csrf_checks=True)
    second_session.force_login(user)
    document = page(second_session.get(f"/c/{conversation.pk}/"))
    edit_form = document.find("form", action=f"/m/{question.pk}/edit")
    token = edit_form.find("input", name="csrfmiddlewaretoken").attrs["value"]

    response = second_session.post(f"/m/{question.pk}/edit", {
        "content": "Tell me about dogs", "csrfmiddlewaretoken": token,
    })

    assert response.status_code == 302
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert reply.content == "Dogs then"
    assert "csrf-" not in second_session.get(f"/c/{conversation.pk}/").content.decode()


@pytest.mark.django_db
def test_a_reply_changed_after_a_view_shows_its_new_state_on_the_next_view(alice, user):
    conversation = conversation_of(user)
    reply = exchange(conversation, answer="First draft.")
    assert "First draft." in alice.get(f"/c/{conversation.pk}/").content.decode()

    # Rows change without save() too (the reply engine writes with UPDATE).
    Message.objects.filter(pk=reply.pk).update(content="Second draft.",
                                               content_html="<p>Second draft.</p>")
    assert "Second draft." in alice.get(f"/c/{conversation.pk}/").content.decode()
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.ERROR,
                                               error_message="The provider stopped.")
    document = page(alice.get(f"/c/{conversation.pk}/"))

    shown = document.find("article", id=f"message-{reply.pk}")
    assert "Second draft." in shown.text and "First draft." not in shown.text
    assert "The provider stopped." in shown.text
    assert shown.find("form", id=f"actions-{reply.pk}").find("button").text == "Retry"


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "data"), [
    ("/c/new/messages", {"content": "Hi", "model": "{model}"}),
    ("/c/{conversation}/messages", {"content": "Hi", "model": "{model}"}),
    ("/c/{conversation}/rename", {"title": "Forged"}),
    ("/c/{conversation}/delete", {}),
    ("/m/{message}/stop", {}),
    ("/m/{message}/retry", {}),
])
@pytest.mark.parametrize("reply_status", [Message.Status.STREAMING, Message.Status.ERROR])
def test_post_without_csrf_token_is_refused_and_changes_nothing(
    strict_alice, user, api_key, url, data, reply_status
):
    conversation = conversation_of(user, "My plans", api_key=api_key)
    message = exchange(conversation, reply_status=reply_status)
    strict_alice.get(f"/c/{conversation.pk}/")  # the browser holds a csrftoken cookie
    before = snapshot(conversation)
    url = url.format(conversation=conversation.pk, message=message.pk)
    data = {name: value.format(model=choice(api_key)) for name, value in data.items()}

    response = strict_alice.post(url, data, **HTMX)

    assert response.status_code == 403
    assert snapshot(conversation) == before


@pytest.mark.django_db
def test_page_hands_htmx_the_csrf_token_on_body(strict_alice, user, api_key):
    conversation = conversation_of(user, api_key=api_key)
    document = page(strict_alice.get(f"/c/{conversation.pk}/"))
    headers = json.loads(document.find("body").attrs["hx-headers"])
    assert set(headers) == {"X-CSRFToken"}

    # What htmx does: post the form with the token from <body hx-headers> as a header.
    # A plain django_db test: the reply is never started (no commit), which is all this needs.
    response = strict_alice.post(
        f"/c/{conversation.pk}/messages", {"content": "Hi there", "model": choice(api_key)},
        HTTP_X_CSRFTOKEN=headers["X-CSRFToken"], **HTMX,
    )

    assert response.status_code == 200
    assert conversation.messages.filter(role="user", content="Hi there").exists()


@pytest.mark.django_db
def test_send_with_cookie_token_as_header_works(strict_alice, user, api_key):
    strict_alice.get("/")

    response = strict_alice.post(
        "/c/new/messages", {"content": "Hi there", "model": choice(api_key)},
        HTTP_X_CSRFTOKEN=strict_alice.cookies["csrftoken"].value, **HTMX,
    )

    assert response.status_code == 200
    assert Message.objects.filter(role="user", content="Hi there").exists()


@pytest.mark.django_db
def test_send_with_form_token_works_without_javascript(strict_alice, user, api_key):
    document = page(strict_alice.get("/"))

    response = strict_alice.post("/c/new/messages", {
        "content": "Hi there", "model": choice(api_key),
        "csrfmiddlewaretoken": form_token(document, "/c/new/messages"),
    })

    assert response.status_code == 302
    assert Message.objects.filter(role="user", content="Hi there").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("enforce_csrf", [False, True])
def test_stream_url_answers_only_get_and_post_does_not_restart_reply(
    user, api_key, fake_upstream, enforce_csrf
):
    browser = Client(enforce_csrf_checks=enforce_csrf)
    browser.force_login(user)
    conversation = conversation_of(user, api_key=api_key)
    reply = exchange(conversation, reply_status=Message.Status.ERROR, answer="Half an ans")
    before = snapshot(conversation)

    response = browser.post(f"/m/{reply.pk}/stream")

    if enforce_csrf:
        assert response.status_code == 403
    else:
        assert response.status_code == 405
        assert response["Allow"] == "GET"
    assert snapshot(conversation) == before
    assert replies.live() == []
    assert fake_upstream.chat_requests == []


# -- sending ---------------------------------------------------------------------------------


def finished(reply: Message):
    """Return the stored reply once generation has left it final, else None."""
    reply.refresh_from_db()
    return reply if not reply.is_unfinished else None


@pytest.mark.django_db(transaction=True)
def test_first_message_starts_a_titled_conversation_and_redirects_to_the_reply(
    alice, user, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(hang_after=0))
    text = "Plan a   three-day trip to Lisbon with good food, museums and a day at the beach"

    response = alice.post("/c/new/messages", {"content": text, "model": choice(api_key, "gpt-4o")})

    conversation = Conversation.objects.get()
    question, reply = conversation.messages.order_by("id")
    assert response.status_code == 302
    assert response["Location"] == f"/c/{conversation.pk}/#message-{reply.pk}"
    assert (conversation.owner, conversation.api_key, conversation.model) == (
        user, api_key, "gpt-4o"
    )
    assert conversation.title.startswith("Plan a three-day trip to Lisbon with good food")
    assert len(conversation.title) <= 60 and conversation.title.endswith("…")
    assert (question.role, question.content) == ("user", text)
    assert (reply.role, reply.model) == ("assistant", "gpt-4o")
    assert reply.status in (Message.Status.PENDING, Message.Status.STREAMING)

    document = page(alice.get(f"/c/{conversation.pk}/"))
    assert sidebar_titles(document) == [conversation.title]
    assert "sse-connect" in document.find("article", id=f"message-{reply.pk}").attrs

    # A release only frees streams the fake has already taken, so repeat it until one has.
    assert wait_for(lambda: fake_upstream.release() or finished(reply)).content == "Hello, world!"


@pytest.mark.django_db(transaction=True)
def test_first_message_from_htmx_redirects_the_browser_to_the_new_chat(
    alice, api_key, fake_upstream
):
    response = alice.post("/c/new/messages", {"content": "Hello", "model": choice(api_key)},
                          **HTMX)

    conversation = Conversation.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/c/{conversation.pk}/"
    reply = conversation.messages.get(role="assistant")
    wait_for(lambda: finished(reply))


@pytest.mark.django_db(transaction=True)
def test_message_in_existing_chat_answers_with_both_bubbles(alice, user, api_key, fake_upstream):
    conversation = conversation_of(user, "Trip plans", api_key=api_key)
    earlier = exchange(conversation)

    response = alice.post(f"/c/{conversation.pk}/messages",
                          {"content": "And <b>Porto</b>?", "model": choice(api_key)}, **HTMX)

    assert response.status_code == 200
    assert "chat:sent" in json.loads(response["HX-Trigger"])
    question = conversation.messages.get(role="user", content="And <b>Porto</b>?")
    reply = conversation.messages.exclude(pk=earlier.pk).get(role="assistant")
    user_bubble, reply_bubble = page(response).find_all("article")
    assert user_bubble.attrs["id"] == f"message-{question.pk}"
    assert "message--user" in user_bubble.attrs["class"]
    assert "And <b>Porto</b>?" in user_bubble.text  # shown as text, not markup
    assert user_bubble.find_all("b") == []
    assert reply_bubble.attrs["id"] == f"message-{reply.pk}"
    assert reply_bubble.attrs["sse-connect"] == f"/m/{reply.pk}/stream?offset=0"
    assert reply_bubble.attrs["sse-close"] == "done"
    assert reply_bubble.find(aria_live="polite").text == ""
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"  # an existing title is kept
    wait_for(lambda: finished(reply))


# -- bad input loses nothing ----------------------------------------------------------------

TYPED = "Plan my trip to Kraków & back"


@pytest.fixture
def bad_inputs(api_key, make_api_key):
    other = make_api_key(is_active=False)
    return {
        "empty": ("", choice(api_key, "gpt-4o"), "Write a message first."),
        "blank": ("   \n ", choice(api_key, "gpt-4o"), "Write a message first."),
        "too long": ("x" * 100_001, choice(api_key, "gpt-4o"),
                     "Ensure this value has at most 100000 characters"),
        "model not offered": (TYPED, choice(api_key, "gpt-evil"), "That model is not available"),
        "embedding model": (TYPED, choice(api_key, "text-embedding-3-small"),
                            "That model is not available"),
        "inactive key": (TYPED, choice(other, "gpt-4o"), "That model is not available"),
        "no such key": (TYPED, "999999:gpt-4o", "That model is not available"),
        "no model": (TYPED, "", "This field is required."),
    }


BAD_INPUTS = ["empty", "blank", "too long", "model not offered", "embedding model", "inactive key",
              "no such key", "no model"]


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_message_from_htmx_shows_error_and_stores_nothing(
    alice, user, api_key, bad_inputs, case, existing
):
    content, model, error = bad_inputs[case]
    conversation = conversation_of(user, api_key=api_key) if existing else None
    url = f"/c/{conversation.pk}/messages" if existing else "/c/new/messages"

    response = alice.post(url, {"content": content, "model": model}, **HTMX)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#form-errors"
    errors = page(response).find(id="form-errors")
    assert errors.attrs["role"] == "alert"
    assert error in errors.text
    assert not Message.objects.exists()
    assert Conversation.objects.count() == (1 if existing else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_message_without_javascript_keeps_typed_text(
    alice, user, api_key, bad_inputs, case, existing
):
    content, model, error = bad_inputs[case]
    conversation = conversation_of(user, api_key=api_key) if existing else None
    url = f"/c/{conversation.pk}/messages" if existing else "/c/new/messages"

    response = alice.post(url, {"content": content, "model": model})

    assert response.status_code == 400
    document = page(response)
    assert error in document.find(id="form-errors").text
    assert labelled(document, "Message").text == " ".join(content.split())
    if "Write a message" in error or "at most" in error:  # the model picked is kept too
        selected = labelled(document, "Model").find("option", selected="")
        assert selected.attrs["value"] == model
    assert not Message.objects.exists()
    assert Conversation.objects.count() == (1 if existing else 0)
    if existing:
        assert document.find("input", id="id_title").attrs["value"] == "Trip plans"


# -- rename and delete -----------------------------------------------------------------------


@pytest.mark.django_db
def test_rename_shows_new_title_in_sidebar_and_window_title(alice, user):
    conversation = conversation_of(user, "Trip plans")

    response = alice.post(f"/c/{conversation.pk}/rename", {"title": "  Lisbon in May  "})

    assert response.status_code == 302
    assert response["Location"] == f"/c/{conversation.pk}/"
    document = page(alice.get(response["Location"]))
    assert sidebar_titles(document) == ["Lisbon in May"]
    # The window title holds the title as one bidirectional isolate (test_bidi_isolation.py).
    assert document.find("title").text == isolate("Lisbon in May") + " · chatsite"
    assert labelled(document, "Title").attrs["value"] == "Lisbon in May"


@pytest.mark.django_db
def test_chat_title_is_shown_as_text_not_markup(alice, user):
    conversation = conversation_of(user, "<img src=x onerror=alert(1)>")

    document = page(alice.get(f"/c/{conversation.pk}/"))

    assert sidebar_titles(document) == ["<img src=x onerror=alert(1)>"]
    assert document.find("title").text == isolate("<img src=x onerror=alert(1)>") + " · chatsite"
    assert document.find_all("img") == []


@pytest.mark.django_db
def test_rename_to_nothing_keeps_the_title(alice, user):
    conversation = conversation_of(user, "Trip plans")

    alice.post(f"/c/{conversation.pk}/rename", {"title": "   "})

    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"


@pytest.mark.django_db
def test_delete_asks_for_confirmation_first(alice, user):
    conversation = conversation_of(user, "Trip plans")
    exchange(conversation)

    response = alice.get(f"/c/{conversation.pk}/delete")

    assert response.status_code == 200
    document = page(response)
    assert "Trip plans" in document.find("main").text
    form = document.find("main").find("form")
    assert form.attrs["method"] == "post"
    assert [b.text for b in form.find_all("button")] == ["Delete"]
    assert form.find("a").attrs["href"] == f"/c/{conversation.pk}/"
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.count() == 2


@pytest.mark.django_db
def test_delete_removes_the_chat_and_returns_home(alice, user):
    kept = conversation_of(user, "Keep me")
    conversation = conversation_of(user, "Trip plans")
    exchange(conversation)

    response = alice.post(f"/c/{conversation.pk}/delete")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert list(Conversation.objects.all()) == [kept]
    assert not Message.objects.exists()
    assert sidebar_titles(page(alice.get("/"))) == ["Keep me"]
    assert alice.get(f"/c/{conversation.pk}/").status_code == 404



@pytest.mark.django_db
def test_a_conversation_exports_as_markdown_and_json_for_its_owner_only(alice, user, other_user):
    conversation = Conversation.objects.create(owner=user, title="Trip plan", model="gpt-4o")
    Message.objects.create(conversation=conversation, role="user", content="Where to?")
    Message.objects.create(conversation=conversation, role="assistant", content="**Lisbon**",
                           model="gpt-4o", status="cancelled")
    markdown = alice.get(f"/c/{conversation.pk}/export")
    assert markdown["Content-Disposition"] == 'attachment; filename="trip-plan.md"'
    text = markdown.content.decode()
    assert "# Trip plan" in text and "Where to?" in text and "**Lisbon**" in text
    assert "Stopped" in text  # an incomplete reply says so
    data = json.loads(alice.get(f"/c/{conversation.pk}/export?format=json").content)
    assert [m["content"] for m in data["messages"]] == ["Where to?", "**Lisbon**"]
    other = Client()
    other.force_login(other_user)
    assert other.get(f"/c/{conversation.pk}/export").status_code == 404


def test_the_sites_widget_templates_write_what_djangos_own_write():
    """The site renders widgets with templates/django/forms/widgets/ (attributes by a filter,
    not an include per widget and option: the composer's model list has every model of every
    key). They must write the same HTML as Django's templates, whatever the attributes."""
    from django import forms
    from django.forms.renderers import DjangoTemplates, get_default_renderer
    from django.utils.safestring import mark_safe

    from conversations.forms import ModelSelect

    tricky = {"required": True, "disabled": False, "data-note": 'say "hi" <b>&</b>',
              "aria-label": mark_safe("Fish &amp; chips"), "data-count": 3, "data-empty": "",
              "data-none": None}

    class Everything(forms.Form):
        text = forms.CharField(widget=forms.TextInput(attrs=tricky))
        note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, **tricky}))
        number = forms.DecimalField(widget=forms.NumberInput(attrs={"step": "0.1"}))
        secret = forms.CharField(widget=forms.PasswordInput(render_value=True))
        flag = forms.BooleanField(widget=forms.CheckboxInput(attrs=tricky))
        model = forms.ChoiceField(widget=ModelSelect(attrs=tricky), choices=[
            ("", "—"), ("Key <1>", [("1:gpt-4o", "gpt-4o"), ("1:o3", "o3 & co")]),
            ("Key 2", [("2:gpt-4o-mini", "gpt-4o-mini")])])
        effort = forms.ChoiceField(choices=[("", "Default"), ("low", "Low"), ("high", "High")])
        kind = forms.ChoiceField(widget=forms.RadioSelect, choices=[("a", "A"), ("b", "B")])
        many = forms.MultipleChoiceField(choices=[("a", "A"), ("b", "B")])
        upload = forms.FileField(widget=forms.ClearableFileInput(attrs={"accept": ".json"}))

    data = {"text": "<script>", "note": "line\n</textarea>", "number": "1.5", "secret": "s",
            "flag": "on", "model": "1:o3", "effort": "high", "kind": "b", "many": ["a", "b"]}
    for form_data in (None, data):
        ours = Everything(form_data, renderer=get_default_renderer())
        djangos = Everything(form_data, renderer=DjangoTemplates())
        for name in Everything.base_fields:
            assert str(ours[name]) == str(djangos[name]), name
    assert 'data-note="say &quot;hi&quot; &lt;b&gt;&amp;&lt;/b&gt;"' in str(ours["text"])
    assert type(get_default_renderer()).__name__ == "TemplatesSetting"
