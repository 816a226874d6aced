"""Korean and Chinese in the browser: every page a member sees speaks the browser's language with
no English chrome left, the chooser switches it, and typing through an input method (IME) never
sends a half-composed message."""

from __future__ import annotations

import re

import pytest

from conftest import PASSWORD, log_in, watch
from conversations.models import Conversation, Message, Share
from devtools.fake_upstream import Scenario
from tests.helpers import SCREENS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BROWSER_LOCALES = {"ko": "ko-KR", "zh-hans": "zh-CN"}
# Words that stay as they are in every language: names of products, formats and protocols.
KEPT = {"chatsite", "openai", "chatgpt", "api", "json", "csv", "zip", "pdf", "markdown", "token",
        "tokens", "us", "usd", "sse", "url", "id", "gpt", "mini", "ms", "kb", "mb", "gb",
        # Keys on the keyboard, named as printed on them.
        "enter", "shift", "esc", "escape", "ctrl", "cmd", "tab", "alt", "control", "command",
        "mac", "django",
        # Prefixes of the ids of OpenAI keys, organizations and projects (sk-…, org-…, proj_…).
        "sk", "org", "proj"}
# The text a page shows that is not its own chrome: what members wrote and models answered (in
# <bdi> and the rendered messages), model names, and each language's name in the chooser.
# The admin's data is not chrome either: the rows of a list, read-only values, the names of
# objects (in the breadcrumbs, the action checkboxes' labels, and the choices of a select that
# picks objects by id), the logged-in username, and Django's True/False icons.
CHROME_TEXT = """() => {
  const skip = "script, style, bdi, .markdown, .message__body, pre, code, textarea, [lang]:not(html),"
             + " select[name=model] option, select[name=model], .message__model, time,"
             + " #result_list tbody, .readonly, #user-tools strong, .breadcrumbs > :last-child,"
             + " .selector-available option, .selector-chosen option";
  const data = (element) => element.closest(skip)
    || (element.tagName === "OPTION" && /^\\d+$/.test(element.value))
    || (element.tagName === "IMG" && /icon-(yes|no|unknown)/.test(element.src))
    || element.classList.contains("action-select");
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const element = node.parentElement;
    if (!element || data(element)) continue;
    if (element.classList.contains("breadcrumbs") && !node.nextSibling) continue;  // the object
    const text = node.textContent.trim();
    if (text) out.push(text);
  }
  document.querySelectorAll("[aria-label], [title], [placeholder], [alt], input[type=submit]")
    .forEach((element) => {
      if (data(element)) return;
      for (const name of ["aria-label", "title", "placeholder", "alt", "value"]) {
        if (name === "value" && element.type !== "submit") continue;
        const value = element.getAttribute(name);
        if (value) out.push(value);
      }
    });
  return out;
}"""


def english_left(tab) -> list[str]:
    """The pieces of chrome on the page that hold English words."""
    left = []
    for text in tab.evaluate(CHROME_TEXT):
        text = re.sub(r"[\w-]+\.(json|csv|md|zip|txt|pdf)\b", "", text)  # file names
        text = re.sub(r"\bOpenAI-\w+", "", text)  # HTTP header names
        words = {word.lower() for word in re.findall(r"[A-Za-z]{2,}", text)}
        if words - KEPT:
            left.append(text)
    return left


@pytest.fixture
def api_key(make_api_key):
    """conftest's key, under a name its Korean or Chinese operator would give it: the name is
    data (shown as such in the admin's headings and filters), not chrome."""
    return make_api_key(name="업무 키 工作密钥", organization="org-team", project="proj_chat",
                        default_model="gpt-4o-mini")


def english_left_on(tab, pages: list[str], language: str) -> dict[str, list[str]]:
    """Visit each page (as the member logged in, in ``language``); return the English left on
    each that has some."""
    left = {}
    for path in pages:
        tab.goto(path)
        assert "/accounts/login/" not in tab.url, path  # the page itself, not the login page
        assert tab.locator("html").get_attribute("lang") == language, path
        if english_left(tab):
            left[path] = english_left(tab)
    return left


@pytest.fixture
def member_with_history(user, other_user, api_key):
    """A member with a finished chat (in Korean and Chinese), one shared with them, and usage."""
    conversation = Conversation.objects.create(owner=user, title="출장 계획 出差计划",
                                               api_key=api_key, model="gpt-4o-mini")
    Message.objects.create(conversation=conversation, role="user", content="부산 일정")
    Message.objects.create(conversation=conversation, role="assistant", content="好的，**计划**如下",
                           model="gpt-4o-mini", prompt_tokens=10, completion_tokens=20,
                           total_tokens=30)
    theirs = Conversation.objects.create(owner=other_user, title="팀 회의")
    Message.objects.create(conversation=theirs, role="user", content="회의록")
    Share.objects.create(conversation=theirs, user=user, created_by=other_user)
    return conversation


