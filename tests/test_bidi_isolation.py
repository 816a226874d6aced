"""Direction controls (a right-to-left override and friends) in titles, usernames, model ids,
team and key names and model output cannot reorder the text around them.

HTML puts such values in ``<bdi>`` or under ``unicode-bidi: isolate``; plain-text places (the
page's ``<title>``, a CSV cell) hold them balanced inside FIRST STRONG ISOLATE ... POP DIRECTIONAL
ISOLATE (``conversations/text.py``). Pages are read with the test client; one browser test
measures the layout.
"""

from __future__ import annotations

import csv
import datetime
import io
import re

import pytest
from django.contrib.auth.models import Group
from django.contrib.staticfiles import finders
from django.test import Client

from conftest import PASSWORD, log_in
from conversations.models import ApiKey, Conversation, Message, UsageDaily
from conversations.text import (
    FSI,
    LRE,
    LRI,
    LRO,
    PDF,
    PDI,
    RLE,
    RLI,
    RLO,
    balance_bidi,
    isolate,
    isolate_if_needed,
)
from tests.helpers import Element
from tests.helpers import page as html

EVIL_TITLE = f"{RLO}evil{LRO} title"
STRAY_CLOSERS = f"stray{PDF} close{PDI} title"
EVIL_NAME = f"{RLO}eve"


def raw_text(element: Element) -> str:
    """Return the element's text exactly, direction controls and spaces included."""
    return "".join(element.parts)


def is_one_isolate(text: str) -> bool:
    """Return whether ``text`` is a single isolate: it opens with FSI, and by the Unicode
    Bidirectional Algorithm's matching rules (X5–X7) nothing inside closes that isolate before
    its last character, the PDI, and nothing is left open after it."""
    if not (text.startswith(FSI) and text.endswith(PDI)):
        return False
    stack: list[str] = []
    for index, char in enumerate(text):
        if char in (LRE, RLE, LRO, RLO):
            stack.append("embedding")
        elif char in (LRI, RLI, FSI):
            stack.append("isolate")
        elif char == PDF and stack and stack[-1] == "embedding":
            stack.pop()
        elif char == PDI and "isolate" in stack:
            while stack.pop() != "isolate":
                pass
        if not stack and index < len(text) - 1:
            return False
    return not stack


def css_rules(path: str) -> dict[str, str]:
    """Return the declarations of each selector of a stylesheet of ours."""
    css = re.sub(r"/\*.*?\*/", "", open(finders.find(path), encoding="utf-8").read(), flags=re.S)
    rules: dict[str, str] = {}
    for selectors, declarations in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        for selector in selectors.split(","):
            key = " ".join(selector.split())
            rules[key] = rules.get(key, "") + declarations
    return rules


def isolates(declarations: str) -> bool:
    return re.search(r"unicode-bidi\s*:\s*isolate\s*(;|$)", declarations.strip()) is not None


# -- the helper ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "balanced"), [
    ("plain text", "plain text"),
    ("", ""),
    (f"a{RLO}b", f"a{RLO}b{PDF}"),  # an override left open is closed
    (f"a{PDF}b", "ab"),  # a stray PDF is dropped
    (f"a{PDI}b", "ab"),  # a stray PDI is dropped: it would close an isolate around the text
    (f"{RLI}a{LRI}b", f"{RLI}a{LRI}b{PDI}{PDI}"),  # nested isolates, both left open
    (f"{RLI}a{LRI}b{PDI}c{PDI}d", f"{RLI}a{LRI}b{PDI}c{PDI}d"),  # nested and closed: unchanged
    (f"{FSI}{RLO}{RLE}x{PDI}y", f"{FSI}{RLO}{RLE}x{PDI}y"),  # a PDI closes the embeddings inside
    (f"{RLO}{FSI}{PDF}x", f"{RLO}{FSI}x{PDI}{PDF}"),  # a PDF cannot close what is outside an isolate
    (f"{LRE}a{PDF}{PDF}b{RLO}", f"{LRE}a{PDF}b{RLO}{PDF}"),
])
def test_balance_bidi_closes_what_is_open_and_drops_what_closes_nothing(text, balanced):
    assert balance_bidi(text) == balanced


