"""The key never leaves, whatever shape it comes back in.

A provider (or a proxy in front of it) can echo the key it was sent: JSON-escaped, percent- or
HTML-encoded, cut across the fields of an error, half-masked by the provider itself, in a
header, in a model id, in the reply's own text. Each form is sent by the fake upstream for keys
of several shapes (OpenAI's, Groq's, an opaque one with ``/`` and ``-``), and every place such
text can reach is searched — the member's page, the exports, the admin's message pages, the
"Test connection" and "Refresh models" output, the server log and the database row — for any
run of eight characters of the key's secret part, in any of those encodings.

The search below is written apart from the code under test (it does not use ``crypto``), so a
mistake in the scrub cannot hide itself.
"""

from __future__ import annotations

import html
import json
import logging
import random
import re
import string
from urllib.parse import unquote

import pytest

from conftest import read_events, session_for
from conversations import crypto
from conversations.logging import MaskSecretsFilter
from conversations.models import CatalogModel, Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, send_message

pytestmark = pytest.mark.django_db(transaction=True)

KEYS = {
    "openai-project": "sk-proj-Xy7Qm2Vb9LkP3rTz8WnE4sHd6Ju1CaRe5Tg",
    "groq": "gsk_4fT9qLm2Xv7Rb8Nw3Kp6Zs1Hd5Jc0YeAq2",
    "opaque": "k9/Xz+Ab3-Qw7_Lm2Vb9Rt5Yh1Nc8Pd4Fs6",
}
PREFIXES = ("sk-proj-", "gsk_")
RUN = 8


def secret_part(key: str) -> str:
    return next((key[len(p):] for p in PREFIXES if key.startswith(p)), key)


def decoded_forms(text: str) -> set[str]:
    """``text`` and what it reads as once escapes and encodings are undone (repeatedly)."""
    forms = {text}
    for _round in range(3):
        for form in list(forms):
            forms.add(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), form)
                      .replace("\\/", "/"))
            forms.add(unquote(form))
            forms.add(html.unescape(form))
    return forms


def leaks(text: str, key: str) -> list[str]:
    """Return the runs of the key's secret part found in ``text``, in any encoding."""
    private = secret_part(key)
    runs = {private[i:i + RUN] for i in range(len(private) - RUN + 1)}
    return sorted({run for form in decoded_forms(text) for run in runs if run in form})