@pytest.mark.parametrize("screen_name", sorted(SCREENS))
@pytest.mark.parametrize("language", sorted(BROWSER_LOCALES))
def test_every_member_page_speaks_the_browsers_language_with_no_english_chrome(
    browser, live_url, member_with_history, language, screen_name
):
    context = browser.new_context(base_url=live_url, locale=BROWSER_LOCALES[language],
                                  **SCREENS[screen_name])
    tab = context.new_page()
    errors = watch(tab)
    tab.goto("/accounts/login/")
    assert tab.locator("html").get_attribute("lang") == language
    assert english_left(tab) == []
    log_in(tab, "alice")

    pages = ["/", f"/c/{member_with_history.pk}/", "/usage/", "/search/?q=계획", "/shared/",
             "/archived/", "/import/", "/accounts/password_change/",
             f"/shared/{Share.objects.get().conversation_id}/"]
    assert english_left_on(tab, pages, language) == {}
    context.close()
    assert not errors, errors


def test_the_chooser_switches_the_language_and_it_stays_with_the_member(
    browser, live_url, user
):
    context = browser.new_context(base_url=live_url, locale="en-US")
    tab = context.new_page()
    log_in(tab, "alice")

    tab.get_by_label("Language").select_option("ko")
    with tab.expect_navigation():
        tab.locator(".account .language-choice button").click()

    assert tab.locator("html").get_attribute("lang") == "ko"
    assert tab.get_by_role("button", name="로그아웃").count() == 1
    context.close()

    elsewhere = browser.new_context(base_url=live_url, locale="zh-CN").new_page()
    elsewhere.goto("/accounts/login/")
    assert elsewhere.locator("html").get_attribute("lang") == "zh-hans"
    log_in(elsewhere, "alice")
    assert elsewhere.locator("html").get_attribute("lang") == "ko"  # the member's choice
    elsewhere.context.close()


def test_enter_while_an_input_method_is_composing_never_sends_a_half_composed_message(
    screen, user, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["네"]))
    log_in(screen, "alice")
    box = screen.locator("#composer textarea[name=content]")
    box.click()

    # Typing 한국 with a Korean IME: the last syllable is still being composed when Enter comes,
    # and that Enter ends the composition; it must not send "한구".
    box.dispatch_event("compositionstart", {"data": ""})
    box.fill("한구")
    box.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "isComposing": True,
                                   "keyCode": 229, "bubbles": True, "cancelable": True})
    box.dispatch_event("keydown", {"key": "Enter", "code": "Enter", "isComposing": False,
                                   "keyCode": 229, "bubbles": True, "cancelable": True})
    box.fill("한국")
    box.dispatch_event("compositionend", {"data": "국"})
    assert box.input_value() == "한국"  # nothing was sent: the text is still in the box
    box.press("Enter")  # the member's own Enter, after the composition

    screen.wait_for_url(re.compile(r"/c/\d+/$"))
    sent = list(Message.objects.filter(role="user").values_list("content", flat=True))
    assert sent == ["한국"]


@pytest.mark.parametrize("language", sorted(BROWSER_LOCALES))
def test_the_admin_speaks_the_browsers_language_with_no_english_chrome(
    browser, live_url, django_user_model, member_with_history, language
):
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    context = browser.new_context(base_url=live_url, locale=BROWSER_LOCALES[language])
    tab = context.new_page()
    errors = watch(tab)
    log_in(tab, "root")
    key = member_with_history.api_key
    pages = ["/admin/", "/admin/conversations/apikey/", f"/admin/conversations/apikey/{key.pk}/change/",
             "/admin/conversations/apikey/add/", "/admin/auth/group/", "/admin/auth/group/add/",
             "/admin/auth/user/", "/admin/conversations/catalogmodel/",
             "/admin/conversations/conversation/", "/admin/conversations/preset/add/",
             "/admin/conversations/userlimit/add/", "/admin/conversations/budgetalert/",
             "/admin/conversations/auditevent/", "/admin/conversations/usagedaily/",
             "/admin/usage/"]
    left = english_left_on(tab, pages, language)
    context.close()
    assert left == {}
    assert not errors, errors
