"""The chat a member lives in (issue 10): chat settings and presets, a page that works on a
phone, formatted text while the reply streams and a page that follows it, waiting that shows,
controls that are always right (only the last reply offers Regenerate or Retry, a second message
cannot cut a streaming reply off, Stop and Esc), a member without a model reads why and whom to
ask, errors name the field, each message shows its model and time with a Copy button, dark mode,
the site's own password page, the budget that binds, and the keyboard.

What only a browser shows is checked at a desktop size in light colours and at a phone's in dark
(``screen``)."""

from __future__ import annotations

import re

import pytest

from conftest import wait_for
from conversations.models import Conversation, Message
from devtools.fake_upstream import Scenario
from tests.helpers import PHONE, finished_reply, send_message
from tests.helpers import page as parse

IN_TRANSACTIONS = pytest.mark.django_db(transaction=True)


def retry_buttons(document) -> list[str]:
    """The ids of the messages whose actions offer Regenerate or Retry."""
    return [form.attrs["id"] for form in document.find_all("form", class_="inline message__actions")]


@IN_TRANSACTIONS
def test_only_the_last_reply_offers_regenerate(alice, api_key, fake_upstream):
    first = finished_reply(send_message(alice, api_key, "One"))
    conversation = Conversation.objects.get(pk=first.conversation_id)
    second = finished_reply(send_message(alice, api_key, "Two", conversation=conversation))

    document = parse(alice.get(f"/c/{conversation.pk}/"))

    assert retry_buttons(document) == [f"actions-{second.pk}"]


@IN_TRANSACTIONS
def test_a_message_sent_without_reload_takes_regenerate_away_from_the_earlier_reply(
    alice, api_key, fake_upstream
):
    first = finished_reply(send_message(alice, api_key, "One"))

    response = alice.post(f"/c/{first.conversation_id}/messages",
                          {"content": "Two", "model": f"{api_key.pk}:gpt-4o-mini"},
                          HTTP_HX_REQUEST="true")

    body = response.content.decode()
    assert f'<div id="actions-{first.pk}" hx-swap-oob="delete"></div>' in body
    assert 'class="inline message__actions"' not in body  # the new reply is not finished yet
    finished_reply(Message.objects.filter(role="assistant").latest("id"))


@IN_TRANSACTIONS
def test_a_second_message_while_a_reply_streams_is_refused_and_the_first_goes_on(
    alice, api_key, fake_upstream
):
    # The reply waits upstream after its first word until released: still streaming however
    # slow the machine is.
    fake_upstream.queue(Scenario(tokens=["Still", " writing", " this."], hang_after=1))
    first = send_message(alice, api_key, "First")
    wait_for(lambda: Message.objects.get(pk=first.pk).status == "streaming")

    refused = alice.post(f"/c/{first.conversation_id}/messages",
                         {"content": "Second", "model": f"{api_key.pk}:gpt-4o-mini"})
    fake_upstream.release()

    assert refused.status_code == 400
    assert "Wait for the reply to finish, or stop it, first." in refused.content.decode()
    assert not Message.objects.filter(content="Second").exists()
    assert finished_reply(first).content == "Still writing this."


@pytest.mark.django_db
def test_a_member_with_keys_but_no_grant_reads_why_and_whom_to_ask(
    alice, make_api_key, django_user_model
):
    make_api_key(everyone=False)
    django_user_model.objects.create_superuser("olivia", password="x")

    notice = parse(alice.get("/")).find("p", class_="notice").text

    assert "no API key is granted to you or to one of your teams" in notice
    assert "olivia" in notice and "No API key is set up yet" not in notice


@pytest.mark.django_db
def test_form_errors_name_the_field(alice, api_key):
    response = alice.post("/c/new/messages", {"content": "Hi", "model": "999:nothing"})

    assert "Model: That model is not available." in response.content.decode()


@IN_TRANSACTIONS
def test_each_message_shows_its_model_its_time_and_a_copy_button(alice, api_key, fake_upstream):
    reply = finished_reply(send_message(alice, api_key, "Hi"))

    article = parse(alice.get(f"/c/{reply.conversation_id}/")).find("article",
                                                                    id=f"message-{reply.pk}")

    assert "gpt-4o-mini" in article.find("h2").text
    assert article.find("time").attrs["datetime"].startswith(str(reply.created_at.year))
    copy = article.find("button", class_="message__copy link")
    assert copy.text == "Copy" and copy.attrs["data-copy"] == f"#message-{reply.pk} .message__body"


