"""Teams, grants, usage accounting, budgets and per-minute limits, and the admin around them."""

from __future__ import annotations

import datetime
import re
import threading

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from conftest import PASSWORD, wait_for
from conversations import limits, selectors
from conversations.models import (
    ApiKey,
    AuditEvent,
    CatalogModel,
    Message,
    Team,
    UsageDaily,
    UserLimit,
)
from devtools.fake_upstream import Scenario
from tests.helpers import migrated_back_to


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def post_message(client, key, model="gpt-4o-mini", text="Hello"):
    return client.post("/c/new/messages", {"content": text, "model": f"{key.pk}:{model}"})


def post_in_parallel(user, key, count: int) -> list[int]:
    """Send ``count`` messages as ``user`` at once, from as many browsers; return the statuses."""
    statuses: list[int] = []

    def one() -> None:
        client = Client()
        client.force_login(user)
        statuses.append(post_message(client, key).status_code)
        connection.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def finished(pk: int) -> Message:
    return wait_for(lambda: (m := Message.objects.get(pk=pk)).status not in Message.UNFINISHED
                    and m)


@pytest.fixture
def support(db):
    return Group.objects.create(name="Support")


@pytest.fixture
def team_key(make_api_key, support):
    key = make_api_key(name="Support key", everyone=False, organization="org-s", project="proj_s")
    key.teams.add(support)
    return key


# -- access ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_members_see_only_keys_granted_to_them(alice, user, team_key, make_api_key, support):
    make_api_key(name="Private key", everyone=False)
    assert "Support key" not in alice.get("/").content.decode()
    user.groups.add(support)
    page = alice.get("/").content.decode()
    assert f'value="{team_key.pk}:gpt-4o-mini"' in page
    assert "Private key" not in page


@pytest.mark.django_db
def test_a_crafted_post_cannot_use_an_ungranted_key(alice, team_key):
    response = post_message(alice, team_key)
    assert response.status_code == 400
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_crafted_post_cannot_use_a_model_outside_the_allow_list(alice, user, team_key, support):
    user.groups.add(support)
    CatalogModel.objects.filter(api_key=team_key).exclude(model="gpt-4o-mini").update(
        offered=False)
    page = alice.get("/").content.decode()
    assert f'value="{team_key.pk}:gpt-4o"' not in page
    assert post_message(alice, team_key, model="gpt-4o").status_code == 400
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_leaving_the_team_takes_effect_on_the_next_message(alice, user, team_key, support):
    user.groups.add(support)
    first = post_message(alice, team_key)
    assert first.status_code == 302
    finished(Message.objects.get(role="assistant").pk)
    conversation = Message.objects.get(role="assistant").conversation
    user.groups.remove(support)
    response = alice.post(f"/c/{conversation.pk}/messages",
                          {"content": "again", "model": f"{team_key.pk}:gpt-4o-mini"})
    assert response.status_code == 400
    assert Message.objects.filter(role="user").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_deactivated_key_refuses_regenerate_and_edit(alice, team_key, user, support):
    user.groups.add(support)
    post_message(alice, team_key)
    reply = finished(Message.objects.get(role="assistant").pk)
    team_key.is_active = False
    team_key.save()
    response = alice.post(f"/m/{reply.pk}/retry", follow=True)
    assert "You may no longer use" in response.content.decode()
    assert Message.objects.filter(role="assistant").count() == 1


@pytest.mark.django_db
def test_a_team_default_key_and_model_are_preselected(alice, user, make_api_key, support):
    make_api_key(name="A first key", default_model="gpt-4o-mini")
    team_default = make_api_key(name="Team default", everyone=False)
    team_default.teams.add(support)
    Team.objects.create(group=support, default_key=team_default, default_model="gpt-4o")
    user.groups.add(support)
    page = alice.get("/").content.decode()
    assert re.search(rf'<option value="{team_default.pk}:gpt-4o"[^>]* selected[ >]', page)


# -- usage -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_usage_is_recorded_from_the_usage_chunk_per_user_team_key_and_scope(
    alice, user, team_key, support
):
    user.groups.add(support)
    post_message(alice, team_key)
    reply = finished(Message.objects.get(role="assistant").pk)
    assert (reply.prompt_tokens, reply.completion_tokens, reply.total_tokens) == (7, 4, 11)
    assert not reply.usage_estimated and reply.team == support
    row = UsageDaily.objects.get()
    assert (row.user, row.team, row.api_key) == (user, support, team_key)
    assert (row.organization, row.project, row.model) == ("org-s", "proj_s", "gpt-4o-mini")
    assert (row.requests, row.total_tokens, row.estimated_tokens) == (1, 11, 0)
    assert row.day == timezone.localdate()


