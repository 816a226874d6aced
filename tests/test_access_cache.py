"""What a member may pick and use is kept in memory (``conversations/access.py``), yet every
admin change reaches them at once: the chat page stops offering what was taken away, a message
for it is refused, and what was given appears."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from conversations import access, catalog, selectors
from conversations.models import ApiKey, CatalogModel, Message
from tests.helpers import page

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(user) -> Group:
    support = Group.objects.create(name="Support")
    user.groups.add(support)
    return support


@pytest.fixture
def team_key(make_api_key, fake_upstream, team):
    fake_upstream.default.models = ["gpt-4o-mini", "gpt-4o", "o3"]
    key = make_api_key(name="Support key", everyone=False, default_model="gpt-4o-mini")
    key.teams.add(team)
    return key


def offered(client) -> set[str]:
    select = page(client.get("/")).find("select", name="model")
    return {option.attrs["value"] for option in select.find_all("option")}


def sends(client, key, model: str) -> bool:
    """Whether a message for ``model`` on ``key`` is taken (a reply started)."""
    before = Message.objects.filter(role="assistant").count()
    client.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:{model}"})
    return Message.objects.filter(role="assistant").count() > before


def test_a_members_models_are_read_once_then_cost_only_the_stamp(
    user, team_key, django_assert_num_queries, django_assert_max_num_queries
):
    with django_assert_max_num_queries(6):
        first = selectors.model_groups(user=user)
    with django_assert_num_queries(1):  # the stamp
        again = selectors.model_groups(user=user)
    assert [(g.key.pk, g.models) for g in again] == [(g.key.pk, g.models) for g in first]
    assert [(g.key.pk, sorted(g.models)) for g in first] == [
        (team_key.pk, ["gpt-4o", "gpt-4o-mini", "o3"])]
    # The kept keys leave their secret in the database.
    assert "secret_encrypted" in again[0].key.get_deferred_fields()


def _deactivate(key, **_):
    key.is_active = False
    key.save()


def _ungrant(key, team, **_):
    key.teams.remove(team)


def _leave(user, team, **_):
    user.groups.remove(team)


def _delete_team(team, **_):
    team.delete()


def _withdraw_in_form(key, **_):
    row = CatalogModel.objects.get(api_key=key, model="gpt-4o")
    row.offered = False
    row.save()


def _withdraw_by_action(key, admin_client, **_):
    row = CatalogModel.objects.get(api_key=key, model="gpt-4o")
    response = admin_client.post("/admin/conversations/catalogmodel/", {
        "action": "withdraw", "_selected_action": [row.pk]}, follow=True)
    assert response.status_code == 200


def _narrow(key, team, **_):
    # A team named by a model of the key may use only the models that name it.
    CatalogModel.objects.get(api_key=key, model="gpt-4o-mini").teams.add(team)


def _unlisted(key, fake_upstream, **_):
    fake_upstream.default.models = ["gpt-4o-mini", "o3"]
    catalog.refresh(ApiKey.objects.get(pk=key.pk))  # as the watchdog does


@pytest.mark.parametrize(("change", "gone"), [
    (_deactivate, {"gpt-4o-mini", "gpt-4o", "o3"}),
    (_ungrant, {"gpt-4o-mini", "gpt-4o", "o3"}),
    (_leave, {"gpt-4o-mini", "gpt-4o", "o3"}),
    (_delete_team, {"gpt-4o-mini", "gpt-4o", "o3"}),
    (_withdraw_in_form, {"gpt-4o"}),
    (_withdraw_by_action, {"gpt-4o"}),
    (_narrow, {"gpt-4o", "o3"}),
    (_unlisted, {"gpt-4o"}),
], ids=["key deactivated", "grant removed", "member left the team", "team deleted",
        "model withdrawn in its form", "model withdrawn by the admin's action",
        "team's grant narrowed", "provider no longer lists it"])
def test_what_an_admin_takes_away_is_gone_at_once(
    alice, user, team, team_key, admin_client, fake_upstream, change, gone
):
    everything = {f"{team_key.pk}:{model}" for model in ("gpt-4o-mini", "gpt-4o", "o3")}
    assert offered(alice) == everything  # read, and kept
    assert selectors.grant_for(user=user, key=team_key, model="gpt-4o").team == team

    change(key=team_key, team=team, user=user, admin_client=admin_client,
           fake_upstream=fake_upstream)

    assert offered(alice) & everything == everything - {f"{team_key.pk}:{m}" for m in gone}
    # The gate every reply passes (a retry or an edit has no form to refuse it first), asked
    # with the key as the database has it now.
    assert selectors.grant_for(user=user, key=ApiKey.objects.get(pk=team_key.pk),
                               model="gpt-4o") is None
    assert not sends(alice, team_key, "gpt-4o")


def test_a_key_granted_to_a_member_is_offered_at_once(alice, user, team_key, make_api_key):
    assert offered(alice)  # read, and kept
    mine = make_api_key(name="Mine", everyone=False, default_model="gpt-4o")
    assert f"{mine.pk}:gpt-4o" not in offered(alice)
    mine.users.add(user)
    assert f"{mine.pk}:gpt-4o" in offered(alice)
    assert sends(alice, mine, "gpt-4o")


def test_a_grant_kept_does_not_depend_on_the_callers_copy_of_the_key(user, team_key,
                                                                   fake_upstream):
    held = ApiKey.objects.get(pk=team_key.pk)  # as a form validated before a refresh
    fake_upstream.default.models = ["gpt-4o-mini", "o3"]
    catalog.refresh(ApiKey.objects.get(pk=team_key.pk))
    assert selectors.grant_for(user=user, key=held, model="gpt-4o") is not None  # its own list
    assert selectors.grant_for(user=user, key=ApiKey.objects.get(pk=team_key.pk),
                               model="gpt-4o") is None


def test_a_refresh_that_changes_nothing_keeps_the_answers(user, team_key):
    selectors.model_groups(user=user)
    before = access.current()
    catalog.refresh(ApiKey.objects.get(pk=team_key.pk))  # the provider lists the same
    assert access.current() == before


@pytest.mark.django_db(transaction=True)
def test_migrating_back_past_the_stamps_table_and_forward_again_works(user, team_key):
    from django.core.management import call_command

    call_command("migrate", "conversations", "0019", verbosity=0)
    call_command("migrate", verbosity=0)
    assert access.current()  # written again once the table is back
    assert [g.key.pk for g in selectors.model_groups(user=user)] == [team_key.pk]


def test_a_stamp_written_in_a_transaction_rolled_back_is_never_seen(user, team_key):
    from django.db import transaction

    before = access.current()
    with pytest.raises(RuntimeError), transaction.atomic():
        team_key.teams.clear()
        assert access.current() != before  # this transaction sees its own change
        assert selectors.model_groups(user=user) == []  # and its answer is kept under it
        raise RuntimeError
    assert access.current() == before
    assert [g.key.pk for g in selectors.model_groups(user=user)] == [team_key.pk]


def test_a_model_the_provider_newly_lists_is_offered_at_once(alice, team_key, fake_upstream):
    assert f"{team_key.pk}:gpt-4.1" not in offered(alice)  # read, and kept
    fake_upstream.default.models = ["gpt-4o-mini", "gpt-4o", "o3", "gpt-4.1"]
    catalog.refresh(team_key)
    assert f"{team_key.pk}:gpt-4.1" in offered(alice)
    assert sends(alice, team_key, "gpt-4.1")