@pytest.mark.django_db
def test_change_password_is_in_the_sites_own_look(alice):
    document = parse(alice.get("/accounts/password_change/"))

    assert document.find("h1").text == "Change your password"
    assert document.find("a", class_="skip-link").attrs["href"] == "#main"
    assert "Django administration" not in str(alice.get("/accounts/password_change/").content)
    links = [a.attrs.get("href") for a in document.find_all("a")]
    assert "/" in links and not any(link and link.startswith("/admin") for link in links)


# -- in the browser ----------------------------------------------------------------------------
#
# Each behaviour is checked on two screens, a desktop in light colours and a phone in dark ones:
# together they cover both sizes and both schemes (axe-core runs in all four combinations,
# test_accessibility.py). The ``screen`` fixture (conftest.py) gives the page.


HOME = re.compile(r"^http://[^/]+/$")  # a new chat


def on_phone(page) -> bool:
    return page.viewport_size["width"] <= PHONE["width"]


def navigation(page):
    """Return the site's navigation, opened with "Menu" on a phone, where it is behind it."""
    if on_phone(page):
        page.get_by_role("button", name="Menu").click()
    return page.locator("#sidebar")


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


@pytest.mark.browser
def test_while_a_reply_streams_the_composer_offers_stop_and_esc_stops_it(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen

    fake_upstream.queue(Scenario(tokens=["Never", " ending", " story"], hang_after=2))
    log_in(page, "alice")
    send(page, "Tell me")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    composer = page.locator("#composer")
    composer.get_by_role("button", name="Stop").wait_for(timeout=5000)
    assert not composer.get_by_role("button", name="Send").is_visible()

    page.keyboard.press("Escape")

    page.get_by_text("Stopped: the reply is incomplete.").wait_for(timeout=3000)
    composer.get_by_role("button", name="Send").wait_for(timeout=3000)
    assert page.get_by_role("button", name="Copy").last.is_visible()


@pytest.mark.browser
def test_before_the_first_text_the_page_counts_the_seconds_and_refuses_a_second_message(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen
    fake_upstream.queue(Scenario(tokens=["Too", " late"], hang_after=0))  # nothing arrives
    page.clock.install()  # runs as the real one, and can be moved on without waiting
    log_in(page, "alice")
    send(page, "Think hard")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    waiting = page.locator("article.message--assistant .message__waiting")
    waiting.wait_for(timeout=5000)
    assert waiting.inner_text().startswith("Waiting for the model…")
    elapsed = waiting.locator(".message__elapsed")
    page.clock.fast_forward(7000)
    wait_for(lambda: re.fullmatch(r"([7-9]|1\d)\s?s", elapsed.inner_text()), 3)  # it counts

    # Enter with a second message: refused, said next to the box, the text kept.
    box = page.get_by_role("textbox", name="Message")
    box.fill("And another thing")
    box.press("Enter")
    page.get_by_role("alert").get_by_text(
        "Message: Wait for the reply to finish, or stop it, first.").wait_for(timeout=5000)
    assert box.input_value() == "And another thing"
    assert waiting.is_visible()
    assert Message.objects.filter(content="And another thing").count() == 0

    page.locator("#composer").get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped: the reply is incomplete.").wait_for(timeout=3000)
    page.locator("#composer").get_by_role("button", name="Send").wait_for(timeout=3000)
    assert not waiting.is_visible()


@pytest.mark.browser
def test_the_page_follows_the_reply_until_the_member_scrolls_up_then_offers_jump_to_latest(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen
    fake_upstream.queue(Scenario(tokens=[f"line {n}\n\n" for n in range(60)], token_delay=0.05))
    log_in(page, "alice")
    send(page, "Write a lot")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    messages = page.locator("#messages")
    wait_for(lambda: messages.evaluate("m => m.scrollHeight > m.clientHeight + 200"), 10)
    assert messages.evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight < 150")

    box = messages.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -5000)  # the member scrolls up to read
    jump = page.get_by_role("button", name="Jump to latest")
    jump.wait_for(timeout=3000)
    top = messages.evaluate("m => m.scrollTop")
    page.wait_for_timeout(300)  # tokens keep arriving meanwhile
    assert messages.evaluate("m => m.scrollTop") == top  # no longer follows

    jump.click()
    assert messages.evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight < 150")
    assert not jump.is_visible()


@pytest.mark.browser
def test_no_page_is_wider_than_the_screen_and_the_navigation_reaches_everything(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen
    width = page.viewport_size["width"]
    fake_upstream.queue(Scenario(tokens=["| a | b |\n|---|---|\n| " + "wide " * 60 + "| x |\n\n",
                                         "`" + "x" * 300 + "`"]))
    log_in(page, "alice")
    send(page, "A wide table, please")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)
    conversation = page.url

    overflowing = {}
    for path in [conversation, "/", "/usage/", "/accounts/password_change/",
                 conversation + "delete"]:
        page.goto(path)
        if (scrolled := page.evaluate("document.documentElement.scrollWidth")) > width:
            overflowing[path] = scrolled
    assert overflowing == {}

    page.goto(conversation)
    for control in (page.get_by_role("button", name="Send"),
                    page.get_by_role("link", name="Delete")):
        box = control.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width
    sidebar = page.locator("#sidebar")
    menu = page.get_by_role("button", name="Menu")
    assert menu.is_visible() == on_phone(page)  # a phone's way to the navigation, only there
    assert sidebar.get_by_role("link", name="Usage").is_visible() != on_phone(page)

    navigation(page)
    for name in ("New chat", "Usage", "Change password", "A wide table, please"):
        assert sidebar.get_by_role("link", name=name).is_visible(), name
    assert sidebar.get_by_role("button", name="Log out").is_visible()
    sidebar.get_by_role("link", name="Usage").click()
    page.wait_for_url(re.compile(r"/usage/$"))


@pytest.mark.browser
def test_a_member_without_a_model_reads_why_and_whom_to_ask(
    screen, user, make_api_key, django_user_model
):
    from conftest import log_in

    page = screen
    make_api_key(everyone=False)
    django_user_model.objects.create_superuser("olivia", password="x")
    log_in(page, "alice")

    notice = page.locator("#composer .notice")
    assert notice.is_visible()
    assert "no API key is granted to you or to one of your teams" in notice.inner_text()
    assert "Ask an administrator (olivia)" in notice.inner_text()
    box = notice.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]


@pytest.mark.browser
def test_each_message_shows_its_model_and_time_and_copy_copies_it(
    screen, live_url, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    fake_upstream.queue(Scenario(tokens=["A **bold**", " answer."]))
    log_in(page, "alice")
    send(page, "Answer boldly")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    reply = page.locator("article.message--assistant.message--complete")
    reply.wait_for(timeout=10000)

    assert "gpt-4o-mini" in reply.locator(".message__author").inner_text()
    assert reply.locator("time").is_visible() and reply.locator("time").inner_text().strip()
    reply.get_by_role("button", name="Copy").click()
    reply.get_by_role("button", name="Copied").wait_for(timeout=3000)
    assert page.evaluate("navigator.clipboard.readText()").strip() == "A bold answer."
    question = page.locator("article.message--user")
    question.get_by_role("button", name="Copy").click()
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()").strip() == "Answer boldly", 3)


def focus_ring(page) -> bool:
    """Return whether the focused element is drawn with an outline."""
    style = page.evaluate("(({outlineStyle, outlineWidth}) => ({outlineStyle, outlineWidth}))"
                          "(getComputedStyle(document.activeElement))")
    return style["outlineStyle"] != "none" and float(style["outlineWidth"].removesuffix("px")) > 0


@pytest.mark.browser
def test_the_keyboard_reaches_the_content_sends_and_starts_a_new_chat_with_focus_visible(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen
    log_in(page, "alice")  # the chat puts the focus in the message box; other pages do not
    page.goto("/usage/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.evaluate("link => link === document.activeElement")
    box = skip.bounding_box()
    assert box["y"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]  # on screen
    assert focus_ring(page)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#main$"))
    page.keyboard.press("Tab")  # on from the content, past the navigation
    assert page.evaluate("document.activeElement.closest('main') !== null")

    page.goto("/")
    box = page.get_by_role("textbox", name="Message")
    assert box.evaluate("box => box === document.activeElement")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert box.input_value() == "first line\nsecond line"  # not sent
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)
    assert page.locator("article.message--user .message__body").inner_text() == (
        "first line\nsecond line")
    page.keyboard.press("Tab")  # from the box, on to the next control
    assert page.evaluate("document.activeElement !== document.body") and focus_ring(page)

    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(HOME)
    assert page.get_by_role("heading", name="New chat").count() == 1


@pytest.mark.browser
def test_change_password_is_reached_from_the_navigation_and_stays_in_the_sites_look(
    screen, user
):
    from conftest import PASSWORD, log_in

    page = screen
    log_in(page, "alice")
    navigation(page).get_by_role("link", name="Change password").click()
    page.wait_for_url(re.compile(r"/accounts/password_change/$"))
    assert page.get_by_role("heading", name="Change your password").is_visible()
    assert page.get_by_text("Django administration").count() == 0
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a new and longer passphrase")
    page.get_by_label("New password confirmation").fill("a new and longer passphrase")
    page.get_by_role("button", name="Change my password").click()

    page.get_by_role("heading", name="Your password was changed").wait_for()
    user.refresh_from_db()
    assert user.check_password("a new and longer passphrase")
    page.get_by_role("link", name="Back to the chat").click()
    page.wait_for_url(HOME)  # still logged in, in the chat


@pytest.mark.browser
def test_a_member_stopped_by_the_team_budget_reads_why_and_sees_it_on_the_usage_page(
    screen, user, make_api_key, settings
):
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from conftest import log_in
    from conversations.models import Team, UsageDaily, UserLimit

    page = screen
    settings.CHATSITE_DEFAULT_MONTHLY_TOKENS = None
    support = Group.objects.create(name="Support")
    user.groups.add(support)
    make_api_key(everyone=False, default_model="gpt-4o-mini").teams.add(support)
    Team.objects.create(group=support, monthly_token_budget=1000)
    UserLimit.objects.create(user=user, monthly_token_budget=50_000)  # not the one that binds
    UsageDaily.objects.create(day=timezone.localdate(), user=user, team=support, requests=1,
                              prompt_tokens=900, completion_tokens=100, total_tokens=1000)
    log_in(page, "alice")

    send(page, "One more, please")
    page.get_by_role("alert").get_by_text(
        re.compile(r"^Message: Your team Support has used its monthly budget of 1,000 tokens\.")
    ).wait_for(timeout=5000)
    assert page.get_by_role("textbox", name="Message").input_value() == "One more, please"

    navigation(page).get_by_role("link", name="Usage").click()
    page.wait_for_url(re.compile(r"/usage/$"))
    budget = page.locator("section.usage-budget")
    assert "Your team Support has used 1,000 of its monthly budget of 1,000 tokens: 0 left." in (
        budget.inner_text())
    assert budget.get_by_text("The budget is used up").is_visible()
    meter = budget.get_by_role("meter", name="Monthly budget used")
    assert meter.is_visible() and meter.get_attribute("value") == "1000"


# -- dark mode ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dark_mode_is_remembered_for_the_member_not_the_browser(client, user):
    client.force_login(user)
    switch = parse(client.get("/")).find("button", role="switch")
    assert switch.text == "Dark mode" and switch.attrs["aria-checked"] == "false"
    assert "data-follows-system" in switch.attrs  # no choice yet: the page follows the system

    response = client.post("/settings/theme", {"theme": "dark", "next": "/usage/"})

    assert response.status_code == 302 and response["Location"] == "/usage/"
    elsewhere = client.__class__()
    elsewhere.force_login(user)  # another browser, the same member
    html = elsewhere.get("/").content.decode()
    assert '<html lang="en" data-theme="dark">' in html
    assert parse(elsewhere.get("/")).find("button", role="switch").attrs["aria-checked"] == "true"


@pytest.mark.django_db
def test_the_theme_is_read_once_a_session_and_a_switch_shows_on_the_next_page(client, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.models import Preference

    Preference.objects.create(user=user, theme="dark")
    client.force_login(user)
    assert 'data-theme="dark"' in client.get("/").content.decode()

    with CaptureQueriesContext(connection) as page_view:
        html = client.get("/").content.decode()
    read = [query["sql"] for query in page_view]  # before the next request clears the log
    client.post("/settings/theme", {"theme": "light", "next": "/"})

    assert 'data-theme="dark"' in html
    assert len(read) > 3 and not [sql for sql in read if "preference" in sql]
    assert 'data-theme="light"' in client.get("/").content.decode()


@pytest.mark.django_db
def test_the_next_member_in_the_same_browser_gets_their_own_theme_and_language(
    client, user, other_user
):
    client.force_login(user)
    client.post("/settings/theme", {"theme": "dark", "next": "/"})
    client.post("/settings/language", {"language": "ko", "next": "/"})
    assert '<html lang="ko" data-theme="dark">' in client.get("/").content.decode()

    client.post("/accounts/logout/")
    # The language cookie belongs to the browser (the login page speaks it); what is checked here
    # is that nothing of the first member's session reaches the second.
    client.cookies.pop("django_language", None)
    client.force_login(other_user)

    assert '<html lang="en">' in client.get("/").content.decode()


@pytest.mark.django_db
def test_the_theme_switch_goes_back_only_to_this_site(client, user):
    client.force_login(user)

    response = client.post("/settings/theme", {"theme": "light", "next": "https://evil.example/"})

    assert response["Location"] == "/"


@pytest.mark.browser
def test_the_dark_mode_switch_follows_the_system_until_the_member_chooses(screen, user):
    from conftest import log_in

    page = screen
    log_in(page, "alice")
    system = "dark" if page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") else (
        "light")
    background = "getComputedStyle(document.body).backgroundColor"
    before = page.evaluate(background)
    switch = navigation(page).get_by_role("switch", name="Dark mode")
    assert switch.get_attribute("aria-checked") == ("true" if system == "dark" else "false")

    with page.expect_navigation():
        switch.click()

    switch = navigation(page).get_by_role("switch", name="Dark mode")
    assert switch.get_attribute("aria-checked") == ("false" if system == "dark" else "true")
    assert page.evaluate(background) != before
    page.reload()
    assert page.evaluate(background) != before  # remembered


# -- chat settings -----------------------------------------------------------------------------


@IN_TRANSACTIONS
def test_chat_settings_are_sent_upstream_exactly_and_apply_from_the_next_message(
    alice, api_key, fake_upstream
):
    form = {"content": "Hi", "model": f"{api_key.pk}:gpt-4o-mini",
            "instructions": "Answer in one word.", "temperature": "0.3", "max_length": "50"}
    first = finished_reply(Message.objects.get(pk=_post(alice, "/c/new/messages", form)))

    body = fake_upstream.chat_requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    document = parse(alice.get(f"/c/{first.conversation_id}/"))
    assert document.find("textarea", name="instructions").text == "Answer in one word."
    assert "temperature 0.3" in document.find("details", class_="chat-settings").text

    changed = {**form, "content": "Again", "instructions": "", "temperature": "", "max_length": ""}
    finished_reply(Message.objects.get(pk=_post(alice, f"/c/{first.conversation_id}/messages",
                                                changed)))
    body = fake_upstream.chat_requests[-1].body
    assert body["messages"][0]["role"] == "user"
    assert "temperature" not in body and "max_tokens" not in body


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value", "error"), [
    ("temperature", "2.5", "Temperature: Ensure this value is less than or equal to 2."),
    ("temperature", "-0.1", "Temperature: Ensure this value is greater than or equal to 0."),
    ("max_length", "0", "Maximum length: Ensure this value is greater than or equal to 1."),
    ("max_length", "999999999", "Maximum length: Ensure this value is less than or equal to"),
])
def test_chat_settings_out_of_range_get_a_message_naming_the_field(alice, api_key, field, value,
                                                                    error):
    response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{api_key.pk}:gpt-4o-mini",
                                              "instructions": "", field: value})

    assert response.status_code == 400 and error in response.content.decode()
    assert not Message.objects.exists()