@pytest.mark.django_db(transaction=True)
def test_usage_is_estimated_and_marked_when_the_upstream_sends_none(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["x" * 40], send_usage=False))
    post_message(alice, api_key, text="y" * 80)
    reply = finished(Message.objects.get(role="assistant").pk)
    assert reply.usage_estimated
    assert reply.completion_tokens == 10  # 40 bytes at about four a token
    assert reply.prompt_tokens >= 20
    row = UsageDaily.objects.get()
    assert row.estimated_tokens == row.total_tokens == reply.total_tokens


@pytest.mark.django_db(transaction=True)
def test_two_replies_on_one_day_add_up_in_one_row(alice, api_key):
    for text in ("one", "two"):
        post_message(alice, api_key, text=text)
        finished(Message.objects.filter(role="assistant").latest("id").pk)
    row = UsageDaily.objects.get()
    assert (row.requests, row.total_tokens) == (2, 22)


# -- budgets and limits ------------------------------------------------------------------------


def spend(user, tokens, team=None, day=None):
    UsageDaily.objects.create(day=day or timezone.localdate(), user=user, team=team,
                              model="gpt-4o-mini", requests=1, total_tokens=tokens)


@pytest.mark.django_db
def test_a_member_over_their_monthly_budget_is_told_which_limit_and_when_it_resets(
    alice, user, api_key
):
    UserLimit.objects.create(user=user, monthly_token_budget=1000)
    spend(user, 1000)
    response = post_message(alice, api_key)
    page = response.content.decode()
    assert response.status_code == 400
    assert "monthly budget of 1,000 tokens" in page and "resets on" in page
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_last_months_usage_does_not_count_against_this_months_budget(alice, user, api_key):
    UserLimit.objects.create(user=user, monthly_token_budget=1000)
    spend(user, 5000, day=timezone.localdate().replace(day=1) - datetime.timedelta(days=1))
    assert post_message(alice, api_key).status_code == 302


@pytest.mark.django_db
def test_an_admin_raising_the_budget_lets_the_member_chat_again(alice, user, api_key):
    limit = UserLimit.objects.create(user=user, monthly_token_budget=100)
    spend(user, 100)
    assert post_message(alice, api_key).status_code == 400
    limit.monthly_token_budget = None
    limit.save()
    assert post_message(alice, api_key).status_code == 302


@pytest.mark.django_db
def test_a_team_over_its_budget_stops_its_members_with_the_teams_name(
    alice, user, team_key, support, other_user
):
    user.groups.add(support)
    Team.objects.create(group=support, monthly_token_budget=500)
    spend(other_user, 500, team=support)  # a colleague used it up
    response = post_message(alice, team_key)
    assert response.status_code == 400
    assert "Your team Support has used its monthly budget" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("alone", "by_colleague", "refusal"), [
    (700, 0, "You have used your monthly budget of 1,000 tokens"),
    (0, 200, "Your team Support has used its monthly budget of 500 tokens"),
])
def test_with_a_budget_of_their_own_and_their_teams_the_member_is_told_the_one_used_up(
    alice, user, team_key, support, other_user, alone, by_colleague, refusal
):
    user.groups.add(support)
    UserLimit.objects.create(user=user, monthly_token_budget=1000)
    Team.objects.create(group=support, monthly_token_budget=500)
    spend(user, 300, team=support)
    spend(user, alone)
    spend(other_user, by_colleague, team=support)
    response = post_message(alice, team_key)
    assert response.status_code == 400
    assert refusal in response.content.decode()


@pytest.mark.django_db
def test_a_team_grant_is_read_with_its_team_in_one_query(
    user, team_key, support, django_assert_num_queries
):
    user.groups.add(support, Group.objects.create(name="A team without the key"))
    zebra = Group.objects.create(name="Zebra")
    zebra.user_set.add(user)
    team_key.teams.add(zebra)
    with django_assert_num_queries(2):  # the grant, and the stamp it is kept under (access.py)
        grant = selectors.grant_for(user=user, key=team_key, model="gpt-4o-mini")
    assert grant.team == support  # the first of the member's teams with the key, by name
    team_key.is_active = False
    team_key.save()
    assert selectors.grant_for(user=user, key=team_key, model="gpt-4o-mini") is None


@pytest.mark.django_db
def test_a_key_granted_to_everyone_or_to_the_member_charges_no_team(user, make_api_key):
    mine = make_api_key(name="Mine", everyone=False)
    mine.users.add(user)
    for key in (mine, make_api_key(name="Everyone's")):
        assert selectors.grant_for(user=user, key=key, model="gpt-4o-mini").team is None
    assert selectors.grant_for(user=user, key=make_api_key(everyone=False), model="x") is None


