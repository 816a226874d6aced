"""Errors end on friendly pages in the site's look, with no technical detail (DEBUG is off here,
as in production: pytest-django runs with DEBUG=False).

Each page says what happened in plain words and links back to the chat; none shows the exception,
a path or an object, and none carries a script or a CSRF token. Failures come from the test-only
views of ``tests/error_urls.py``, each carrying a detail that must not reach the page.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.template import loader
from django.test import Client, override_settings

from conftest import PASSWORD, log_in
from conversations.models import Conversation
from tests.error_urls import DETAIL
from tests.helpers import page as html

ERROR_URLS = override_settings(ROOT_URLCONF="tests.error_urls")
NOT_FOUND = "Page not found"


def assert_friendly(response, status: int, heading: str) -> str:
    """Check that ``response`` is the friendly page for ``status``; return its body."""
    assert response.status_code == status
    body = response.content.decode()
    document = html(response)
    assert document.find("h1").text == heading
    assert document.find("main").find("a").attrs["href"] == "/", "no way back to the chat"
    # The site's look: its stylesheet, and nothing the Content-Security-Policy would refuse.
    assert document.find("link", rel="stylesheet", href="/static/chatsite/chat.css")
    assert "<script" not in body and "style=" not in body
    for technical in (DETAIL, "Traceback", "Exception", "DEBUG", "csrfmiddlewaretoken",
                      "X-CSRFToken"):
        assert technical not in body
    return body


@pytest.mark.django_db
def test_a_bad_address_and_another_members_conversation_give_the_same_404(alice, other_user):
    theirs = Conversation.objects.create(owner=other_user, title="Mallory's secret plan")
    missing = theirs.pk + 1000
    responses = [alice.get("/no/such/page/"), alice.get(f"/c/{theirs.pk}/"),
                 alice.get(f"/c/{missing}/"), Client().get("/no/such/page/")]
    bodies = [assert_friendly(response, 404, NOT_FOUND) for response in responses]
    assert len(set(bodies)) == 1, "a 404 tells something about what was asked for"
    for revealing in ("/no/such/page/", f"/c/{theirs.pk}/", "secret plan", "Conversation"):
        assert revealing not in bodies[0]


@pytest.mark.django_db
@ERROR_URLS
def test_an_unexpected_error_gives_the_500_page_without_the_error(user):
    client = Client(raise_request_exception=False)
    client.force_login(user)
    body = assert_friendly(client.get("/failing/error"), 500, "Something went wrong")
    assert "RuntimeError" not in body and "/failing/error" not in body


def test_the_500_page_needs_no_context_request_or_database():
    """Rendered as Django renders it, outside any test database: a query would fail here."""
    body = loader.get_template("500.html").render()
    assert "Something went wrong" in body
    assert 'href="/"' in body
    assert 'href="/static/chatsite/chat.css"' in body
    assert "<script" not in body and "style=" not in body


@pytest.mark.django_db
@ERROR_URLS
def test_a_suspicious_request_gives_the_400_page(user):
    client = Client()
    client.force_login(user)
    assert_friendly(client.get("/failing/suspicious"), 400, "Bad request")


def test_an_unknown_host_gives_the_400_page():
    assert_friendly(Client().get("/", HTTP_HOST="attacker.example"), 400, "Bad request")


@pytest.mark.django_db
@ERROR_URLS
def test_a_refused_permission_gives_the_403_page(user):
    client = Client()
    client.force_login(user)
    assert_friendly(client.get("/failing/forbidden"), 403, "Not allowed")


@pytest.mark.django_db
def test_staff_without_the_usage_permission_get_the_403_page(django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password=PASSWORD, is_staff=True)
    assert not clerk.user_permissions.filter(
        pk__in=Permission.objects.filter(codename="view_usagedaily")).exists()
    client = Client()
    client.force_login(clerk)
    assert_friendly(client.get("/admin/usage/"), 403, "Not allowed")


@pytest.mark.django_db
def test_a_form_sent_without_its_csrf_token_gives_the_page_saying_to_reload(user):
    conversation = Conversation.objects.create(owner=user, title="Trip plans")
    member = Client(enforce_csrf_checks=True)
    member.force_login(user)
    stranger = Client(enforce_csrf_checks=True)
    for response in (
        member.post(f"/c/{conversation.pk}/rename", {"title": "Renamed"}),
        stranger.post("/accounts/login/", {"username": "alice", "password": PASSWORD}),
    ):
        body = assert_friendly(response, 403, "The form has expired")
        assert "Reload the page and try again." in body
        # Neither Django's page nor its reason ("CSRF cookie not set.").
        assert "CSRF" not in body
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"


@pytest.mark.browser
def test_an_error_page_has_the_sites_look_and_leads_back_to_the_chat(page, user):
    log_in(page, "alice")
    response = page.goto("/no/such/page/")
    assert response.status == 404
    # chat.css applies (its .narrow column), under the site's Content-Security-Policy: the
    # fixture fails the test on any violation.
    assert page.locator("main").evaluate("main => getComputedStyle(main).maxWidth") == "448px"
    page.get_by_role("link", name="Back to the chat").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*/$"))
