"""Each model gets what it accepts (issue 11): the request body, exactly, at the fake upstream.

gpt-4o takes ``max_tokens``, ``temperature`` and its instructions as ``system``; the o-series and
GPT-5 take ``max_completion_tokens``, no ``temperature``, instructions as ``developer`` and the
member's ``reasoning_effort``; a model the catalog does not know is sent the conservative set.
A parameter the provider still refuses is named to the member and the admin, with the model.
A conversation longer than the model's window is sent without its earliest turns, and the page
says so, after a reload too. Where the provider accepts them, every request carries the member's
``safety_identifier`` (a keyed hash, never the username) and the conversation's
``prompt_cache_key``. A reasoning model may think for minutes: the page says it is thinking, with
the seconds, and the first-text deadline is the catalog's.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import wait_for
from conversations import catalog, payload
from conversations.models import CatalogModel, Conversation, Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply
from tests.helpers import page as parse

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "gpt-5", "llama-3.1-8b-instruct"]
SETTINGS = {"instructions": "Answer briefly.", "temperature": "0.3", "max_length": "50",
            "reasoning_effort": "high"}


@pytest.fixture
def key(make_api_key, fake_upstream):
    """A key whose provider lists models of every style."""
    fake_upstream.default.models = MODELS
    made = make_api_key(default_model="gpt-4o")
    fake_upstream.reset()  # forget the listing request
    # A later listing (the watchdog's, should the first have failed on a loaded machine) lists
    # the same models.
    fake_upstream.default.models = MODELS
    return made


def ask(client, key, model: str, text: str = "Hi", conversation=None, **settings) -> Message:
    """Post a message with the composer's chat settings; return the finished reply."""
    url = f"/c/{conversation.pk}/messages" if conversation else "/c/new/messages"
    response = client.post(url, {"content": text, "model": f"{key.pk}:{model}", **settings})
    assert response.status_code == 302, response.content.decode()[:800]
    return finished_reply(Message.objects.filter(role="assistant").latest("id"))


def sent(fake_upstream) -> dict:
    return fake_upstream.chat_requests[-1].body


# -- the request, per model style --------------------------------------------------------------