def percent(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


def escaped(text: str) -> str:
    """Every character as a JSON ``\\uXXXX`` escape, left in the message after parsing."""
    return "".join(f"\\u{ord(char):04x}" for char in text)


def error_body(**fields: str) -> str:
    error = {"message": "Incorrect API key provided.", "type": "invalid_request_error",
             "param": None, "code": "invalid_api_key", **fields}
    return json.dumps({"error": error})


def disguises(key: str) -> dict[str, Scenario]:
    third = len(key) // 3
    return {
        "json-escaped dashes and slashes": Scenario(status=401, raw_error_body=error_body(
            message="Incorrect API key provided: " + key.replace("-", "\\u002d")
            .replace("/", "\\/"))),
        "every character escaped": Scenario(status=401, raw_error_body=error_body(
            message=f"key={escaped(key)}")),
        "percent-encoded": Scenario(status=400, raw_error_body=error_body(
            message=f"Bad Authorization header: Bearer%20{percent(key)}", code="bad_header")),
        "split across fields": Scenario(status=400, raw_error_body=error_body(
            message=f"Key starts {key[:third]}", type=key[third:2 * third],
            param=key[2 * third:], code=key[third:])),
        "half-masked by the provider": Scenario(status=401, raw_error_body=error_body(
            message=f"Incorrect API key provided: {key[:-6]}******.")),
        "whole key in type, code and param": Scenario(status=400, raw_error_body=error_body(
            type=key, code=key, param=key)),
        "HTML character references in a text body": Scenario(
            status=403, content_type="text/plain",
            raw_error_body="forbidden for " + "".join(f"&#{ord(c)};" for c in key)),
        "in a response header": Scenario(content_type=f"text/html; boundary={key}"),
        "mid-stream error event": Scenario(event_error_after=1, error_message=percent(key)),
        "in the reply's own text": Scenario(tokens=["Your key is ", key[:10], key[10:], "."]),
    }


@pytest.fixture
def captured_log():
    """What the server logged during the test, through the site's own filter."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture(level=logging.DEBUG)
    handler.addFilter(MaskSecretsFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lines
    root.removeHandler(handler)


def places(client, admin, reply: Message) -> dict[str, str]:
    """Every text a key echoed into this reply could have reached."""
    conversation = reply.conversation_id
    row = Message.objects.filter(pk=reply.pk).values().get()
    return {
        "database row": json.dumps(row, default=str, ensure_ascii=False),
        "member's page": client.get(f"/c/{conversation}/").content.decode(),
        "Markdown export": client.get(f"/c/{conversation}/export").content.decode(),
        "JSON export": client.get(f"/c/{conversation}/export?format=json").content.decode(),
        "admin message page": admin.get(
            f"/admin/conversations/message/{reply.pk}/change/").content.decode(),
        "admin message list": admin.get("/admin/conversations/message/").content.decode(),
    }


@pytest.mark.parametrize("shape", sorted(KEYS))
def test_a_key_echoed_in_any_form_reaches_no_page_export_row_or_log_line(
    shape, alice, admin_client, make_api_key, fake_upstream, captured_log
):
    key = KEYS[shape]
    api_key = make_api_key(secret=key, default_model="gpt-4o-mini")
    found = {}
    for name, scenario in disguises(key).items():
        fake_upstream.queue(scenario)
        reply = finished_reply(send_message(alice, api_key, f"Try {name}"))
        for place, text in places(alice, admin_client, reply).items():
            if leaks(text, key):
                found[f"{name} → {place}"] = leaks(text, key)
    for line in captured_log:
        if leaks(line, key):
            found[f"log: {line[:80]}"] = leaks(line, key)
    assert not found
    assert len(fake_upstream.chat_requests) == len(disguises(key))  # each form was really sent


@pytest.mark.parametrize("seed", range(20))
def test_every_run_of_a_key_is_found_in_any_text_around_it(seed):
    """The scrubber looks only at stretches of the keys' own characters: it finds exactly the
    spans a check of every position finds, whatever surrounds the runs (key characters, others,
    characters special in a pattern, none)."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "_-]^\\["
    secrets = ["sk-proj-" + "".join(rng.choice(alphabet) for _ in range(48)) for _ in range(2)]
    secrets.append("gsk_Ab3-x9")  # a private part too short for a run: masked whole
    scrubber = crypto.Scrubber(secrets)
    run = crypto.RUN
    grams = {secret[8:][i:i + run] for secret in secrets[:2] for i in range(49 - run)}
    around = alphabet + " .\n世€"
    for _ in range(50):
        parts = []
        for _ in range(rng.randint(0, 4)):
            parts.append("".join(rng.choice(around) for _ in range(rng.randint(0, 12))))
            secret = rng.choice(secrets)
            start = rng.randint(0, len(secret) - 1)
            parts.append(secret[start:start + rng.randint(1, 20)])
        text = "".join(parts)
        expected: list[tuple[int, int]] = []
        for i in range(len(text) - run + 1):  # every position, merging overlaps
            if text[i:i + run] in grams:
                if expected and expected[-1][1] >= i:
                    expected[-1] = (expected[-1][0], i + run)
                else:
                    expected.append((i, i + run))
        start = text.find("Ab3-x9")
        while start >= 0:
            expected.append((start, start + 6))
            start = text.find("Ab3-x9", start + 1)
        assert scrubber._spans(text) == sorted(expected), text


def test_the_streamed_reply_hides_an_echoed_key_split_across_tokens(
    user, make_api_key, fake_upstream, live_url
):
    key = KEYS["groq"]
    api_key = make_api_key(secret=key, default_model="gpt-4o-mini")
    fake_upstream.queue(Scenario(tokens=["Key: ", key[:9], key[9:20], key[20:], " ok"],
                                 token_delay=0.05))
    session = session_for(live_url, user.username)
    page = session.get(f"{live_url}/").text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    session.post(f"{live_url}/c/new/messages", data={
        "content": "What is my key?", "model": f"{api_key.pk}:gpt-4o-mini",
        "csrfmiddlewaretoken": csrf}, headers={"Referer": f"{live_url}/"})
    reply = Message.objects.filter(role="assistant").latest("id")
    with session.get(f"{live_url}/m/{reply.pk}/stream", stream=True, timeout=15) as response:
        streamed = "".join(event.data for event in read_events(response))

    assert "Key: " in streamed and " ok" in streamed
    assert not leaks(streamed, key)
    assert not leaks(finished_reply(reply).content, key)


@pytest.mark.parametrize("shape", sorted(KEYS))
def test_test_connection_and_refresh_models_show_no_echoed_key(
    shape, admin_client, make_api_key, fake_upstream, captured_log
):
    key = KEYS[shape]
    api_key = make_api_key(secret=key)
    outputs = {}
    fake_upstream.models_status = 401
    fake_upstream.default = Scenario(raw_error_body=error_body(
        message=f"Incorrect API key provided: {key[:-6]}******", param=percent(key)))
    for action in ("test_connection", "refresh_models"):
        outputs[f"{action}, refused"] = admin_client.post("/admin/conversations/apikey/", {
            "action": action, "_selected_action": [api_key.pk]}, follow=True).content.decode()
    fake_upstream.models_status = 200
    fake_upstream.default = Scenario(models=["gpt-4o", f"gpt-4o-{key}", f"ft:{escaped(key)}"])
    outputs["refresh_models, listed"] = admin_client.post("/admin/conversations/apikey/", {
        "action": "refresh_models", "_selected_action": [api_key.pk]},
        follow=True).content.decode()
    api_key.refresh_from_db()
    catalogued = sorted(CatalogModel.objects.filter(api_key=api_key)
                        .values_list("model", flat=True))
    outputs["listed models"] = json.dumps([api_key.listed_models, catalogued])
    outputs["model catalog page"] = admin_client.get(
        f"/admin/conversations/catalogmodel/?api_key__id__exact={api_key.pk}").content.decode()

    assert "failed" in outputs["test_connection, refused"]
    # A model id holding the key is no model.
    assert api_key.listed_models == catalogued == ["gpt-4o"]
    assert {name: leaks(text, key) for name, text in outputs.items() if leaks(text, key)} == {}
    assert not [line for line in captured_log if leaks(line, key)]


def test_the_log_filter_masks_a_decrypted_key_of_any_shape(make_api_key, fake_upstream):
    from conversations import crypto

    key = KEYS["opaque"]  # no sk- prefix: nothing key-shaped about it
    api_key = make_api_key(secret=key)
    crypto.credentials_for(api_key)  # decrypted in this process
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.key_scrub")
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s", key)
        logger.warning("escaped %s", key.replace("/", "\\/"))
        logger.warning("encoded %s", percent(key))
        try:
            raise RuntimeError(f"boom {key[4:20]}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)

    assert len(lines) == 4
    assert [line for line in lines if leaks(line, key)] == []
    assert "upstream said" in lines[0] and "boom" in lines[3]
