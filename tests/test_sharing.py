"""Sharing inside a team: read-only with a team or named members, read as the owner sees it
without the owner's controls, continued as the recipient's own copy, revoked at once (the live
stream of a reply included), and every share and revocation in the audit log."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.test import Client

from conftest import PASSWORD, read_events, session_for, wait_for
from conversations.models import AuditEvent, Conversation, Message, Share
from devtools.fake_upstream import Scenario
from tests.helpers import SCREENS, finished_reply, send_message
from tests.helpers import page as parse

pytestmark = pytest.mark.django_db
IN_TRANSACTIONS = pytest.mark.django_db(transaction=True)

QUESTION = "How do we name the release?"
ANSWER = "Call it **Aurora**."


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password=PASSWORD)


@pytest.fixture
def carol(django_user_model):
    """A member nothing is shared with."""
    return django_user_model.objects.create_user("carol", password=PASSWORD)


@pytest.fixture
def team(user, bob) -> Group:
    design = Group.objects.create(name="Design")
    design.user_set.add(user, bob)
    return design


def client_of(account) -> Client:
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def conversation(user, api_key) -> Conversation:
    """Alice's conversation: an earlier reply (superseded), the current one, finished."""
    chat = Conversation.objects.create(owner=user, title="Release names", api_key=api_key,
                                       model="gpt-4o-mini", system_prompt="Be brief.")
    Message.objects.create(conversation=chat, role=Message.Role.USER, content=QUESTION)
    Message.objects.create(conversation=chat, role=Message.Role.ASSISTANT, content="Call it X.",
                           model="gpt-4o-mini", finish_reason="stop", superseded=True)
    Message.objects.create(conversation=chat, role=Message.Role.ASSISTANT, content=ANSWER,
                           model="gpt-4o-mini", finish_reason="stop")
    return chat


def buttons(response) -> list[str]:
    return [button.text.strip() for button in parse(response).find_all("button")]


def articles(response) -> list[str]:
    """The messages' HTML as the page shows them, forms and CSRF tokens left out."""
    html = response.content.decode()
    found = re.findall(r'<article id="message-\d+".*?</article>', html, re.S)
    without = [re.sub(r"<form.*?</form>|<details class=\"edit\">.*?</details>", "", article,
                      flags=re.S) for article in found]
    return [re.sub(r"\s+", " ", article) for article in without]


# -- sharing -----------------------------------------------------------------------------------


def test_owner_shares_with_their_team_and_its_members_find_it(alice, user, bob, team,
                                                               conversation):
    response = alice.post(f"/c/{conversation.pk}/share", {"team": team.pk, "usernames": ""})

    assert response.status_code == 302
    share = Share.objects.get()
    assert (share.team, share.user, share.created_by) == (team, None, user)
    listing = client_of(bob).get("/shared/")
    assert f'href="/shared/{conversation.pk}/"' in listing.content.decode()
    assert "Release names" in listing.content.decode()
    owner_page = alice.get(f"/c/{conversation.pk}/").content.decode()
    assert "Design" in owner_page and "Stop sharing" in owner_page
    event = AuditEvent.objects.get(action="conversation shared")
    assert (event.actor, event.details) == (user, "with team 'Design'")
    assert event.target == f"conversation {conversation.pk} of 'alice'"


def test_owner_shares_with_named_members(alice, bob, carol, conversation):
    alice.post(f"/c/{conversation.pk}/share", {"usernames": "bob, carol"})

    assert sorted(share.user.username for share in Share.objects.all()) == ["bob", "carol"]
    assert AuditEvent.objects.filter(action="conversation shared").count() == 2
    alice.post(f"/c/{conversation.pk}/share", {"usernames": "bob"})  # once is enough
    assert Share.objects.count() == 2


@pytest.mark.parametrize(("data", "error"), [
    ({"usernames": "nobody"}, "No active member is called nobody."),
    ({"usernames": "ghost"}, "No active member is called ghost."),  # inactive
    ({"usernames": "alice"}, "You cannot share a conversation with yourself."),
    ({"usernames": ""}, "Pick a team or name a member to share with."),
    ({"team": "other-team"}, "Select a valid choice."),
])
def test_sharing_is_refused_with_a_reason(alice, django_user_model, conversation, data, error):
    django_user_model.objects.create_user("ghost", is_active=False)
    stranger = Group.objects.create(name="Not hers")
    data = {key: stranger.pk if value == "other-team" else value for key, value in data.items()}

    response = alice.post(f"/c/{conversation.pk}/share", data, follow=True)

    assert error in response.content.decode()
    assert not Share.objects.exists() and not AuditEvent.objects.filter(
        action="conversation shared").exists()


def test_nobody_but_the_owner_shares(bob, carol, conversation):
    response = client_of(bob).post(f"/c/{conversation.pk}/share", {"usernames": "carol"})

    assert response.status_code == 404 and not Share.objects.exists()


# -- reading ---------------------------------------------------------------------------------