def expected_body(model: str, *, role: str, extra: dict) -> dict:
    return {
        "model": model,
        "messages": [{"role": role, "content": "Answer briefly."},
                     {"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


@pytest.mark.parametrize(("model", "role", "extra"), [
    ("gpt-4o", "system", {"temperature": 0.3, "max_tokens": 50}),
    ("gpt-4o-mini", "system", {"temperature": 0.3, "max_tokens": 50}),
    ("o3", "developer", {"max_completion_tokens": 50, "reasoning_effort": "high"}),
    ("o4-mini", "developer", {"max_completion_tokens": 50, "reasoning_effort": "high"}),
    ("gpt-5", "developer", {"max_completion_tokens": 50, "reasoning_effort": "high"}),
])
def test_each_openai_model_style_gets_exactly_the_parameters_it_accepts(
    alice, user, key, fake_upstream, model, role, extra
):
    reply = ask(alice, key, model, **SETTINGS)

    conversation = Conversation.objects.get(pk=reply.conversation_id)
    assert sent(fake_upstream) == expected_body(model, role=role, extra={
        **extra, "safety_identifier": payload.safety_identifier(user.pk),
        "prompt_cache_key": payload.prompt_cache_key(conversation.pk)})


def test_a_model_the_catalog_does_not_know_is_sent_the_conservative_set(
    alice, user, key, fake_upstream
):
    ask(alice, key, "llama-3.1-8b-instruct", **SETTINGS)

    # max_tokens, system, temperature; no reasoning effort, nothing provider-specific.
    assert sent(fake_upstream) == expected_body(
        "llama-3.1-8b-instruct", role="system", extra={"temperature": 0.3, "max_tokens": 50})


def test_without_settings_only_the_identifiers_are_added(alice, user, key, fake_upstream):
    reply = ask(alice, key, "o3", text="Plain", instructions="", temperature="", max_length="",
                reasoning_effort="")

    assert sent(fake_upstream) == {
        "model": "o3", "messages": [{"role": "user", "content": "Plain"}], "stream": True,
        "stream_options": {"include_usage": True},
        "safety_identifier": payload.safety_identifier(user.pk),
        "prompt_cache_key": payload.prompt_cache_key(reply.conversation_id)}


def test_the_length_asked_for_is_held_to_the_models_output_limit(alice, key, fake_upstream):
    ask(alice, key, "gpt-4o", max_length="100000", instructions="")
    assert sent(fake_upstream)["max_tokens"] == 16_384
    ask(alice, key, "gpt-5", max_length="100000", instructions="")
    assert sent(fake_upstream)["max_completion_tokens"] == 100_000


def test_the_reasoning_effort_is_kept_with_the_conversation_and_sent_to_reasoning_models_only(
    alice, key, fake_upstream
):
    first = ask(alice, key, "o3", **{**SETTINGS, "temperature": ""})
    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert conversation.reasoning_effort == "high"
    assert "reasoning effort high" in parse(alice.get(f"/c/{conversation.pk}/")).find(
        "details", class_="chat-settings").text

    ask(alice, key, "o3", text="Again", conversation=conversation)  # settings not sent: kept
    assert sent(fake_upstream)["reasoning_effort"] == "high"
    ask(alice, key, "gpt-4o", text="And you?", conversation=conversation)
    assert "reasoning_effort" not in sent(fake_upstream)


def test_a_preset_keeps_the_reasoning_effort_and_a_new_chat_from_it_sends_it(
    alice, user, key, fake_upstream
):
    from conversations.models import Preset

    response = alice.post("/presets/save", {
        "model": f"{key.pk}:o3", "preset_name": "Deep", "instructions": "",
        "reasoning_effort": "low"})
    assert response.status_code == 302
    preset = Preset.objects.get(owner=user)
    assert (preset.model, preset.reasoning_effort) == ("o3", "low")

    # Nothing typed in the chat settings: the preset's apply.
    ask(alice, key, "o3", preset=str(preset.pk), instructions="")
    assert sent(fake_upstream)["reasoning_effort"] == "low"


def test_an_effort_not_offered_is_refused_naming_the_field(alice, key, fake_upstream):
    response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:o3",
                                              "instructions": "", "reasoning_effort": "extreme"})
    assert response.status_code == 400
    assert "Reasoning effort: Select a valid choice." in response.content.decode()
    assert not fake_upstream.chat_requests


def test_the_admins_overrides_change_what_is_sent(alice, key, fake_upstream):
    CatalogModel.objects.filter(api_key=key, model="gpt-4o").update(
        length_parameter="max_completion_tokens", system_role="developer",
        accepts_temperature=False, accepts_safety_identifier=False,
        accepts_prompt_cache_key=False)

    ask(alice, key, "gpt-4o", **SETTINGS)

    body = sent(fake_upstream)
    assert body["messages"][0]["role"] == "developer"
    assert body["max_completion_tokens"] == 50
    assert not {"max_tokens", "temperature", "safety_identifier", "prompt_cache_key",
                "reasoning_effort"} & set(body)


# -- a parameter the provider still refuses ------------------------------------------------------


def refused(param: str, code: str, message: str) -> Scenario:
    return Scenario(status=400, raw_error_body=json.dumps({"error": {
        "message": message, "type": "invalid_request_error", "param": param, "code": code}}))


def test_a_refused_parameter_is_named_with_the_model_to_the_member_and_the_admin(
    alice, key, fake_upstream, admin_client
):
    CatalogModel.objects.filter(api_key=key, model="o3").update(accepts_temperature=True)
    fake_upstream.queue(refused("temperature", "unsupported_parameter",
                                "Unsupported parameter: 'temperature' is not supported with "
                                "this model."))

    reply = ask(alice, key, "o3", **SETTINGS)

    assert reply.status == "error" and reply.error_type == "parameter"
    assert reply.error_code == "unsupported_parameter"
    assert "“temperature”" in reply.error_message and "o3" in reply.error_message
    assert "is not supported with this model" in reply.error_message
    assert len(fake_upstream.chat_requests) == 1  # refused for its parameters: not sent again
    notice = parse(alice.get(f"/c/{reply.conversation_id}/")).find(
        "article", id=f"message-{reply.pk}").find("p", class_="message__notice").text
    assert "refused the parameter “temperature” for the model o3" in notice
    admin_page = admin_client.get(f"/admin/conversations/message/{reply.pk}/change/")
    assert "refused the parameter “temperature” for the model o3" in admin_page.content.decode()


def test_a_refused_value_names_the_parameter_too(alice, key, fake_upstream):
    fake_upstream.queue(refused("messages[0].role", "unsupported_value",
                                "Unsupported value: 'messages[0].role' does not support "
                                "'system' with this model."))
    reply = ask(alice, key, "gpt-4o", **SETTINGS)
    assert "“messages[0].role” for the model gpt-4o" in reply.error_message


# -- long conversations ------------------------------------------------------------------------


def test_a_long_conversation_leaves_out_its_earliest_turns_and_the_page_says_so(
    alice, user, key, fake_upstream
):
    # 500 tokens of window, 100 kept for the reply: four earlier messages of about 104 tokens
    # each (400 bytes and the framing) do not fit with the instructions and the new message.
    CatalogModel.objects.filter(api_key=key, model="gpt-4o").update(context_window=500,
                                                                    max_output_tokens=100)
    conversation = Conversation.objects.create(owner=user, api_key=key, model="gpt-4o",
                                               system_prompt="Answer briefly.", title="Long")
    for number, role in enumerate(["user", "assistant", "user", "assistant"]):
        Message.objects.create(conversation=conversation, role=role, model="gpt-4o",
                               content=f"{number}" * 400)

    reply = ask(alice, key, "gpt-4o", text="Newest question", conversation=conversation)

    messages = sent(fake_upstream)["messages"]
    assert messages[0] == {"role": "system", "content": "Answer briefly."}  # always sent
    assert [m["content"][:1] for m in messages[1:-1]] == ["2", "3"]  # the first turn left out
    assert messages[-1] == {"role": "user", "content": "Newest question"}  # always sent
    assert reply.context_omitted == 2
    alice.get("/")  # another page first: what follows is a reload
    article = parse(alice.get(f"/c/{conversation.pk}/")).find("article", id=f"message-{reply.pk}")
    notice = article.find("p", class_="message__context muted")
    assert "Earlier messages were not sent: the 2 earliest messages" in notice.text
    assert "context window" in notice.text


def test_a_conversation_that_fits_is_sent_whole_without_a_notice(alice, key, fake_upstream):
    first = ask(alice, key, "gpt-4o", text="One")
    conversation = Conversation.objects.get(pk=first.conversation_id)
    second = ask(alice, key, "gpt-4o", text="Two", conversation=conversation)

    assert [m["content"] for m in sent(fake_upstream)["messages"]] == ["One", "Hello, world!",
                                                                       "Two"]
    assert second.context_omitted == 0
    page = parse(alice.get(f"/c/{conversation.pk}/"))
    assert not page.find_all("p", class_="message__context muted")


def test_the_newest_message_is_sent_even_when_it_alone_is_too_long(alice, user, key,
                                                                    fake_upstream):
    CatalogModel.objects.filter(api_key=key, model="gpt-4o").update(context_window=100,
                                                                    max_output_tokens=50)
    conversation = Conversation.objects.create(owner=user, api_key=key, model="gpt-4o")
    Message.objects.create(conversation=conversation, role="user", content="old")
    Message.objects.create(conversation=conversation, role="assistant", content="reply")

    reply = ask(alice, key, "gpt-4o", text="x" * 2000, conversation=conversation)

    assert sent(fake_upstream)["messages"] == [{"role": "user", "content": "x" * 2000}]
    assert reply.context_omitted == 2


# -- safety identifier and prompt cache key ----------------------------------------------------


def test_the_safety_identifier_is_stable_per_member_and_never_their_name(
    client, user, other_user, key, fake_upstream
):
    client.force_login(user)
    ask(client, key, "gpt-4o", text="One")
    ask(client, key, "gpt-4o", text="Two")  # another conversation
    client.force_login(other_user)
    ask(client, key, "gpt-4o", text="Three")

    alices = [request.body["safety_identifier"] for request in fake_upstream.chat_requests[:2]]
    mallorys = fake_upstream.chat_requests[2].body["safety_identifier"]
    assert alices[0] == alices[1] != mallorys
    assert re.fullmatch(r"[0-9a-f]{64}", alices[0])
    assert "alice" not in alices[0] and str(user.pk) != alices[0]
    for request in fake_upstream.chat_requests:
        assert "alice" not in json.dumps(request.body) and "mallory" not in json.dumps(
            {k: v for k, v in request.body.items() if k != "messages"})


def test_the_prompt_cache_key_is_one_per_conversation(alice, key, fake_upstream):
    first = ask(alice, key, "gpt-4o", text="One")
    conversation = Conversation.objects.get(pk=first.conversation_id)
    ask(alice, key, "gpt-4o", text="Two", conversation=conversation)
    ask(alice, key, "gpt-4o", text="Elsewhere")

    keys = [request.body["prompt_cache_key"] for request in fake_upstream.chat_requests]
    assert keys[0] == keys[1] != keys[2]
    assert keys[0] == payload.prompt_cache_key(conversation.pk)
    assert re.fullmatch(r"chatsite-[0-9a-f]{32}", keys[0])


# -- thinking, and its deadline ----------------------------------------------------------------


def test_a_reasoning_model_may_think_past_the_sites_first_text_deadline(key, settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 300
    assert catalog.spec_for(key, "o3").first_token_timeout == 600
    assert catalog.spec_for(key, "gpt-4o").first_token_timeout == 300
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 900  # a longer site-wide deadline still holds
    assert catalog.spec_for(key, "o3").first_token_timeout == 900


def test_the_first_text_deadline_is_the_catalogs(alice, key, fake_upstream, settings):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 300
    CatalogModel.objects.filter(api_key=key, model="o3").update(first_token_timeout=1)
    fake_upstream.queue(Scenario(first_token_delay=30, pings=True))

    reply = ask(alice, key, "o3", text="Think")

    assert reply.status == "error" and reply.error_type == "timeout"
    assert "did not start the reply within 1 seconds" in reply.error_message


def test_a_reasoning_reply_says_it_is_thinking_a_plain_one_that_it_waits(alice, key,
                                                                         fake_upstream):
    fake_upstream.queue(Scenario(hang_after=0), Scenario(hang_after=0))
    for model, words in (("o3", "Thinking…"), ("gpt-4o", "Waiting for the model…")):
        response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:{model}"})
        reply = Message.objects.filter(role="assistant").latest("id")
        waiting = parse(alice.get(response["Location"])).find("p", class_="message__waiting muted")
        assert waiting.text.startswith(words)
        alice.post(f"/m/{reply.pk}/stop")
        finished_reply(reply)


# -- in the browser ------------------------------------------------------------------------------



def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


@pytest.mark.browser
def test_while_a_reasoning_model_thinks_the_page_says_so_with_the_seconds(
    screen, user, key, fake_upstream
):
    from conftest import log_in

    page = screen
    fake_upstream.queue(Scenario(tokens=["Solved"], first_token_delay=30))
    page.clock.install()
    log_in(page, "alice")
    page.get_by_label("Model").select_option(label="o3")
    send(page, "Prove it")
    page.wait_for_url(re.compile(r"/c/\d+/$"))

    waiting = page.locator("article.message--assistant .message__waiting")
    waiting.wait_for(timeout=5000)
    assert waiting.inner_text().startswith("Thinking…")
    page.clock.fast_forward(12_000)
    elapsed = waiting.locator(".message__elapsed")
    wait_for(lambda: re.fullmatch(r"(1[2-9]|2\d)\s?s", elapsed.inner_text()), 3)

    page.locator("#composer").get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped: the reply is incomplete.").wait_for(timeout=5000)
    assert not waiting.is_visible()


@pytest.mark.browser
def test_the_reasoning_effort_is_offered_for_reasoning_models_and_reaches_the_upstream(
    screen, user, key, fake_upstream
):
    from conftest import log_in

    page = screen
    log_in(page, "alice")
    page.locator("details.chat-settings > summary").click()  # "Chat settings"
    model = page.get_by_label("Model")
    effort = page.get_by_label("Reasoning effort")
    temperature = page.get_by_label("Temperature")
    assert model.evaluate("s => s.selectedOptions[0].text") == "gpt-4o"
    assert not effort.is_visible() and temperature.is_visible()

    model.select_option(label="o4-mini")
    assert effort.is_visible() and not temperature.is_visible()
    assert effort.evaluate("s => Array.from(s.options, o => o.text)") == [
        "The model's default", "Low", "Medium", "High"]
    effort.select_option(label="High")
    send(page, "Plan my week")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)

    body = sent(fake_upstream)
    assert (body["model"], body["reasoning_effort"]) == ("o4-mini", "high")
    assert "temperature" not in body
    assert "reasoning effort high" in page.locator("details.chat-settings > summary").inner_text()
    page.locator("details.chat-settings > summary").click()
    assert effort.is_visible() and effort.input_value() == "high"
    model.select_option(label="gpt-4o")
    assert not effort.is_visible()