@pytest.mark.parametrize("text", [EVIL_TITLE, STRAY_CLOSERS, f"{PDI}{PDI}{RLO}", "plain"])
def test_isolate_makes_one_isolate_of_any_text(text):
    assert is_one_isolate(isolate(text))
    assert isolate(text)[1:-1] == balance_bidi(text)


def test_isolate_if_needed_changes_only_text_holding_a_direction_control():
    assert isolate_if_needed("gpt-4o / Ünïcödé שלום") == "gpt-4o / Ünïcödé שלום"
    assert isolate_if_needed("") == ""
    assert isolate_if_needed(EVIL_NAME) == isolate(EVIL_NAME)


# -- pages -----------------------------------------------------------------------------------


@pytest.fixture
def eve(django_user_model):
    """A member whose username holds a right-to-left override (made outside any form)."""
    return django_user_model.objects.create_user(EVIL_NAME, password=PASSWORD)


@pytest.fixture
def eve_client(eve) -> Client:
    client = Client()
    client.force_login(eve)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("title", [EVIL_TITLE, STRAY_CLOSERS])
def test_chat_page_isolates_titles_and_the_username(eve, eve_client, title):
    conversation = Conversation.objects.create(owner=eve, title=title, model="gpt-4o-mini")
    Conversation.objects.create(owner=eve, title="Trip plans", model="gpt-4o-mini")
    document = html(eve_client.get(f"/c/{conversation.pk}/"))

    links = document.find("ul", class_="conversation-list").find_all("a")
    assert sorted(raw_text(link.find("bdi")) for link in links) == sorted([title, "Trip plans"])
    assert raw_text(document.find("div", class_="account").find("bdi")) == EVIL_NAME
    heading = document.find("input", id="id_title")
    assert heading.attrs["value"] == title and heading.attrs["dir"] == "auto"

    page_title = raw_text(document.find("title"))
    assert page_title.endswith(" · chatsite")
    shown = page_title.removesuffix(" · chatsite")
    assert is_one_isolate(shown), f"the page title leaks: {shown!r}"
    assert shown == FSI + balance_bidi(title) + PDI


@pytest.mark.django_db
def test_model_output_and_model_id_are_isolated(eve, eve_client):
    conversation = Conversation.objects.create(owner=eve, title="Chat", model=f"{RLO}gpt")
    Message.objects.create(conversation=conversation, role="user", content=f"{RLO}my question")
    Message.objects.create(conversation=conversation, role="assistant", content=f"{RLO}evil reply",
                           model=f"{RLO}gpt")
    document = html(eve_client.get(f"/c/{conversation.pk}/"))

    articles = {
        role: [article for article in document.find_all("article")
               if f"message--{role}" in article.attrs["class"].split()]
        for role in ("user", "assistant")
    }
    for role, content in (("user", "my question"), ("assistant", "evil reply")):
        (article,) = articles[role]
        (body,) = [div for div in article.find_all("div")
                   if "message__body" in div.attrs.get("class", "").split()]
        assert content in body.text
    author = articles["assistant"][0].find("h2", class_="message__author")
    assert raw_text(author.find("bdi")) == f"{RLO}gpt"
    assert isolates(css_rules("chatsite/chat.css")[".message__body"])


@pytest.mark.django_db
def test_delete_page_isolates_the_title(eve, eve_client):
    conversation = Conversation.objects.create(owner=eve, title=EVIL_TITLE)
    sentence = html(eve_client.get(f"/c/{conversation.pk}/delete")).find("main").find_all("p")[0]
    assert raw_text(sentence.find("bdi")) == EVIL_TITLE


@pytest.fixture
def hostile_usage(eve) -> UsageDaily:
    """A day of usage whose team, key and model names all hold a right-to-left override."""
    team = Group.objects.create(name=f"{RLO}team")
    key = ApiKey.objects.create(name=f"{RLO}key", secret_encrypted="not a secret",
                                secret_hint="sk-…none")
    return UsageDaily.objects.create(
        day=datetime.date(2025, 3, 1), user=eve, team=team, api_key=key, model=f"{RLO}gpt",
        requests=1, prompt_tokens=10, completion_tokens=5, total_tokens=15,
    )


RANGE = {"start": "2025-03-01", "end": "2025-03-05"}