def _post(client, url: str, data: dict) -> int:
    response = client.post(url, data)
    assert response.status_code == 302, response.content[:400]
    return Message.objects.filter(role="assistant").latest("id").pk


# -- presets -----------------------------------------------------------------------------------


@pytest.fixture
def support(user):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="Support")
    user.groups.add(team)
    return team


def preset_of(api_key, **fields):
    from conversations.models import Preset

    fields.setdefault("name", "Translator")
    return Preset.objects.create(api_key=api_key, model="gpt-4o", **fields)


@IN_TRANSACTIONS
def test_a_team_preset_is_offered_preselected_and_its_settings_reach_the_upstream(
    alice, api_key, fake_upstream, support
):
    from conversations.models import Team

    preset = preset_of(api_key, instructions="Translate into Korean.", temperature="0.2")
    preset.teams.add(support)
    Team.objects.create(group=support, default_preset=preset)

    document = parse(alice.get("/"))
    select = document.find("select", name="preset")
    assert [o.text for o in select.find_all("option")] == ["No preset", "Translator"]
    assert select.find("option", selected="").text == "Translator"
    assert document.find("textarea", name="instructions").text == "Translate into Korean."
    assert document.find("select", name="model").find("option", selected="").text == "gpt-4o"

    # Without a script the settings fields come empty: the chosen preset fills them in.
    reply = _post(alice, "/c/new/messages", {"content": "Good morning", "preset": preset.pk,
                                             "model": f"{api_key.pk}:gpt-4o", "instructions": ""})
    finished_reply(Message.objects.get(pk=reply))
    body = fake_upstream.chat_requests[-1].body
    assert body["model"] == "gpt-4o" and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Translate into Korean."}