@pytest.mark.django_db
def test_messages_per_minute_limit_says_when_to_try_again(alice, user, api_key):
    UserLimit.objects.create(user=user, requests_per_minute=2)
    assert post_message(alice, api_key).status_code == 302
    assert post_message(alice, api_key).status_code == 302
    response = post_message(alice, api_key)
    assert response.status_code == 400
    assert "at most 2 messages a minute" in response.content.decode()
    assert "Try again in" in response.content.decode()


@pytest.mark.django_db
def test_the_per_minute_limit_holds_across_the_turn_of_a_minute(alice, user, api_key, monkeypatch):
    """A fixed per-minute counter would let 2 x N messages through around hh:mm:00."""
    UserLimit.objects.create(user=user, requests_per_minute=2)
    clock = [1_800_000_059.5]  # half a second before a minute starts
    monkeypatch.setattr(limits, "_now", lambda: clock[0])
    assert post_message(alice, api_key).status_code == 302
    assert post_message(alice, api_key).status_code == 302
    clock[0] += 1  # the next minute
    response = post_message(alice, api_key)
    assert response.status_code == 400
    assert "Try again in 59 seconds" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_parallel_messages_cannot_slip_past_the_per_minute_limit(user, api_key, fake_upstream):
    UserLimit.objects.create(user=user, requests_per_minute=3)
    statuses = post_in_parallel(user, api_key, 8)
    assert sorted(statuses) == [302] * 3 + [400] * 5
    assert Message.objects.filter(role="user").count() == 3
    for reply in Message.objects.filter(role="assistant"):
        finished(reply.pk)


@pytest.mark.django_db(transaction=True)
def test_a_budget_is_overshot_by_at_most_the_replies_in_flight(alice, user, api_key, fake_upstream):
    UserLimit.objects.create(user=user, monthly_token_budget=15)
    assert post_message(alice, api_key).status_code == 302  # 11 tokens, in flight
    assert post_message(alice, api_key).status_code == 302  # admitted: 0 used so far
    for reply in Message.objects.filter(role="assistant"):
        finished(reply.pk)
    assert post_message(alice, api_key).status_code == 400  # 22 used ≥ 15: no more
    used = sum(UsageDaily.objects.values_list("total_tokens", flat=True))
    assert used == 22  # the overshoot is exactly the replies that were in flight


@pytest.mark.django_db(transaction=True)
def test_upstream_rate_limits_read_differently_from_our_own(alice, user, api_key, fake_upstream):
    fake_upstream.queue(*[Scenario(status=429, error_code="insufficient_quota")])
    post_message(alice, api_key)
    reply = finished(Message.objects.get(role="assistant").pk)
    page = alice.get(f"/c/{reply.conversation_id}/").content.decode()
    assert "quota is used up" in page and "monthly budget" not in page


# -- admin -------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(db, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_test_connection_reports_success_and_scope_mismatch_without_the_secret(
    admin_client, api_key, make_api_key, fake_upstream
):
    response = admin_client.post("/admin/conversations/apikey/", {
        "action": "test_connection", "_selected_action": [api_key.pk]}, follow=True)
    assert "connected (org-team, proj_chat)" in response.content.decode()
    fake_upstream.models_status = 401
    response = admin_client.post("/admin/conversations/apikey/", {
        "action": "test_connection", "_selected_action": [api_key.pk]}, follow=True)
    assert "failed" in response.content.decode() and "rejected" in response.content.decode()


@pytest.mark.django_db
def test_refresh_models_lists_the_chat_models_in_the_catalog(admin_client, api_key):
    CatalogModel.objects.filter(api_key=api_key).delete()
    admin_client.post("/admin/conversations/apikey/", {
        "action": "refresh_models", "_selected_action": [api_key.pk]})
    assert ApiKey.objects.get(pk=api_key.pk).listed_models == ["gpt-4o", "gpt-4o-mini"]
    assert list(CatalogModel.objects.filter(api_key=api_key).values_list("model", "offered")) \
        == [("gpt-4o", True), ("gpt-4o-mini", True)]