@pytest.mark.django_db
@pytest.mark.parametrize(("group_by", "label"), [
    ("model", f"{RLO}gpt"), ("team", f"{RLO}team"), ("api_key", f"{RLO}key"),
])
def test_usage_table_isolates_names(eve_client, hostile_usage, group_by, label):
    document = html(eve_client.get("/usage/", {**RANGE, "group_by": group_by}))
    row = document.find("table", class_="usage-table usage-groups").find("tbody").find("tr")
    assert raw_text(row.find("th").find("bdi")) == label


@pytest.mark.django_db
def test_admin_usage_table_isolates_usernames(django_user_model, hostile_usage):
    staff = django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(staff)
    document = html(client.get("/admin/usage/", {**RANGE, "group_by": "user"}))
    row = document.find("table", class_="usage-table usage-groups").find("tbody").find("tr")
    assert raw_text(row.find("th").find("bdi")) == EVIL_NAME


@pytest.mark.django_db
def test_csv_isolates_only_values_holding_a_direction_control(eve, eve_client, hostile_usage):
    for model in ("gpt-4o", f"{RLO}=HYPERLINK(1)", "=HYPERLINK(2)"):
        UsageDaily.objects.create(day=datetime.date(2025, 3, 2), user=eve, model=model,
                                  requests=1, total_tokens=1)
    response = eve_client.get("/usage/", {**RANGE, "group_by": "model", "format": "csv"})
    labels = [row[1] for row in csv.reader(io.StringIO(response.content.decode()))][1:]
    assert sorted(labels) == sorted([
        isolate(f"{RLO}gpt"),
        "gpt-4o",  # plain values stay as they are, for the spreadsheets reading them
        isolate(f"'{RLO}=HYPERLINK(1)"),  # still no formula, even past the control
        "'=HYPERLINK(2)",
    ])


# -- the admin -------------------------------------------------------------------------------


@pytest.fixture
def root_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password=PASSWORD))
    return client


@pytest.mark.django_db
def test_admin_pages_load_the_stylesheet_that_isolates_cells(root_client, eve, hostile_usage):
    conversation = Conversation.objects.create(owner=eve, title=EVIL_TITLE, model=f"{RLO}gpt")
    Message.objects.create(conversation=conversation, role="assistant", content="hi")
    for url in ("/admin/conversations/conversation/", "/admin/conversations/message/",
                "/admin/conversations/usagedaily/", "/admin/conversations/auditevent/",
                "/admin/auth/user/", "/admin/"):
        response = root_client.get(url)
        assert response.status_code == 200
        stylesheets = [link.attrs["href"] for link in html(response).find_all("link")]
        assert "/static/chatsite/admin.css" in stylesheets, url
    rules = css_rules("chatsite/admin.css")
    for selector in ("#result_list td", "#result_list th", "#result_list a", ".readonly",
                     "#user-tools strong", ".messagelist a"):
        assert isolates(rules[selector]), selector


@pytest.mark.django_db
def test_admin_page_title_isolates_the_object(root_client, eve):
    conversation = Conversation.objects.create(owner=eve, title=EVIL_TITLE)
    response = root_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/")
    assert response.status_code == 200
    parts = raw_text(html(response).find("title")).split(" | ")
    assert parts[0] == isolate(EVIL_TITLE)
    assert all(is_one_isolate(part) for part in parts[:2])


# -- in the browser --------------------------------------------------------------------------


@pytest.mark.browser
def test_text_after_a_right_to_left_title_still_reads_left_to_right(page, user):
    """The delete page's sentence continues after the title: with the title's override leaking,
    "and all its messages" would be laid out right to left."""
    conversation = Conversation.objects.create(owner=user, title=f"{RLO}evil title")
    log_in(page, "alice")
    page.goto(f"/c/{conversation.pk}/delete")
    words = page.evaluate("""() => {
        const sentence = document.querySelector("main p");
        const walker = document.createTreeWalker(sentence, NodeFilter.SHOW_TEXT);
        let node;
        while ((node = walker.nextNode()) && !node.data.includes("all its messages")) {}
        return ["all", "its", "messages"].map((word) => {
            const range = document.createRange();
            const start = node.data.indexOf(word + " ");
            range.setStart(node, start);
            range.setEnd(node, start + word.length);
            const box = range.getBoundingClientRect();
            return {left: box.left, top: box.top};
        });
    }""")
    assert len({word["top"] for word in words}) == 1, f"the words wrapped: {words}"
    lefts = [word["left"] for word in words]
    assert lefts == sorted(lefts), f"laid out right to left: {words}"