@pytest.mark.django_db
def test_a_preset_of_another_team_or_member_is_not_offered_nor_accepted(
    alice, api_key, other_user, django_user_model
):
    from django.contrib.auth.models import Group

    others = Group.objects.create(name="Sales")
    theirs = preset_of(api_key, name="Sales pitch")
    theirs.teams.add(others)
    private = preset_of(api_key, name="Mallory's", owner=other_user)

    assert parse(alice.get("/")).find("select", name="preset").find_all("option")[1:] == []
    for preset in (theirs, private):
        response = alice.post("/c/new/messages", {"content": "Hi", "instructions": "",
                                                  "model": f"{api_key.pk}:gpt-4o-mini",
                                                  "preset": preset.pk})
        assert response.status_code == 400
        assert "That preset is not available to you" in response.content.decode()


@pytest.mark.django_db
def test_a_member_saves_their_own_preset_and_finds_it_on_a_new_chat(alice, user, api_key):
    from conversations.models import Preset

    response = alice.post("/presets/save", {
        "content": "", "model": f"{api_key.pk}:gpt-4o", "instructions": "Be brief.",
        "temperature": "0.5", "max_length": "", "preset_name": "Brief"}, follow=True)

    preset = Preset.objects.get()
    assert (preset.owner, preset.name, preset.model, preset.instructions) == (
        user, "Brief", "gpt-4o", "Be brief.")
    assert "Preset “Brief” saved" in response.content.decode()
    assert "Brief (yours)" in [o.text for o in parse(alice.get("/")).find(
        "select", name="preset").find_all("option")]
    refused = alice.post("/presets/save", {"model": f"{api_key.pk}:gpt-4o", "instructions": "",
                                           "preset_name": ""}, follow=True)
    assert "Preset name: Give the preset a name." in refused.content.decode()
    assert Preset.objects.count() == 1


