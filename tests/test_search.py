"""Search in a member's own conversations (issue 12): titles and message text, in English, Korean
and Chinese, with a highlighted snippet that links to the matching message.

Korean attaches particles to words and Chinese has no spaces, so a two-character word must be
found inside longer text; queries of three characters and more go through the index (SQLite's
FTS5 trigram table kept in step by triggers, PostgreSQL's pg_trgm), shorter ones through the
bounded fallback. Every test runs on whichever engine ``DATABASE_URL`` names."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from conversations import search
from conversations.models import Conversation, Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, migrated_back_to, send_message
from tests.helpers import page as parse

pytestmark = pytest.mark.django_db
SEARCH = "/search/"


def chat(owner, *texts: str, title: str = "") -> Conversation:
    """Create a conversation of ``owner`` whose messages are ``texts``, asked and answered in
    turn, each a moment after the one before."""
    conversation = Conversation.objects.create(owner=owner, title=title)
    for number, content in enumerate(texts):
        Message.objects.create(conversation=conversation, content=content,
                               role="user" if number % 2 == 0 else "assistant")
    return conversation


def message(conversation: Conversation, content: str) -> Message:
    return conversation.messages.get(content=content)


def results(client, query: str) -> list[dict[str, str]]:
    """Search as a member's browser without JavaScript does; return each result's link, title
    and snippet (as HTML)."""
    return results_of(client.get(SEARCH, {"q": query}))


def results_of(response) -> list[dict[str, str]]:
    """The results on a search page already fetched."""
    assert response.status_code == 200
    found = []
    for item in re.findall(r'<li class="search-result">(.*?)</li>', response.content.decode(),
                           re.S):
        link = re.search(r'<a href="([^"]+)"><bdi>(.*?)</bdi></a>', item, re.S)
        snippet = re.search(r'<p class="search-result__snippet"><bdi>(.*?)</bdi></p>', item, re.S)
        found.append({"href": link.group(1), "title": link.group(2),
                      "snippet": snippet.group(1) if snippet else ""})
    return found


def links(client, query: str) -> list[str]:
    return [result["href"] for result in results(client, query)]


def at(conversation: Conversation, content: str | None = None) -> str:
    """The link of a result: the conversation, at the message holding ``content``."""
    url = reverse("conversations:detail", args=[conversation.pk])
    return f"{url}#message-{message(conversation, content).pk}" if content else url


# -- Finding text in any script ---------------------------------------------------------------


def test_english_text_is_found_ignoring_case_and_links_to_its_message(alice, user):
    report = chat(user, "Is the quarterly report ready?", "The Quarterly Report is ready.")
    chat(user, "Something else entirely")

    found = results(alice, "quarterly report")

    assert [result["href"] for result in found] == [
        at(report, "The Quarterly Report is ready."), at(report, "Is the quarterly report ready?")]
    assert "<mark>Quarterly Report</mark>" in found[0]["snippet"]


def test_a_korean_word_is_found_with_the_particle_attached(alice, user):
    searched = chat(user, "어제 검색을 했다", "검색이 느렸어요")
    chat(user, "오늘은 날씨가 좋다")

    assert links(alice, "검색") == [at(searched, "검색이 느렸어요"), at(searched, "어제 검색을 했다")]
    assert links(alice, "검색을") == [at(searched, "어제 검색을 했다")]  # through the index
    assert "<mark>검색</mark>을 했다" in results(alice, "검색")[1]["snippet"]


def test_a_chinese_word_is_found_inside_a_sentence_without_spaces(alice, user):
    searched = chat(user, "我在搜索引擎里找到了答案")
    chat(user, "今天天气很好")

    assert links(alice, "搜索") == [at(searched, "我在搜索引擎里找到了答案")]
    assert links(alice, "搜索引擎") == [at(searched, "我在搜索引擎里找到了答案")]
    assert "我在<mark>搜索引擎</mark>里" in results(alice, "搜索引擎")[0]["snippet"]


def test_one_and_two_character_queries_find_their_text(alice, user):
    chinese = chat(user, "我在搜索引擎里")
    english = chat(user, "an ox")

    assert links(alice, "索") == [at(chinese, "我在搜索引擎里")]
    assert links(alice, "OX") == [at(english, "an ox")]
    assert links(alice, "x") == [at(english, "an ox")]
    assert links(alice, "索x") == []


def test_a_short_query_held_by_too_many_messages_is_found_by_scanning(alice, user, monkeypatch):
    monkeypatch.setattr(search, "MAX_TERMS", 1)
    monkeypatch.setattr(search, "COMMON_PIECES", 1)
    conversation = chat(user, "a fox", "an ox", "no match here")

    assert links(alice, "ox") == [at(conversation, "an ox"), at(conversation, "a fox")]
    assert links(alice, "o") == [at(conversation, "no match here"), at(conversation, "an ox"),
                                 at(conversation, "a fox")]


def test_a_short_query_finds_a_reply_still_being_written_and_once_it_is_final(alice, user):
    conversation = chat(user, "Tell me about search")
    reply = Message.objects.create(conversation=conversation, role="assistant",
                                   status=Message.Status.STREAMING, content="我在搜")
    Message.objects.filter(pk=reply.pk).update(content="我在搜索引擎里")  # a flush appends

    assert links(alice, "索") == [at(conversation, "我在搜索引擎里")]
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE)
    assert links(alice, "索") == [at(conversation, "我在搜索引擎里")]
    assert links(alice, "搜索") == [at(conversation, "我在搜索引擎里")]


def test_postgresql_keeps_the_pieces_of_finished_messages_for_short_queries(alice, user):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite answers short queries from its FTS5 vocabulary")
    conversation = chat(user, "An ox\n검색")
    reply = Message.objects.create(conversation=conversation, role="assistant",
                                   status=Message.Status.STREAMING, content="so")

    def pieces(pk):
        with connection.cursor() as cursor:
            cursor.execute("SELECT search_pieces FROM conversations_message WHERE id = %s", [pk])
            value = cursor.fetchone()[0]
        return None if value is None else sorted(value)

    assert pieces(message(conversation, "An ox\n검색").pk) == sorted(
        ["a", "an", "n", "o", "ox", "x", "검", "검색", "색"])
    assert pieces(reply.pk) is None  # still being written: found by ILIKE among these few
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE, content="Soon")
    assert pieces(reply.pk) == ["n", "o", "on", "oo", "s", "so"]


@pytest.mark.parametrize("query", ["예산", "budget 예산"])  # the short path and the index
def test_many_results_continue_page_by_page_newest_first(alice, user, query, monkeypatch):
    conversation = chat(user, *[f"budget 예산 item {number}" for number in range(55)],
                        title="Budget 예산 talks")
    newest_first = [at(conversation, f"budget 예산 item {number}") for number in range(54, -1, -1)]

    first = alice.get(SEARCH, {"q": query}).content.decode()
    assert links(alice, query) == [at(conversation), *newest_first[:50]]  # the title, 50 messages
    assert "The first 51 results" in first
    more = re.search(r'<a href="\?q=([^"&]+)&amp;before=(\d+)" rel="next">More results</a>', first)
    assert more and int(more.group(2)) == message(conversation, "budget 예산 item 5").pk

    second = alice.get(SEARCH, {"q": query, "before": more.group(2)})
    found = [result["href"] for result in results_of(second)]
    assert found == newest_first[50:]  # the 5 older ones, no title again
    assert "rel=\"next\"" not in second.content.decode()
    assert "5 older results" in second.content.decode()

    monkeypatch.setattr(search, "COMMON_PIECES", 1)  # PostgreSQL's path for a common query
    monkeypatch.setattr(search, "MAX_TERMS", 1)  # SQLite's
    again = alice.get(SEARCH, {"q": query, "before": more.group(2)})
    assert [result["href"] for result in results_of(again)] == newest_first[50:]


@pytest.mark.parametrize("before", ["abc", "-5", "9" * 40, "１２"])
def test_a_page_address_that_is_not_a_message_starts_from_the_newest(alice, user, before):
    conversation = chat(user, "the budget")

    assert [result["href"] for result in results_of(alice.get(SEARCH, {"q": "budget",
                                                                        "before": before}))] == [
        at(conversation, "the budget")]


def test_a_title_is_found_and_its_result_opens_the_conversation(alice, user):
    trip = chat(user, "Where should we eat?", title="부산 여행 계획")

    found = results(alice, "부산")

    assert [result["href"] for result in found] == [at(trip)]
    assert found[0]["title"] == "<mark>부산</mark> 여행 계획"


def test_titles_come_first_then_messages_newest_first(alice, user):
    older = chat(user, "budget for the offsite")
    titled = chat(user, "What did we decide?", title="Offsite budget")
    newer = chat(user, "the offsite budget is approved")

    assert links(alice, "budget") == [
        at(titled), at(newer, "the offsite budget is approved"),
        at(older, "budget for the offsite")]


def test_text_changed_or_deleted_is_found_as_it_is_now(alice, user):
    conversation = chat(user, "a draft about 검색엔진")
    Message.objects.filter(conversation=conversation).update(content="a final text about 搜索引擎")

    assert links(alice, "검색엔진") == []
    assert links(alice, "搜索引擎") == [at(conversation, "a final text about 搜索引擎")]
    conversation.delete()
    assert links(alice, "搜索引擎") == []


def test_index_triggers_dropped_by_a_table_rebuild_are_put_back_after_migrate(alice, user):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's trigram indexes are part of the table")
    conversation = chat(user, "before the rebuild")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        made = dict(cursor.fetchall())
    for name, definition in search.SQLITE_TRIGGERS.items():  # as the migration made them
        assert made[name] == f"CREATE TRIGGER {name} {definition}"
    with connection.cursor() as cursor:  # what Django's rebuild of the table does to them
        for name in search.SQLITE_TRIGGERS:
            cursor.execute(f"DROP TRIGGER {name}")
    Message.objects.filter(conversation=conversation).update(content="after the rebuild 검색엔진")
    assert links(alice, "검색엔진") == []  # the index missed the change

    call_command("migrate", verbosity=0)  # post_migrate repairs it

    assert links(alice, "검색엔진") == [at(conversation, "after the rebuild 검색엔진")]
    assert search.repair_index() is False  # nothing left to repair


def indexed(text: str) -> set[int]:
    """SQLite: the ids of the messages the trigram index holds ``text`` for."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT rowid FROM {search.FTS_TABLE} WHERE {search.FTS_TABLE} MATCH %s",
                       [search._fts_phrase(text)])
        return {pk for (pk,) in cursor.fetchall()}