@pytest.mark.django_db
def test_key_changes_are_audited_with_who_and_what_but_never_the_secret(
    admin_client, api_key, support
):
    response = admin_client.post(f"/admin/conversations/apikey/{api_key.pk}/change/", {
        "name": api_key.name, "secret": "sk-new-secret-abcdefghijklmnop", "base_url": api_key.base_url,
        "organization": "org-new", "project": api_key.project, "default_model": "",
        "teams": [support.pk], "users": [], "everyone": "on",
        "is_active": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    admin_client.post("/admin/conversations/apikey/", {
        "action": "deactivate", "_selected_action": [api_key.pk]})
    events = list(AuditEvent.objects.order_by("id"))
    actions = [event.action for event in events]
    assert "key destination changed" in actions and "access granted" in actions
    assert "key deactivated" in actions
    changed = next(e for e in events if e.action == "key destination changed")
    assert changed.actor_name == "root"
    assert "org-new" in changed.details and "secret replaced (now sk-…mnop)" in changed.details
    assert all("sk-new-secret" not in event.details for event in events)


@pytest.mark.django_db
def test_team_membership_changes_are_audited(admin_client, user, support):
    user.groups.add(support)
    event = AuditEvent.objects.get(action="member added to team")
    assert event.target == "alice" and "Support" in event.details


@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "/admin/conversations/apikey/", "/admin/conversations/conversation/",
    "/admin/conversations/message/", "/admin/conversations/usagedaily/",
    "/admin/conversations/auditevent/", "/admin/conversations/team/",
    "/admin/conversations/userlimit/", "/admin/auth/group/", "/admin/auth/user/",
])
def test_admin_lists_render_with_data_without_a_query_per_row(
    admin_client, url, user, other_user, api_key, support, django_assert_max_num_queries
):
    from conversations.models import Conversation

    for number in range(30):
        owner = user if number % 2 else other_user
        conversation = Conversation.objects.create(owner=owner, api_key=api_key, model="m",
                                                   title=f"Chat {number}")
        Message.objects.create(conversation=conversation, role="assistant", api_key=api_key,
                               team=support, content="x", total_tokens=3)
        spend(owner, 10 + number, team=support, day=timezone.localdate() - datetime.timedelta(number))
        UserLimit.objects.get_or_create(user=owner)
        owner.groups.add(support)
    Team.objects.create(group=support, default_key=api_key)
    admin_client.get(url)  # warm caches (content types, sessions)
    with django_assert_max_num_queries(20):
        response = admin_client.get(url)
    assert response.status_code == 200


@pytest.mark.django_db
def test_conversations_are_read_only_in_the_admin_unless_allowed(admin_client, user, api_key, settings):
    from conversations.models import Conversation

    conversation = Conversation.objects.create(owner=user, api_key=api_key, title="Private")
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"
    assert admin_client.post(url, {"title": "Changed"}).status_code == 403
    assert admin_client.post(f"/admin/conversations/conversation/{conversation.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    settings.CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS = True
    admin_client.post(url, {"title": "Changed", "system_prompt": "",
                            "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0})
    assert Conversation.objects.get().title == "Changed"


@pytest.mark.django_db
def test_the_database_keeps_one_usage_row_per_day_even_without_a_team_or_key(user):
    # NULLs are distinct to a plain unique constraint; this one compares them as equal.
    spend(user, 5)
    with pytest.raises(IntegrityError), transaction.atomic():
        spend(user, 7)
    assert UsageDaily.objects.get(user=user).total_tokens == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_replies_of_a_day_are_each_counted_once_in_one_row(user, api_key,
                                                                          fake_upstream):
    fake_upstream.default = Scenario(first_token_delay=0.3)  # the replies finish together
    assert post_in_parallel(user, api_key, 6) == [302] * 6
    replies = list(Message.objects.filter(role="assistant").values_list("pk", flat=True))
    assert len(replies) == 6
    for pk in replies:
        assert finished(pk).status == Message.Status.COMPLETE
    row = UsageDaily.objects.get(user=user)
    assert (row.requests, row.total_tokens) == (6, 6 * 11)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_upgrading_merges_duplicate_usage_rows_into_one(user, api_key):
    with migrated_back_to(("conversations", "0002_teams_usage_budgets")) as old_apps:
        old_usage = old_apps.get_model("conversations", "UsageDaily")
        for requests, tokens in ((1, 5), (2, 30), (1, 7)):  # what the old constraint allowed
            old_usage.objects.create(day=timezone.localdate(), user_id=user.pk, team=None,
                                     api_key_id=api_key.pk, model="gpt-4o-mini",
                                     requests=requests, total_tokens=tokens)
        old_usage.objects.create(day=timezone.localdate(), user_id=user.pk, model="gpt-4o",
                                 requests=1, total_tokens=100)
        MigrationExecutor(connection).migrate([("conversations",
                                                 "0004_usage_one_row_per_dimensions")])
    rows = UsageDaily.objects.order_by("model").values_list("model", "requests", "total_tokens")
    assert list(rows) == [("gpt-4o", 1, 100), ("gpt-4o-mini", 4, 42)]