@pytest.mark.browser
def test_a_preset_fills_in_the_chat_settings_which_reach_the_upstream_and_show_on_the_chat(
    screen, user, api_key, fake_upstream, support
):
    from conftest import log_in
    from conversations.models import Team

    page = screen
    translator = preset_of(api_key, instructions="Translate into Korean.", temperature="0.2")
    translator.teams.add(support)
    Team.objects.create(group=support, default_preset=translator)
    preset_of(api_key, name="Brief", owner=user, instructions="Be brief.", temperature="0.7",
              max_output_tokens=40)
    log_in(page, "alice")
    page.locator("details.chat-settings > summary").click()  # "Chat settings"
    preset = page.get_by_label("Preset", exact=True)
    instructions = page.get_by_label("Instructions")
    temperature = page.get_by_label("Temperature")
    maximum = page.get_by_label("Maximum length")
    assert preset.evaluate("select => select.selectedOptions[0].text") == "Translator"
    assert instructions.input_value() == "Translate into Korean."
    assert float(temperature.input_value()) == 0.2

    preset.select_option(label="Brief (yours)")
    assert (instructions.input_value(), maximum.input_value()) == ("Be brief.", "40")
    assert temperature.input_value() == "0.7"  # as written, not "0.70"
    assert page.get_by_label("Model").evaluate("s => s.selectedOptions[0].text") == "gpt-4o"
    temperature.fill("0.3")  # the member's own change to the preset
    send(page, "Summarise the meeting")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)

    body = fake_upstream.chat_requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4o", 0.3, 40)
    summary = page.locator("details.chat-settings > summary").inner_text()
    assert "instructions set" in summary and "temperature 0.3" in summary
    assert "up to 40 tokens" in summary

    page.locator("details.chat-settings > summary").click()
    instructions.fill("Answer at length.")
    send(page, "And the decisions?")
    page.locator("article.message--assistant.message--complete").nth(1).wait_for(timeout=10000)
    assert fake_upstream.chat_requests[-1].body["messages"][0] == {
        "role": "system", "content": "Answer at length."}  # from the next message on