def test_a_reply_being_written_stays_out_of_the_index_until_it_is_final(alice, user):
    """The reply engine appends to a reply every two seconds while it streams: the index takes
    its text once, when it is final, and the reply is found all along."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's trigram index covers every row; its pieces have their own test")
    conversation = chat(user, "Tell me about search")
    reply = Message.objects.create(conversation=conversation, role="assistant",
                                   status=Message.Status.STREAMING, content="a reply about 검색")
    Message.objects.filter(pk=reply.pk).update(content="a reply about 검색엔진")  # a flush

    assert indexed("검색엔진") == set()
    assert links(alice, "검색엔진") == [at(conversation, "a reply about 검색엔진")]
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE)
    assert indexed("검색엔진") == {reply.pk}
    assert links(alice, "검색엔진") == [at(conversation, "a reply about 검색엔진")]  # once
    Message.objects.filter(pk=reply.pk).update(content="an edited reply about 搜索引擎")
    assert (indexed("검색엔진"), indexed("搜索引擎")) == (set(), {reply.pk})
    reply.delete()
    assert indexed("搜索引擎") == set() and links(alice, "搜索引擎") == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_upgrade_takes_replies_being_written_out_of_the_index_and_still_finds_them(
        alice, user):
    if connection.vendor != "sqlite":
        pytest.skip("the migration changes SQLite's index only")
    before = ("conversations", "0020_stamp")
    with migrated_back_to(before):
        conversation = chat(user, "a question about 검색엔진")
        streaming = Message.objects.create(conversation=conversation, role="assistant",
                                           status=Message.Status.STREAMING,
                                           content="a reply being written about 搜索引擎")
        assert indexed("搜索引擎") == {streaming.pk}  # as the old triggers did

    assert indexed("搜索引擎") == set()
    assert indexed("검색엔진") == {message(conversation, "a question about 검색엔진").pk}
    assert links(alice, "搜索引擎") == [at(conversation, "a reply being written about 搜索引擎")]
    assert links(alice, "검색엔진") == [at(conversation, "a question about 검색엔진")]

    with migrated_back_to(before):  # and back: the old triggers index every message again
        assert indexed("搜索引擎") == {streaming.pk}


# -- Whose conversations ----------------------------------------------------------------------


def test_only_the_members_own_conversations_are_searched(alice, user, other_user):
    mine = chat(user, "my 검색 notes")
    chat(other_user, "mallory's 검색 secrets", title="검색 plans of mallory")

    for query in ("검색", "검색 ", "mallory", "secrets", "plans of"):
        found = results(alice, query)
        assert all(result["href"].startswith(f"/c/{mine.pk}/") for result in found), query
        assert not any("mallory" in result["title"] + result["snippet"] for result in found)
    assert links(alice, "검색") == [at(mine, "my 검색 notes")]


def test_searching_needs_a_login(client, user):
    chat(user, "private words")

    response = client.get(SEARCH, {"q": "private"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/search/")


# -- Untrusted text and queries ---------------------------------------------------------------


def test_a_snippet_shows_markup_as_text_with_the_match_marked(alice, user):
    chat(user, 'Try <script>alert("검색")</script> & <b>bold</b>', title="<i>x</i> script")

    found = results(alice, "script")

    assert found[0]["title"] == "&lt;i&gt;x&lt;/i&gt; <mark>script</mark>"
    snippet = found[1]["snippet"]
    assert snippet.startswith("Try &lt;<mark>script</mark>&gt;alert(&quot;검색&quot;)&lt;/")
    assert "<script" not in snippet and "<b>" not in snippet
    assert results(alice, "<b>")[0]["snippet"].endswith("&amp; <mark>&lt;b&gt;</mark>bold&lt;/b&gt;")


@pytest.mark.parametrize("query, expected", [
    ("%", "50% off"), ("_", "snake_case"), ("\\", "a\\b"), ('"quoted"', 'say "quoted"'),
    ("NEAR(", "NEAR(x y)"), ("-minus", "a -minus b"), ("a*", "a* star"), ("OR", "OR gate"),
    ("'", "it's"),
])
def test_query_syntax_is_searched_as_text(alice, user, query, expected):
    conversation = chat(user, "50% off", "snake_case", "a\\b", 'say "quoted"', "NEAR(x y)",
                        "a -minus b", "a* star", "OR gate", "it's", "plain text")

    assert links(alice, query) == [at(conversation, expected)]


@pytest.mark.parametrize("query", [
    "\x00", "검색\x00", '"', '""', "*", "NEAR(", "NEAR(a b, 2)", "-", "^", ":",
    "a" * 100_000, "검" * 5000, " \t\n ", "(", ")", "{}", "AND", "\\", "%_%", "\u202e",
])
def test_hostile_queries_are_answered_not_a_server_error(alice, user, query):
    chat(user, "검색 NEAR(a b) \"quoted\" * - %_%")

    response = alice.get(SEARCH, {"q": query})

    assert response.status_code == 200


def test_text_that_is_not_utf_8_is_answered_not_a_server_error(alice, user):
    chat(user, "검색")

    assert alice.get(SEARCH + "?q=%ED%A0%80%FF%00").status_code == 200


def test_an_empty_query_and_no_results_say_so(alice, user):
    chat(user, "some words")

    empty = parse(alice.get(SEARCH)).find("main")
    nothing = parse(alice.get(SEARCH, {"q": "검색"})).find("main")

    assert "Type words to find in the titles and messages of your chats." in empty.text
    assert "No chats contain “검색”." in nothing.text
    assert nothing.find_all("ol") == []


def test_the_chat_sidebar_has_the_search_box(alice):
    sidebar = parse(alice.get("/")).find("nav", id="sidebar")

    form = sidebar.find("form", role="search")
    assert (form.attrs["method"], form.attrs["action"]) == ("get", SEARCH)
    assert form.find("input", name="q").attrs["aria-label"] == "Search chats"
    assert form.find("input", name="q").attrs["type"] == "search"


# -- A reply written by the reply engine ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_reply_streamed_by_the_reply_engine_is_found_once_it_finishes(
    alice, api_key, fake_upstream, settings
):
    settings.CHATSITE_FLUSH_INTERVAL = 0.05  # several appending UPDATEs while it streams
    fake_upstream.queue(Scenario(tokens=["어제 ", "검색을 ", "했다. ", "我在", "搜索", "引擎里"],
                                 token_delay=0.08))

    reply = finished_reply(send_message(alice, api_key, "Tell me about search"))

    assert reply.content == "어제 검색을 했다. 我在搜索引擎里"
    url = f"/c/{reply.conversation_id}/#message-{reply.pk}"
    for query in ("검색을", "搜索引擎", "검색", "搜索", "했다. 我"):
        assert links(alice, query) == [url], query


# -- In the browser ---------------------------------------------------------------------------



@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_korean_and_a_chinese_search_open_the_conversation_at_the_matching_message(
    screen, user
):
    from conftest import log_in

    page = screen
    filler = [f"다른 이야기 {n} " + "내용 " * 40 for n in range(30)]
    korean = chat(user, *filler, "어제 검색을 했다", *filler, title="한국어 대화")
    chinese = chat(user, *filler, "我在搜索引擎里找到了答案", *filler, title="中文对话")
    log_in(page, "alice")

    for query, conversation, text in (("검색", korean, "어제 검색을 했다"),
                                      ("搜索", chinese, "我在搜索引擎里找到了答案")):
        page.goto("/")
        if page.get_by_role("button", name="Menu").is_visible():
            page.get_by_role("button", name="Menu").click()
        box = page.get_by_role("searchbox", name="Search chats")
        box.fill(query)
        box.press("Enter")
        page.wait_for_url(re.compile(r"/search/\?q="))
        result = page.locator(".search-result").filter(has=page.locator("mark", has_text=query))
        assert result.count() == 1
        result.get_by_role("link").click()

        target = message(conversation, text)
        page.wait_for_url(re.compile(rf"/c/{conversation.pk}/#message-{target.pk}$"))
        shown = page.locator(f"#message-{target.pk}")
        shown.wait_for()
        page.wait_for_function("document.readyState === 'complete'")
        assert shown.evaluate(
            "el => { const r = el.getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= window.innerHeight; }"), query
        assert text in shown.inner_text()
