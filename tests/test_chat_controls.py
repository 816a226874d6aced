"""Controls that are always right: only the last reply offers Regenerate or Retry, a second
message cannot cut a streaming reply off, a member without a model reads why and whom to ask,
each message shows its model and time with a Copy button, and the keyboard, the page and the
composer follow the reply."""

from __future__ import annotations

import re

import pytest

from conftest import wait_for
from conversations.models import Conversation, Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, send_message
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
    fake_upstream.queue(Scenario(tokens=["Still", " writing", " this."], token_delay=0.3))
    first = send_message(alice, api_key, "First")
    wait_for(lambda: Message.objects.get(pk=first.pk).status == "streaming")

    refused = alice.post(f"/c/{first.conversation_id}/messages",
                         {"content": "Second", "model": f"{api_key.pk}:gpt-4o-mini"})

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


SCREENS = {
    "desktop, light": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "light"},
    "phone, dark": {"viewport": {"width": 390, "height": 844}, "color_scheme": "dark",
                    "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=sorted(SCREENS))
def screen(request, browser, live_url):
    """A page at a desktop size in light colours, or a phone's in dark."""
    from conftest import watch

    context = browser.new_context(base_url=live_url, **SCREENS[request.param])
    tab = context.new_page()
    errors = watch(tab)
    yield tab
    context.close()
    assert not errors, errors


@pytest.mark.browser
def test_while_a_reply_streams_the_composer_offers_stop_and_esc_stops_it(
    screen, user, api_key, fake_upstream
):
    from conftest import log_in

    page = screen

    fake_upstream.queue(Scenario(tokens=["Never", " ending", " story"], hang_after=2))
    log_in(page, "alice")
    page.get_by_role("textbox", name="Message").fill("Tell me")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    composer = page.locator("#composer")
    composer.get_by_role("button", name="Stop").wait_for(timeout=5000)
    assert not composer.get_by_role("button", name="Send").is_visible()

    page.keyboard.press("Escape")

    page.get_by_text("Stopped: the reply is incomplete.").wait_for(timeout=3000)
    composer.get_by_role("button", name="Send").wait_for(timeout=3000)
    assert page.get_by_role("button", name="Copy").last.is_visible()


@pytest.mark.browser
def test_the_page_follows_the_reply_until_the_member_scrolls_up_then_offers_jump_to_latest(
    page, user, api_key, fake_upstream
):
    from conftest import log_in

    page.set_viewport_size({"width": 1000, "height": 500})
    fake_upstream.queue(Scenario(tokens=[f"line {n}\n\n" for n in range(60)], token_delay=0.05))
    log_in(page, "alice")
    page.get_by_role("textbox", name="Message").fill("Write a lot")
    page.get_by_role("button", name="Send").click()
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
    page.wait_for_timeout(300)
    assert messages.evaluate("m => m.scrollTop") == top  # no longer follows

    jump.click()
    assert messages.evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight < 150")
    assert not jump.is_visible()


PHONE = {"width": 390, "height": 844}


@pytest.mark.browser
def test_on_a_phone_no_page_is_wider_than_the_screen_and_the_menu_reaches_everything(
    browser, live_url, user, api_key, fake_upstream
):
    from conftest import log_in, watch

    fake_upstream.queue(Scenario(tokens=["| a | b |\n|---|---|\n| " + "wide " * 60 + "| x |\n\n",
                                         "`" + "x" * 300 + "`"]))
    context = browser.new_context(base_url=live_url, viewport=PHONE, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    errors = watch(phone)
    log_in(phone, "alice")
    phone.get_by_role("textbox", name="Message").fill("A wide table, please")
    phone.get_by_role("button", name="Send").click()
    phone.wait_for_url(re.compile(r"/c/\d+/$"))
    phone.locator("article.message--assistant.message--complete").wait_for(timeout=10000)
    conversation = phone.url

    overflowing = {}
    for path in [conversation, "/", "/usage/", "/accounts/password_change/",
                 conversation + "delete"]:
        phone.goto(path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            overflowing[path] = width
    assert overflowing == {}

    phone.goto(conversation)
    for name in ("Send",):
        box = phone.get_by_role("button", name=name).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    delete = phone.get_by_role("link", name="Delete").bounding_box()
    assert delete and delete["x"] + delete["width"] <= PHONE["width"]
    assert not phone.get_by_role("link", name="Usage").is_visible()

    phone.get_by_role("button", name="Menu").click()
    for name in ("New chat", "Usage", "Change password"):
        assert phone.locator("#sidebar").get_by_role("link", name=name).is_visible(), name
    assert phone.get_by_role("button", name="Log out").is_visible()
    phone.locator("#sidebar").get_by_role("link", name="Usage").click()
    phone.wait_for_url(re.compile(r"/usage/$"))
    context.close()
    assert not errors, errors


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
def test_the_theme_switch_goes_back_only_to_this_site(client, user):
    client.force_login(user)

    response = client.post("/settings/theme", {"theme": "light", "next": "https://evil.example/"})

    assert response["Location"] == "/"


@pytest.mark.browser
@pytest.mark.parametrize("system", ["light", "dark"])
def test_the_dark_mode_switch_follows_the_system_until_the_member_chooses(
    browser, live_url, user, system
):
    from conftest import log_in, watch

    context = browser.new_context(base_url=live_url, color_scheme=system)
    tab = context.new_page()
    errors = watch(tab)
    log_in(tab, "alice")
    background = "getComputedStyle(document.body).backgroundColor"
    switch = tab.get_by_role("switch", name="Dark mode")
    assert switch.get_attribute("aria-checked") == ("true" if system == "dark" else "false")
    before = tab.evaluate(background)

    switch.click()
    tab.wait_for_load_state()

    assert tab.get_by_role("switch", name="Dark mode").get_attribute("aria-checked") == (
        "false" if system == "dark" else "true")
    assert tab.evaluate(background) != before
    tab.reload()
    assert tab.evaluate(background) != before  # remembered
    context.close()
    assert not errors, errors


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
    assert "message--streaming" in (reply.get_attribute("class") or "")  # not over yet
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


@pytest.mark.parametrize("text", [
    "# Title\n\nPara one\nstill\n\n```py\nx=1\n\ny=2\n```\n\ntail",
    "\n\nx", "a\n\nb\n\n", "```\n\nopen fence\n\n", "no blank line", "- a\n\n- b\n\nend",
])
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_finished_blocks_are_the_same_however_the_reply_arrives(text, size):
    from conversations.rendering import BlockSplitter, split_blocks

    splitter, finished = BlockSplitter(), ""
    for start in range(0, len(text), size):
        finished += splitter.feed(text[start:start + size])

    assert (finished, splitter.tail) == split_blocks(text)
    assert finished + splitter.tail == text