# -- formatted while it streams ----------------------------------------------------------------


@pytest.mark.browser
def test_headings_and_highlighted_code_appear_while_the_reply_streams(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen

    tokens = ["# Plan", "\n\n", "```python\n", "print('hi')\n", "```\n", "\n",
              "Now ", "the ", "rest ", "is ", "still ", "coming"]
    fake_upstream.queue(Scenario(tokens=tokens, hang_after=len(tokens)))  # all but the end
    log_in(page, "alice")
    page.get_by_role("textbox", name="Message").fill("Plan it")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    reply = page.locator("article.message--assistant").last

    reply.locator(".message__blocks h1").wait_for(timeout=5000)
    reply.locator(".message__blocks pre.highlight code.language-python span").first.wait_for(
        timeout=5000)
    # Not over yet: still streaming, or still "pending" as the page was drawn before the reply
    # was claimed (the class is the server's; the text comes over the stream either way).
    assert re.search(r"message--(pending|streaming)\b", reply.get_attribute("class") or "")
    wait_for(lambda: reply.locator(".message__tail").inner_text() == "Now the rest is still coming",
             5)
    assert reply.locator(".message__tail *").count() == 0  # the open tail is text

    fake_upstream.release()
    page.locator("article.message--assistant.message--complete").wait_for(timeout=5000)
    live = reply.locator(".message__body").inner_html()
    page.reload()
    assert page.locator("article.message--assistant").last.locator(
        ".message__body").inner_html() == live  # the final HTML is what a reload shows


@pytest.mark.browser
def test_after_several_replies_without_a_reload_only_the_last_offers_regenerate(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen

    log_in(page, "alice")
    for number, text in enumerate(["First", "Second", "Third"], start=1):
        page.get_by_role("textbox", name="Message").fill(text)
        page.get_by_role("button", name="Send").click()
        if number == 1:
            page.wait_for_url(re.compile(r"/c/\d+/$"))
        page.locator("article.message--assistant.message--complete").nth(number - 1).wait_for(
            timeout=10000)
        page.locator("#composer").get_by_role("button", name="Send").wait_for(timeout=5000)

    regenerate = page.get_by_role("button", name="Regenerate")
    assert regenerate.count() == 1
    last = page.locator("article.message--assistant").last
    assert last.get_by_role("button", name="Regenerate").count() == 1


def test_a_long_line_streamed_in_pieces_finishes_its_block_at_the_blank_line_after_it():
    from conversations.rendering import BlockSplitter

    splitter = BlockSplitter()
    finished = [splitter.feed(piece) for piece in [*["word "] * 2000, "\n", "\nnext"]]

    assert finished[-1] == "word " * 2000 + "\n\n" and splitter.tail == "next"
    assert not any(finished[:-1])


@pytest.mark.parametrize("text", [
    "# Title\n\nPara one\nstill\n\n```py\nx=1\n\ny=2\n```\n\ntail",
    "\n\nx", "a\n\nb\n\n", "```\n\nopen fence\n\n", "no blank line", "- a\n\n- b\n\nend",
    "a long line " * 400 + "\n\n```\n" + "code " * 300 + "\n\n```\n\n" + "the end " * 200,
])
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_finished_blocks_are_the_same_however_the_reply_arrives(text, size):
    from conversations.rendering import BlockSplitter, split_blocks

    splitter, finished = BlockSplitter(), ""
    for start in range(0, len(text), size):
        finished += splitter.feed(text[start:start + size])

    assert (finished, splitter.tail) == split_blocks(text)
    assert finished + splitter.tail == text