def test_a_recipient_reads_it_as_the_owner_sees_it_without_the_owners_controls(
    alice, bob, conversation
):
    Share.objects.create(conversation=conversation, user=bob, created_by=conversation.owner)

    owners = alice.get(f"/c/{conversation.pk}/")
    recipients = client_of(bob).get(f"/shared/{conversation.pk}/")

    assert recipients.status_code == 200
    assert articles(recipients) == articles(owners)
    assert "<strong>Aurora</strong>" in recipients.content.decode()
    assert {"Edit", "Regenerate", "Retry", "Send", "Stop", "Pin", "Archive", "Rename", "Share"} \
        & set(buttons(recipients)) == set()
    assert {"Regenerate", "Pin", "Archive", "Send"} <= set(buttons(owners))
    assert 'id="composer"' not in recipients.content.decode()
    assert "Continue as my copy" in buttons(recipients)
    assert "Shared with you by" in recipients.content.decode()


def stream_body(response) -> str:
    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(read)().decode()


def test_a_finished_reply_streamed_to_a_recipient_comes_without_the_owners_controls(
    alice, bob, conversation
):
    Share.objects.create(conversation=conversation, user=bob, created_by=conversation.owner)
    reply = conversation.messages.filter(superseded=False).last()

    owners = stream_body(alice.get(f"/m/{reply.pk}/stream"))
    recipients = stream_body(client_of(bob).get(f"/m/{reply.pk}/stream"))

    assert "event: done" in recipients and "<strong>Aurora</strong>" in recipients
    assert "Regenerate" in owners and "Regenerate" not in recipients


def test_the_owner_opening_the_shared_address_is_sent_to_their_own_page(alice, conversation):
    response = alice.get(f"/shared/{conversation.pk}/")

    assert response.status_code == 302 and response["Location"] == f"/c/{conversation.pk}/"


def test_a_team_member_who_leaves_the_team_loses_it(bob, team, conversation):
    Share.objects.create(conversation=conversation, team=team, created_by=conversation.owner)
    assert client_of(bob).get(f"/shared/{conversation.pk}/").status_code == 200

    team.user_set.remove(bob)

    assert client_of(bob).get(f"/shared/{conversation.pk}/").status_code == 404


def test_a_non_recipient_gets_a_404(carol, bob, conversation):
    Share.objects.create(conversation=conversation, user=bob, created_by=conversation.owner)

    client = client_of(carol)
    assert client.get(f"/shared/{conversation.pk}/").status_code == 404
    assert client.post(f"/shared/{conversation.pk}/copy").status_code == 404
    assert "Release names" not in client.get("/shared/").content.decode()


# -- continuing as one's own copy -------------------------------------------------------------


def test_continue_as_my_copy_creates_the_recipients_own_conversation(bob, conversation):
    Share.objects.create(conversation=conversation, user=bob, created_by=conversation.owner)
    original = (list(Conversation.objects.filter(pk=conversation.pk).values()),
                list(conversation.messages.values()))
    client = client_of(bob)

    response = client.post(f"/shared/{conversation.pk}/copy")

    copy = Conversation.objects.get(owner=bob)
    assert response.status_code == 302 and response["Location"] == f"/c/{copy.pk}/"
    assert (copy.title, copy.system_prompt, copy.model) == ("Release names", "Be brief.",
                                                            "gpt-4o-mini")
    assert list(copy.messages.values_list("role", "content", "superseded")) == [
        ("user", QUESTION, False), ("assistant", ANSWER, False)]
    assert original == (list(Conversation.objects.filter(pk=conversation.pk).values()),
                        list(conversation.messages.values()))
    page = client.get(f"/c/{copy.pk}/")
    assert page.status_code == 200 and "Regenerate" in buttons(page)  # now theirs


# -- revoking --------------------------------------------------------------------------------


def test_revoking_takes_effect_at_once_and_is_audited(alice, bob, conversation):
    share = Share.objects.create(conversation=conversation, user=bob, created_by=conversation.owner)
    reply = conversation.messages.filter(superseded=False).last()
    client = client_of(bob)
    assert client.get(f"/shared/{conversation.pk}/").status_code == 200
    assert client.get(f"/m/{reply.pk}/stream").status_code == 200

    response = alice.post(f"/c/{conversation.pk}/unshare", {"share": share.pk})

    assert response.status_code == 302
    assert client.get(f"/shared/{conversation.pk}/").status_code == 404
    assert client.get(f"/m/{reply.pk}/stream").status_code == 404
    assert client.post(f"/shared/{conversation.pk}/copy").status_code == 404
    event = AuditEvent.objects.get(action="share revoked")
    assert event.details == "from member 'bob'"


def test_revoking_a_share_that_is_not_there_says_so(alice, conversation):
    response = alice.post(f"/c/{conversation.pk}/unshare", {"share": "12345"}, follow=True)

    assert "It was not shared with them." in response.content.decode()


