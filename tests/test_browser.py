"""The whole flow in headless Chromium: what only a browser shows.

A new install creates its administrator in the browser, the administrator adds a scoped key in the
admin, and a member's reply grows on the page token by token, then survives a reload.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import CHROMIUM, PASSWORD, SECRETS, SEEN, log_in, wait_for, watch  # noqa: F401
from conversations.models import ApiKey, Message
from devtools.fake_upstream import Scenario

pytestmark = pytest.mark.browser

def test_reply_streams_into_the_page_token_by_token_and_survives_reload(
    page, user, api_key, fake_upstream
):
    tokens = [f"word{i} " for i in range(12)]
    fake_upstream.queue(Scenario(tokens=tokens, first_token_delay=0.3, token_delay=0.15))
    log_in(page, "alice")

    page.get_by_label("Model").select_option(label="gpt-4o-mini")
    page.get_by_label("Message").fill("Tell me twelve words")
    page.get_by_label("Message").press("Enter")

    page.wait_for_url(re.compile(r"/c/\d+/$"))
    reply = page.locator("article.message--assistant").last
    seen_lengths = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "message--complete" in (reply.get_attribute("class") or ""):
            break
        text = reply.locator(".message__body").inner_text()
        if not seen_lengths or len(text) != seen_lengths[-1]:
            seen_lengths.append(len(text))
        time.sleep(0.03)
    assert "message--complete" in reply.get_attribute("class")
    growing = [n for n in seen_lengths if 0 < n < len("".join(tokens).strip())]
    assert len(growing) >= 3, f"the reply did not grow in steps on the page: {seen_lengths}"

    expected = "".join(tokens).strip()
    assert reply.locator(".message__body").inner_text().strip() == expected
    page.reload()
    assert page.locator("article.message--assistant .message__body").last.inner_text().strip() == expected
    assert page.locator("article.message--user .message__body").last.inner_text() == "Tell me twelve words"
    SEEN.add("page after reload", page.content())


def test_new_install_admin_adds_scoped_key_and_member_chats(
    browser, live_url, fake_upstream, django_user_model
):
    admin_context = browser.new_context(base_url=live_url)
    admin = admin_context.new_page()
    admin_errors = watch(admin)
    admin.goto("/")
    admin.wait_for_url(re.compile(r"/setup/$"))
    admin.get_by_label("Username").fill("root")
    admin.get_by_label("Password", exact=True).fill(PASSWORD)
    admin.get_by_label("Password again").fill(PASSWORD)
    admin.get_by_role("button", name="Create the administrator").click()
    admin.wait_for_url(re.compile(r"/admin/conversations/apikey/add/$"))

    secret = "sk-proj-BrowserAddedKey0123456789abcdefXYZ"
    SECRETS.add(secret)
    admin.get_by_label("Name").fill("Team key")
    admin.get_by_label("Secret key").fill(secret)
    admin.get_by_label("Base URL").fill(fake_upstream.base_url)
    admin.get_by_label("OpenAI organization").fill("org-acme")
    admin.get_by_label("OpenAI project").fill("proj_support")
    admin.get_by_label("Available to everyone").check()
    admin.get_by_role("button", name="Save", exact=True).click()
    admin.wait_for_url(re.compile(r"/admin/conversations/apikey/$"))
    assert "sk-…fXYZ" in admin.content()
    assert secret not in admin.content()
    admin.goto("/setup/")
    assert "Create the administrator" not in admin.content()
    admin_context.close()
    assert not admin_errors, admin_errors

    django_user_model.objects.create_user("bob", password=PASSWORD)
    member_context = browser.new_context(base_url=live_url)
    member = member_context.new_page()
    member_errors = watch(member)
    fake_upstream.queue(Scenario(tokens=["Hi", " Bob", ", here", " is", " your", " answer."],
                                 token_delay=0.1))
    log_in(member, "bob")
    member.get_by_label("Message").fill("Hello")
    member.get_by_role("button", name="Send").click()
    member.wait_for_selector("article.message--assistant.message--complete", timeout=15000)
    assert "Hi Bob, here is your answer." in member.locator("article.message--assistant").inner_text()
    assert secret not in member.content()
    member_context.close()
    assert not member_errors, member_errors

    chat = [r for r in fake_upstream.requests if r.path.endswith("/chat/completions")][-1]
    assert chat.headers["authorization"] == f"Bearer {secret}"
    assert chat.headers["openai-organization"] == "org-acme"
    assert chat.headers["openai-project"] == "proj_support"
    assert ApiKey.objects.get().secret_hint == "sk-…fXYZ"
    assert Message.objects.filter(role="assistant", status="complete").count() == 1


def send_from_page(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def sample_until_complete(page, expected: str, timeout: float = 15) -> list[str]:
    """Return the reply texts seen on ``page`` until it completes; each must be a prefix."""
    reply = page.locator("article.message--assistant").last
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        classes = reply.get_attribute("class") or ""
        text = reply.locator(".message__body").inner_text()
        if not seen or text != seen[-1]:
            seen.append(text)
            assert expected.startswith(text.strip()) or "message--complete" in classes, (
                f"text on the page is not a prefix of the reply (duplicated or garbled): {text!r}"
            )
        if "message--complete" in classes:
            return seen
        time.sleep(0.03)
    raise AssertionError(f"the reply did not complete; last seen: {seen[-1:]}")


def test_reload_mid_reply_resumes_from_where_the_page_was_without_duplicates(
    page, user, api_key, fake_upstream
):
    tokens = [f"part{i} " for i in range(25)]
    expected = "".join(tokens).strip()
    fake_upstream.queue(Scenario(tokens=tokens, token_delay=0.12))
    log_in(page, "alice")
    send_from_page(page, "Count slowly")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    body = page.locator("article.message--assistant .message__body").last
    wait_for(lambda: len(body.inner_text()) > 20, 10)
    page.reload()
    after_reload = page.locator("article.message--assistant .message__body").last.inner_text()
    assert after_reload.strip() and expected.startswith(after_reload.strip())
    seen = sample_until_complete(page, expected)
    assert len(seen) >= 3, f"the reply did not keep growing after the reload: {seen}"
    assert page.locator("article.message--assistant .message__body").last.inner_text().strip() == expected
    assert len(fake_upstream.chat_requests) == 1  # the reload did not ask again


def test_stop_button_ends_the_reply_within_a_second_and_retry_gets_a_new_one(
    page, user, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["Never", " ending", " story", "..."], hang_after=3),
                        Scenario(tokens=["A", " complete", " reply."]))
    log_in(page, "alice")
    send_from_page(page, "Tell me a story")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    body = page.locator("article.message--assistant .message__body").last
    wait_for(lambda: body.inner_text().strip() == "Never ending story", 10)
    started = time.monotonic()
    page.locator("article.message--assistant").last.get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped: the reply is incomplete.").wait_for(timeout=2000)
    assert time.monotonic() - started < 1.0
    assert fake_upstream.wait_for_disconnect(2), "Stop did not close the upstream connection"
    assert "Never ending story" in page.locator("article.message--assistant").last.inner_text()

    page.get_by_role("button", name="Retry").click()
    page.locator("article.message--assistant.message--complete:not(.message--superseded)").wait_for(
        timeout=10000)
    assert "A complete reply." in page.locator("article.message--assistant").last.inner_text()
    page.reload()
    assert "Earlier version of the reply" in page.content()


def test_a_second_tab_sees_the_same_reply_grow(browser, live_url, user, api_key, fake_upstream):
    tokens = [f"shared{i} " for i in range(20)]
    expected = "".join(tokens).strip()
    fake_upstream.queue(Scenario(tokens=tokens, token_delay=0.12))
    context = browser.new_context(base_url=live_url)
    first, second = context.new_page(), context.new_page()
    errors = watch(first) + watch(second)
    log_in(first, "alice")
    send_from_page(first, "Share this")
    first.wait_for_url(re.compile(r"/c/\d+/$"))
    second.goto(first.url)
    seen_second = sample_until_complete(second, expected)
    sample_until_complete(first, expected)
    assert len(seen_second) >= 3, f"the second tab did not see the reply grow: {seen_second}"
    for tab in (first, second):
        assert tab.locator("article.message--assistant .message__body").last.inner_text().strip() == expected
    context.close()
    assert not errors, errors


def test_shift_enter_adds_a_line_and_code_blocks_get_a_copy_button(
    browser, live_url, user, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["Run:\n\n", "```python\n", "print('hi')\n", "```\n"],
                                 token_delay=0.05))
    context = browser.new_context(base_url=live_url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    page = context.new_page()
    errors = watch(page)
    log_in(page, "alice")
    box = page.get_by_role("textbox", name="Message")
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"  # not sent yet
    box.press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)
    assert "first line\nsecond line" in page.locator("article.message--user").inner_text()
    page.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()").strip() == "print('hi')"
    context.close()
    assert not errors, errors


def test_every_page_renders_without_a_policy_violation_or_script_error(
    browser, live_url, django_user_model, api_key, fake_upstream
):
    """Visit every page a member or an admin can reach, with the real CSP in force."""
    from django.urls import reverse

    from conversations.models import Conversation

    admin_user = django_user_model.objects.create_superuser("root", password=PASSWORD)
    conversation = Conversation.objects.create(owner=admin_user, api_key=api_key, model="gpt-4o",
                                               title="Every page")
    Message.objects.create(conversation=conversation, role="user", content="Hi")
    Message.objects.create(conversation=conversation, role="assistant", content="| a |\n|--:|\n| 1 |",
                           model="gpt-4o")
    pages = [
        "/", f"/c/{conversation.pk}/", f"/c/{conversation.pk}/delete", "/usage/",
        "/admin/usage/", "/accounts/password_change/", "/admin/",
    ]
    admin_pages = [
        reverse(f"admin:{app}_{model}_{view}", args=args)
        for app, model in [("conversations", "apikey"), ("conversations", "conversation"),
                           ("conversations", "message"), ("conversations", "usagedaily"),
                           ("conversations", "auditevent"), ("conversations", "team"),
                           ("conversations", "userlimit"), ("auth", "group"), ("auth", "user")]
        for view, args in [("changelist", [])]
    ] + [
        reverse("admin:conversations_apikey_add"),
        reverse("admin:conversations_apikey_change", args=[api_key.pk]),
        reverse("admin:auth_group_add"),
        reverse("admin:auth_user_change", args=[admin_user.pk]),
        reverse("admin:conversations_conversation_change", args=[conversation.pk]),
    ]
    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    errors = watch(page)
    page.goto("/accounts/login/")
    log_in(page, "root")
    for url in pages + admin_pages:
        response = page.goto(url)
        assert response.status == 200, f"{url} answered {response.status}"
        page.wait_for_load_state("networkidle")
        assert not errors, f"{url}: {errors}"
    context.close()
