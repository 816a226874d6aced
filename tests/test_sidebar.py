"""The sidebar that scales: conversations grouped by day, paged as the member scrolls (and by a
plain link without JavaScript), pinned ones on top, archived ones out of it and on their own
page."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from playwright.sync_api import expect

from conversations import selectors, services
from conversations.models import Conversation, Message
from tests.helpers import PHONE
from tests.helpers import page as parse

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def conversation_at(owner, title: str, moment: datetime, **fields) -> Conversation:
    """A conversation last changed at ``moment`` (``updated_at`` is set by every save)."""
    conversation = Conversation.objects.create(owner=owner, title=title, **fields)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=moment)
    conversation.refresh_from_db()
    return conversation


def listed(response) -> list[str]:
    """The titles the sidebar lists, in order (group headings and paging links left out)."""
    document = parse(response)
    return [a.text.strip() for a in document.find_all("a")
            if re.fullmatch(r"/c/\d+/", a.attrs.get("href", ""))]


def headings(response) -> list[str]:
    """The sidebar's group headings, in order."""
    return re.findall(r'<li class="conversation-group"><h2>([^<]+)</h2>',
                      response.content.decode())


def more_link(response) -> str | None:
    found = re.search(r'<li class="conversation-more"><a href="([^"]+)"', response.content.decode())
    return found.group(1).replace("&amp;", "&") if found else None


# -- grouping by day -----------------------------------------------------------------------------


SEOUL = ZoneInfo("Asia/Seoul")


@pytest.mark.parametrize(("moment", "group"), [
    (datetime(2026, 3, 10, 0, 0, 1, tzinfo=SEOUL), "Today"),
    (datetime(2026, 3, 10, 23, 59, tzinfo=SEOUL), "Today"),
    (datetime(2026, 3, 9, 23, 59, 59, tzinfo=SEOUL), "Yesterday"),
    (datetime(2026, 3, 9, 0, 0, tzinfo=SEOUL), "Yesterday"),
    (datetime(2026, 3, 8, 23, 59, 59, tzinfo=SEOUL), "Previous 7 days"),
    (datetime(2026, 3, 3, 0, 0, tzinfo=SEOUL), "Previous 7 days"),
    (datetime(2026, 3, 2, 23, 59, 59, tzinfo=SEOUL), "Earlier"),
    # 15:30 UTC on the 9th is already the 10th in Seoul: the member's day counts, not UTC's.
    (datetime(2026, 3, 9, 15, 30, tzinfo=ZoneInfo("UTC")), "Today"),
    (datetime(2026, 3, 9, 14, 59, tzinfo=ZoneInfo("UTC")), "Yesterday"),
])
def test_a_conversation_is_grouped_by_the_day_it_last_changed_in_the_members_time_zone(
    moment, group
):
    with timezone.override(SEOUL):
        assert selectors.day_group(moment, date(2026, 3, 10)) == group


def test_the_sidebar_shows_each_group_once_newest_first(alice, user):
    now = timezone.localtime()
    today = now.replace(hour=0, minute=0, second=1, microsecond=0)
    conversation_at(user, "Ancient", today - timedelta(days=40))
    conversation_at(user, "Last week", today - timedelta(days=3))
    conversation_at(user, "Also last week", today - timedelta(days=2))
    conversation_at(user, "Yesterday's", today - timedelta(days=1))
    conversation_at(user, "This morning", today)

    response = alice.get("/")

    assert listed(response) == ["This morning", "Yesterday's", "Also last week", "Last week",
                                "Ancient"]
    assert headings(response) == ["Today", "Yesterday", "Previous 7 days", "Earlier"]


# -- paging ------------------------------------------------------------------------------------