@pytest.mark.parametrize("action", ["share", "unshare", "copy"])
def test_sharing_posts_without_a_csrf_token_are_refused(user, bob, conversation, action):
    share = Share.objects.create(conversation=conversation, user=bob, created_by=user)
    account, url, data = {
        "share": (user, f"/c/{conversation.pk}/share", {"usernames": "bob"}),
        "unshare": (user, f"/c/{conversation.pk}/unshare", {"share": share.pk}),
        "copy": (bob, f"/shared/{conversation.pk}/copy", {}),
    }[action]
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(account)

    assert browser.post(url, data).status_code == 403
    assert list(Share.objects.all()) == [share] and Conversation.objects.count() == 1


# -- a reply still streaming ------------------------------------------------------------------


def first_delta(response) -> str:
    for event in read_events(response):
        if event.event == "delta":
            return event.data
    return ""


@IN_TRANSACTIONS
def test_a_recipient_watches_a_reply_live_and_a_non_recipient_gets_a_404(
    live_url, alice, user, bob, carol, api_key, fake_upstream
):
    fake_upstream.queue(Scenario(tokens=["Still", " writing", " this", "..."], hang_after=2))
    reply = send_message(alice, api_key, "Tell me a long story")
    share = Share.objects.create(conversation=reply.conversation, user=bob, created_by=user)
    wait_for(lambda: Message.objects.get(pk=reply.pk).status == Message.Status.STREAMING
             or fake_upstream.chat_requests)
    stream = f"{live_url}/m/{reply.pk}/stream"

    recipient = session_for(live_url, "bob")
    with recipient.get(stream, stream=True, timeout=15) as response:
        assert response.status_code == 200
        assert first_delta(response).startswith("Still")
    page = recipient.get(f"{live_url}/shared/{reply.conversation_id}/", timeout=10)
    assert page.status_code == 200 and "sse-connect" in page.text
    assert ">Stop<" not in page.text  # the owner's Stop is not the recipient's

    outsider = session_for(live_url, "carol")
    assert outsider.get(stream, stream=True, timeout=10).status_code == 404
    assert outsider.get(f"{live_url}/shared/{reply.conversation_id}/", timeout=10
                        ).status_code == 404

    share.delete()  # revoked: the very next request is refused
    assert recipient.get(stream, stream=True, timeout=10).status_code == 404
    assert Message.objects.get(pk=reply.pk).is_unfinished  # still streaming for its owner
    assert alice.post(f"/m/{reply.pk}/stop").status_code == 302
    assert finished_reply(reply).status == Message.Status.CANCELLED


# -- in the browser ----------------------------------------------------------------------------



@pytest.mark.browser
def test_share_read_continue_and_revoke_in_the_browser(screen, browser, live_url, user, bob,
                                                         conversation):
    from conftest import log_in, watch

    log_in(screen, "alice")
    screen.goto(f"/c/{conversation.pk}/")
    screen.get_by_role("button", name="Share", exact=True).click()
    screen.get_by_label("Members").fill("bob")
    screen.get_by_role("button", name="Share with them").click()
    screen.get_by_text("Shared: they find it under").wait_for()

    context = browser.new_context(base_url=live_url, **SCREENS["desktop, light"])
    tab = context.new_page()
    errors = watch(tab)
    log_in(tab, "bob")
    tab.get_by_role("link", name="Shared with me").click()
    tab.get_by_role("link", name="Release names").click()
    assert tab.locator("article strong").inner_text() == "Aurora"
    assert tab.get_by_role("button", name="Regenerate").count() == 0
    tab.get_by_role("button", name="Continue as my copy").click()
    tab.wait_for_url(re.compile(r"/c/\d+/$"))
    copy = Conversation.objects.get(owner=bob)
    assert tab.url.endswith(f"/c/{copy.pk}/")
    tab.get_by_role("button", name="Regenerate").wait_for()

    screen.get_by_role("button", name="Stop sharing with bob").click()  # still open (#share)
    screen.get_by_text("No longer shared with bob.").wait_for()
    response = tab.goto(f"/shared/{conversation.pk}/")
    assert response.status == 404
    context.close()
    assert not [error for error in errors if "404" not in error], errors


# -- search ------------------------------------------------------------------------------------


def test_search_finds_a_shared_conversation_for_its_recipients_only_until_revoked(
    user, bob, carol, conversation
):
    share = Share.objects.create(conversation=conversation, user=bob, created_by=user)
    answer = Message.objects.get(conversation=conversation, content=ANSWER)

    found = parse(client_of(bob).get("/search/", {"q": "Aurora"}))

    links = [link.attrs["href"] for link in found.find_all("a")
             if "#message-" in link.attrs.get("href", "")]
    assert links == [f"/shared/{conversation.pk}/#message-{answer.pk}"]
    assert "<mark>Aurora</mark>" not in client_of(carol).get(
        "/search/", {"q": "Aurora"}).content.decode()
    share.delete()
    assert "<mark>Aurora</mark>" not in client_of(bob).get(
        "/search/", {"q": "Aurora"}).content.decode()