@pytest.fixture
def sixty(user, settings) -> list[str]:
    """Sixty conversations, newest first, some changed in the very same microsecond (ties that
    only the id orders); pages of 25."""
    settings.CHATSITE_SIDEBAR_PAGE_SIZE = 25
    start = timezone.now() - timedelta(days=30)
    titles = []
    for number in range(60):
        moment = start + timedelta(hours=number // 3)  # three at each moment
        titles.append(conversation_at(user, f"Chat {number:02d}", moment).title)
    return list(reversed(titles))


def test_paging_lists_every_conversation_once_in_order(user, sixty):
    seen, cursor, pages = [], None, 0
    while True:
        page = selectors.conversation_list(user=user, before=cursor)
        seen += [item.conversation.title for item in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 3
    assert seen == sixty


def test_a_conversation_that_changes_while_paging_is_neither_skipped_nor_listed_twice(user, sixty):
    first = selectors.conversation_list(user=user)
    # The newest of the next page moves to the top: pages below the cursor stay as they were.
    moved = Conversation.objects.get(title=sixty[25])
    Conversation.objects.filter(pk=moved.pk).update(updated_at=timezone.now())
    rest, cursor = [], first.next_cursor
    while cursor:
        page = selectors.conversation_list(user=user, before=cursor)
        rest += [item.conversation.title for item in page.items]
        cursor = page.next_cursor

    shown = [item.conversation.title for item in first.items] + rest
    assert len(shown) == len(set(shown)) == 59  # the moved one is above, on a fresh first page
    assert set(sixty) - set(shown) == {moved.title}


def test_without_javascript_the_more_link_loads_the_next_page(alice, sixty):
    first = alice.get("/")
    link = more_link(first)
    assert link and link.startswith("?before=")

    second = alice.get("/" + link)

    assert listed(first)[:25] == sixty[:25]
    assert listed(second)[:25] == sixty[25:50]
    assert "Newest chats" in second.content.decode()
    third = alice.get("/" + more_link(second))
    assert listed(third)[:10] == sixty[50:] and more_link(third) is None


def test_htmx_gets_just_the_next_page_of_the_list(alice, sixty):
    link = more_link(alice.get("/"))

    response = alice.get("/" + link, **HTMX)

    html = response.content.decode()
    assert "<html" not in html and "<form" not in html
    assert listed(response) == sixty[25:50]
    assert 'hx-trigger="intersect once"' in html  # and the next "More" link


def test_a_malformed_cursor_shows_the_first_page(alice, sixty):
    for cursor in ("", "x", "1_2_3", "99999999999999999999999999_1", "-5_-5"):
        response = alice.get("/", {"before": cursor})
        assert response.status_code == 200


def test_the_sidebar_costs_the_same_queries_for_five_or_sixty_conversations(
    alice, user, settings
):
    settings.CHATSITE_SIDEBAR_PAGE_SIZE = 25
    for number in range(5):
        Conversation.objects.create(owner=user, title=f"Chat {number}", pinned_at=timezone.now()
                                    if number == 0 else None)
    alice.get("/")
    with CaptureQueriesContext(connection) as few:
        alice.get("/")
    for number in range(55):
        Conversation.objects.create(owner=user, title=f"More {number}",
                                    pinned_at=timezone.now() if number < 3 else None)
    with CaptureQueriesContext(connection) as many:
        alice.get("/")

    assert len(many.captured_queries) == len(few.captured_queries)


# -- pin and archive ---------------------------------------------------------------------------


def test_a_pinned_conversation_is_listed_on_top_once_until_unpinned(alice, user):
    old = conversation_at(user, "Old but important", timezone.now() - timedelta(days=90))
    conversation_at(user, "Fresh", timezone.now())

    page = alice.get(f"/c/{old.pk}/")
    assert "Pin" in [b.text.strip() for b in parse(page).find_all("button")]
    response = alice.post(f"/c/{old.pk}/pin", {"pin": "1"})

    assert response.status_code == 302
    page = alice.get("/")
    assert listed(page) == ["Old but important", "Fresh"]
    assert headings(page)[0] == "Pinned"
    assert "Unpin" in [b.text.strip() for b in parse(alice.get(f"/c/{old.pk}/")).find_all("button")]
    old.refresh_from_db()
    assert old.updated_at < timezone.now() - timedelta(days=89)  # its place in time stays

    alice.post(f"/c/{old.pk}/pin", {"pin": "0"})
    assert listed(alice.get("/")) == ["Fresh", "Old but important"]


def in_another_tab(monkeypatch, action) -> None:
    """Run ``action(conversation_id)`` while a message is sent: after the send has read the
    conversation, before it writes (what another tab of the member can do at that moment)."""
    check = services._ensure_idle

    def meanwhile(conversation):
        action(conversation.pk)
        check(conversation)

    monkeypatch.setattr(services, "_ensure_idle", meanwhile)


def test_a_message_keeps_the_pin_archive_and_title_another_tab_set_meanwhile(
    alice, user, api_key, monkeypatch
):
    conversation = Conversation.objects.create(owner=user, title="Draft", api_key=api_key,
                                               model="gpt-4o-mini")

    def pin_archive_and_rename(pk):
        alice.post(f"/c/{pk}/pin", {"pin": "1"})
        alice.post(f"/c/{pk}/archive", {"archive": "1"})
        alice.post(f"/c/{pk}/rename", {"title": "Tax return"})

    in_another_tab(monkeypatch, pin_archive_and_rename)

    response = alice.post(f"/c/{conversation.pk}/messages",
                          {"content": "And the receipts?", "model": f"{api_key.pk}:gpt-4o-mini"})

    assert response.status_code == 302
    assert listed(alice.get("/archived/")) == ["Tax return"]
    conversation.refresh_from_db()
    assert conversation.pinned_at is not None
    assert [m.content for m in conversation.messages.filter(role="user")] == ["And the receipts?"]


def test_a_message_brings_its_chat_to_the_top_and_names_it_if_it_had_no_name(
    alice, user, api_key
):
    untitled = conversation_at(user, "", timezone.now() - timedelta(days=3),
                               api_key=api_key, model="gpt-4o-mini")  # as an import can leave it
    conversation_at(user, "Yesterday's", timezone.now() - timedelta(days=1))

    alice.post(f"/c/{untitled.pk}/messages",
               {"content": "Plan the   offsite", "model": f"{api_key.pk}:gpt-4o-mini"})

    assert listed(alice.get("/")) == ["Plan the offsite", "Yesterday's"]


def test_a_name_another_tab_gave_an_unnamed_chat_meanwhile_stays(alice, user, api_key,
                                                                 monkeypatch):
    untitled = Conversation.objects.create(owner=user, title="", api_key=api_key,
                                           model="gpt-4o-mini")
    in_another_tab(monkeypatch,
                   lambda pk: alice.post(f"/c/{pk}/rename", {"title": "Offsite"}))

    alice.post(f"/c/{untitled.pk}/messages",
               {"content": "Plan it", "model": f"{api_key.pk}:gpt-4o-mini"})

    assert listed(alice.get("/")) == ["Offsite"]


def test_a_message_to_a_chat_another_tab_deleted_meanwhile_is_a_404_and_leaves_it_deleted(
    alice, user, api_key, monkeypatch
):
    conversation = Conversation.objects.create(owner=user, title="Old", api_key=api_key,
                                               model="gpt-4o-mini")
    in_another_tab(monkeypatch, lambda pk: alice.post(f"/c/{pk}/delete"))

    response = alice.post(f"/c/{conversation.pk}/messages",
                          {"content": "Still there?", "model": f"{api_key.pk}:gpt-4o-mini"},
                          **HTMX)

    assert response.status_code == 404
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()
    assert listed(alice.get("/")) == []


def test_archive_hides_a_conversation_from_the_sidebar_and_lists_it_on_its_own_page(alice, user):
    kept = Conversation.objects.create(owner=user, title="Tax return 2025")
    Message.objects.create(conversation=kept, role=Message.Role.USER, content="Receipts?")
    Conversation.objects.create(owner=user, title="Holiday")

    alice.post(f"/c/{kept.pk}/archive", {"archive": "1"})

    assert listed(alice.get("/")) == ["Holiday"]
    archived = alice.get("/archived/")
    assert listed(archived) == ["Tax return 2025"]
    page = alice.get(f"/c/{kept.pk}/")  # still there, with its messages
    assert page.status_code == 200 and "Receipts?" in page.content.decode()
    assert "Unarchive" in [b.text.strip() for b in parse(page).find_all("button")]

    alice.post(f"/c/{kept.pk}/archive", {"archive": "0"})
    assert sorted(listed(alice.get("/"))) == ["Holiday", "Tax return 2025"]
    assert listed(alice.get("/archived/")) == []


def test_htmx_pin_swaps_the_buttons_and_the_sidebar(alice, user):
    conversation = Conversation.objects.create(owner=user, title="Keep me handy")

    response = alice.post(f"/c/{conversation.pk}/pin", {"pin": "1"}, **HTMX)

    html = response.content.decode()
    assert 'id="conversation-actions"' in html and ">Unpin<" in html
    assert 'id="conversation-list" hx-swap-oob="true"' in html and ">Pinned<" in html


def test_a_form_that_asks_for_neither_is_refused_and_says_so(alice, user):
    conversation = Conversation.objects.create(owner=user, title="Untouched")

    response = alice.post(f"/c/{conversation.pk}/archive", {"archive": "maybe"}, follow=True)

    assert "not understood" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.archived_at is None


@pytest.mark.parametrize("action", ["pin", "archive"])
def test_pin_and_archive_without_a_csrf_token_are_refused(user, action):
    conversation = Conversation.objects.create(owner=user, title="Mine")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get(f"/c/{conversation.pk}/")

    response = browser.post(f"/c/{conversation.pk}/{action}", {action: "1"}, **HTMX)

    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.pinned_at is None and conversation.archived_at is None


# -- in the browser ----------------------------------------------------------------------------



def navigation(page):
    """The sidebar, opened with "Menu" on a phone."""
    if page.viewport_size["width"] <= PHONE["width"]:
        page.get_by_role("button", name="Menu").click()
    return page.locator("#sidebar")


@pytest.mark.browser
def test_scrolling_the_sidebar_loads_the_older_conversations(screen, user, settings):
    from conftest import log_in

    settings.CHATSITE_SIDEBAR_PAGE_SIZE = 25
    start = timezone.now() - timedelta(days=30)
    for number in range(60):
        conversation_at(user, f"Chat {number:02d}", start + timedelta(hours=number))
    log_in(screen, "alice")
    sidebar = navigation(screen)
    links = sidebar.locator(".conversation-list a[href^='/c/']")
    assert links.count() == 25

    for expected in (50, 60):
        sidebar.locator(".conversation-list li").last.scroll_into_view_if_needed()
        expect(links).to_have_count(expected)
    titles = links.all_inner_texts()
    assert len(set(titles)) == 60 and titles[-1] == "Chat 00"
    assert sidebar.locator(".conversation-more").count() == 0


@pytest.mark.browser
def test_pin_and_archive_with_the_buttons(screen, user):
    from conftest import log_in

    old = conversation_at(user, "Old notes", timezone.now() - timedelta(days=20))
    conversation_at(user, "Newer chat", timezone.now())
    log_in(screen, "alice")
    screen.goto(f"/c/{old.pk}/")

    screen.get_by_role("button", name="Pin", exact=True).click()
    screen.get_by_role("button", name="Unpin").wait_for()
    sidebar = navigation(screen)
    assert sidebar.locator(".conversation-list a[href^='/c/']").first.inner_text() == "Old notes"
    screen.keyboard.press("Escape")  # closes the menu on a phone

    screen.get_by_role("button", name="Archive", exact=True).click()
    screen.get_by_role("button", name="Unarchive").wait_for()
    sidebar = navigation(screen)
    assert sidebar.locator(".conversation-list a[href^='/c/']").all_inner_texts() == ["Newer chat"]
    sidebar.get_by_role("link", name="Archived").click()
    screen.get_by_role("link", name="Old notes").click()
    screen.get_by_role("button", name="Unarchive").click()
    screen.get_by_role("button", name="Archive", exact=True).wait_for()
    sidebar = navigation(screen)
    assert "Old notes" in sidebar.locator(".conversation-list").inner_text()
