"""A team's page in the admin holds all of the team: members are added and removed there, keys
granted to it read "Key → Team", its default model is one its key offers, and a member locked
out by failed logins is unlocked from the user list or the user's page. Every change is audited.
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client

from conftest import PASSWORD, wait_for
from conversations.admin_forms import TeamSettingsForm
from conversations.models import ApiKey, AuditEvent, Team
from tests.helpers import SCREENS, Element, form_data
from tests.helpers import page as html

pytestmark = pytest.mark.django_db

OFFERED = ["gpt-4o", "gpt-4o-mini", "o3-mini"]
UNREADABLE = "ApiKey_teams object"


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def support() -> Group:
    return Group.objects.create(name="Support")


@pytest.fixture
def team_key(make_api_key) -> ApiKey:
    """A key whose provider listed three chat models (no allow-list)."""
    key = make_api_key(name="Support key", everyone=False, default_model="gpt-4o-mini")
    ApiKey.objects.filter(pk=key.pk).update(listed_models=OFFERED)
    key.refresh_from_db()
    return key


def change_url(group: Group) -> str:
    return f"/admin/auth/group/{group.pk}/change/"


def save(client: Client, group: Group, **changes: list[str] | str):
    """Submit the team's page as shown, with ``changes``; return the response."""
    data = {**form_data(client.get(change_url(group))), **changes, "_save": "Save"}
    return client.post(change_url(group), data)


def errors_of(response) -> str:
    """Return the form errors on the page (for a failed assertion's message)."""
    return " | ".join(element.text for element in html(response).find_all(class_="errorlist"))


def select(response, name: str) -> Element:
    return html(response).find("select", name=name)


def options(response, name: str) -> list[str]:
    return [option.attrs["value"] for option in select(response, name).find_all("option")]


def selected(response, name: str) -> list[str]:
    return [option.attrs["value"] for option in select(response, name).find_all("option")
            if "selected" in option.attrs]


def grant_prefix(response) -> str:
    """Return the form prefix of the team's key grants (Django derives it from the table)."""
    (total,) = [name for name in form_data(response)
                if name.endswith("-TOTAL_FORMS") and name != "team-TOTAL_FORMS"]
    return total.removesuffix("-TOTAL_FORMS")


# -- members -----------------------------------------------------------------------------------


def test_members_are_added_and_removed_on_the_teams_page(admin_client, support, user,
                                                         other_user):
    other_user.groups.add(support)
    page = admin_client.get(change_url(support))
    assert selected(page, "members") == [str(other_user.pk)]

    response = save(admin_client, support, members=[str(user.pk), str(other_user.pk)])
    assert response.status_code == 302, errors_of(response)
    assert set(support.user_set.all()) == {user, other_user}

    response = save(admin_client, support, members=[str(user.pk)])
    assert response.status_code == 302
    assert list(support.user_set.all()) == [user]


def test_a_new_team_is_created_with_its_members(admin_client, user, other_user):
    data = {**form_data(admin_client.get("/admin/auth/group/add/")), "name": "Sales",
            "members": [str(user.pk), str(other_user.pk)], "_save": "Save"}
    response = admin_client.post("/admin/auth/group/add/", data)
    assert response.status_code == 302, errors_of(response)
    assert set(Group.objects.get(name="Sales").user_set.all()) == {user, other_user}


def test_membership_changed_on_the_teams_page_is_audited(admin_client, support, user):
    save(admin_client, support, members=[str(user.pk)])
    save(admin_client, support, members=[])

    added = AuditEvent.objects.get(action="member added to team")
    removed = AuditEvent.objects.get(action="member removed from team")
    for event in (added, removed):
        # From the team's side Django signals the reverse of User.groups: the team is the
        # target, the members are the details.
        assert (event.target, event.details, event.actor_name) == ("Support", "alice", "root")


def test_saving_the_teams_page_unchanged_records_no_membership_change(admin_client, support,
                                                                      user):
    user.groups.add(support)
    AuditEvent.objects.all().delete()
    assert save(admin_client, support).status_code == 302
    assert list(support.user_set.all()) == [user]
    assert not AuditEvent.objects.filter(action__startswith="member").exists()


def test_staff_who_may_not_change_users_see_members_but_cannot_change_them(
    django_user_model, support, user, other_user
):
    staff = django_user_model.objects.create_user("stafford", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_group", "change_group"]))
    user.groups.add(support)
    client = Client()
    client.force_login(staff)
    page = client.get(change_url(support))
    assert "alice" in page.content.decode()
    assert not html(page).find_all("select", name="members")

    response = save(client, support, members=[str(other_user.pk)])
    assert response.status_code == 302
    assert list(support.user_set.all()) == [user]


# -- keys granted to the team ------------------------------------------------------------------


def test_grants_on_the_teams_page_read_key_to_team(admin_client, support, team_key):
    team_key.teams.add(support)
    page = admin_client.get(change_url(support)).content.decode()
    assert "Support key → Support" in page
    assert UNREADABLE not in page


def test_a_grant_revoked_on_the_teams_page_is_audited_and_named_in_its_history(
    admin_client, support, team_key
):
    team_key.teams.add(support)
    AuditEvent.objects.all().delete()
    page = admin_client.get(change_url(support))
    response = save(admin_client, support, **{f"{grant_prefix(page)}-0-DELETE": "on"})
    assert response.status_code == 302, errors_of(response)
    assert not team_key.teams.exists()

    event = AuditEvent.objects.get(action="access revoked")
    assert (event.target, event.details) == ("API key 'Support key'", "groups: Support")
    history = admin_client.get(f"/admin/auth/group/{support.pk}/history/").content.decode()
    assert "Support key → Support" in history
    assert UNREADABLE not in history


def test_a_grant_added_on_the_teams_page_is_audited(admin_client, support, team_key):
    page = admin_client.get(change_url(support))
    prefix = grant_prefix(page)
    response = save(admin_client, support, **{
        f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-0-apikey": str(team_key.pk),
        f"{prefix}-0-group": str(support.pk)})
    assert response.status_code == 302, errors_of(response)
    assert list(team_key.teams.all()) == [support]

    event = AuditEvent.objects.get(action="access granted")
    assert (event.target, event.details) == ("API key 'Support key'", "groups: Support")
    page = admin_client.get(change_url(support)).content.decode()
    assert "Support key → Support" in page and UNREADABLE not in page


def test_another_key_in_a_grant_revokes_the_first_and_grants_the_other(
    admin_client, support, team_key, make_api_key
):
    other = make_api_key(name="Other key", everyone=False)
    team_key.teams.add(support)
    page = admin_client.get(change_url(support))
    response = save(admin_client, support, **{f"{grant_prefix(page)}-0-apikey": str(other.pk)})
    assert response.status_code == 302, errors_of(response)
    assert list(support.api_keys.all()) == [other]
    actions = set(AuditEvent.objects.values_list("action", "target"))
    assert {("access revoked", "API key 'Support key'"),
            ("access granted", "API key 'Other key'")} <= actions


def test_a_grant_deleted_after_its_key_was_changed_revokes_the_key_it_granted(
    admin_client, support, team_key, make_api_key
):
    other = make_api_key(name="Other key", everyone=False)
    team_key.teams.add(support)
    page = admin_client.get(change_url(support))
    prefix = grant_prefix(page)
    response = save(admin_client, support, **{f"{prefix}-0-apikey": str(other.pk),
                                              f"{prefix}-0-DELETE": "on"})
    assert response.status_code == 302, errors_of(response)
    assert not support.api_keys.exists()
    history = admin_client.get(f"/admin/auth/group/{support.pk}/history/").content.decode()
    assert "Support key → Support" in history and "Other key" not in history


# -- deleting: the rows that go too read as words ----------------------------------------------


@pytest.fixture
def related(support, team_key, user):
    """A team with a member, a key and a preset granted to both, and a permission each."""
    from conversations.models import Preference, Preset

    user.groups.add(support)
    team_key.teams.add(support)
    team_key.users.add(user)
    preset = Preset.objects.create(name="Translator", api_key=team_key, model="gpt-4o")
    preset.teams.add(support)
    support.permissions.add(Permission.objects.get(codename="view_user"))
    user.user_permissions.add(Permission.objects.get(codename="view_group"))
    Preference.objects.create(user=user, theme="dark")
    return {"key": team_key, "team": support, "member": user, "preset": preset}


DELETED_ROWS = {
    "key": ("/admin/conversations/apikey/{pk}/delete/", [
        "API key granted to a team: Support key → Support",
        "API key granted to a user: Support key → alice"]),
    "team": ("/admin/auth/group/{pk}/delete/", [
        "Team membership: alice in Support",
        "API key granted to a team: Support key → Support",
        "Preset granted to a team: Translator → Support",
        "Permission of a team: Support: Authentication and Authorization | user | Can view user"]),
    "member": ("/admin/auth/user/{pk}/delete/", [
        "Team membership: alice in Support",
        "API key granted to a user: Support key → alice",
        "Permission of a user: alice: Authentication and Authorization | group | "
        "Can view group",
        "Preference: alice"]),
    "preset": ("/admin/conversations/preset/{pk}/delete/", [
        "Preset granted to a team: Translator → Support"]),
}


def deleted_list(response) -> str:
    """Return the text of what a delete confirmation says will be deleted, and its summary."""
    assert response.status_code == 200
    content = html(response).find("div", id="content")
    return content.text


@pytest.mark.parametrize("what", sorted(DELETED_ROWS))
def test_deleting_names_every_row_that_goes_with_it_by_its_two_ends(admin_client, related,
                                                                   what):
    url, rows = DELETED_ROWS[what]

    text = deleted_list(admin_client.get(url.format(pk=related[what].pk)))

    for row in rows:
        assert row in text
    assert "object (" not in text and "relationship" not in text


@pytest.mark.parametrize(("what", "changelist"), [
    ("key", "/admin/conversations/apikey/"), ("team", "/admin/auth/group/"),
    ("member", "/admin/auth/user/"), ("preset", "/admin/conversations/preset/")])
def test_deleting_a_selection_names_every_row_that_goes_with_it(admin_client, related, what,
                                                                changelist):
    response = admin_client.post(changelist, {"action": "delete_selected",
                                              "_selected_action": [related[what].pk]})

    text = deleted_list(response)
    assert "Are you sure" in text
    for row in DELETED_ROWS[what][1]:
        assert row in text
    assert "object (" not in text and "relationship" not in text


def test_the_summary_counts_the_rows_by_what_they_are(admin_client, related):
    text = deleted_list(admin_client.get(f"/admin/auth/group/{related['team'].pk}/delete/"))

    assert "Team memberships: 1" in text and "API keys granted to teams: 1" in text


# -- the team's default model ------------------------------------------------------------------


def test_the_default_model_is_chosen_from_the_models_the_key_offers(admin_client, support,
                                                                    team_key):
    Team.objects.create(group=support, default_key=team_key)
    page = admin_client.get(change_url(support))
    assert options(page, "team-0-default_model") == ["", *OFFERED]

    response = save(admin_client, support, **{"team-0-default_model": "o3-mini"})
    assert response.status_code == 302, errors_of(response)
    assert Team.objects.get(group=support).default_model == "o3-mini"


def test_a_model_the_key_does_not_offer_is_refused_naming_the_field(admin_client, support,
                                                                    team_key):
    Team.objects.create(group=support, default_key=team_key, default_model="gpt-4o")
    response = save(admin_client, support, **{"team-0-default_model": "gpt-5-turbo"})
    assert response.status_code == 200
    errors = errors_of(response)
    assert "default model" in errors and "gpt-5-turbo" in errors and "Support key" in errors
    assert Team.objects.get(group=support).default_model == "gpt-4o"


def test_a_model_the_key_no_longer_offers_is_shown_and_kept(admin_client, support, team_key):
    Team.objects.create(group=support, default_key=team_key, default_model="gpt-3.5-turbo")
    page = admin_client.get(change_url(support))
    assert options(page, "team-0-default_model") == ["", *OFFERED, "gpt-3.5-turbo"]
    assert selected(page, "team-0-default_model") == ["gpt-3.5-turbo"]

    response = save(admin_client, support, **{"team-0-monthly_token_budget": "5000"})
    assert response.status_code == 302, errors_of(response)
    team = Team.objects.get(group=support)
    assert (team.default_model, team.monthly_token_budget) == ("gpt-3.5-turbo", 5000)


def test_without_a_default_key_no_model_is_offered(admin_client, support, team_key):
    page = admin_client.get(change_url(support))
    assert options(page, "team-0-default_model") == [""]

    response = save(admin_client, support, **{"team-0-default_model": "gpt-4o"})
    assert response.status_code == 200
    assert "default model needs a default key" in response.content.decode()
    assert not Team.objects.exists()


def test_the_teams_own_page_offers_the_keys_models_too(admin_client, support, team_key):
    team = Team.objects.create(group=support, default_key=team_key)
    url = f"/admin/conversations/team/{team.pk}/change/"
    assert options(admin_client.get(url), "default_model") == ["", *OFFERED]
    assert select(admin_client.get(url), "default_model").attrs["data-key-field"] == "default_key"
    data = {**form_data(admin_client.get(url), "team_form"), "default_model": "gpt-5-turbo"}
    assert admin_client.post(url, data).status_code == 200
    assert Team.objects.get(pk=team.pk).default_model == ""


def test_the_default_model_select_carries_the_models_of_every_key(admin_client, support,
                                                                  team_key, make_api_key):
    other = make_api_key(name="Other key", everyone=False)
    ApiKey.objects.filter(pk=other.pk).update(listed_models=["o1", "gpt-4.1"])
    Team.objects.create(group=support, default_key=team_key)

    attrs = select(admin_client.get(change_url(support)), "team-0-default_model").attrs

    assert attrs["data-key-field"] == "team-0-default_key"
    assert json.loads(attrs["data-models"]) == {
        str(team_key.pk): {"blank": "The key's default (gpt-4o-mini)", "models": OFFERED},
        str(other.pk): {"blank": "The key's default", "models": ["o1", "gpt-4.1"]}}


@pytest.mark.browser
@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_choosing_another_key_lists_its_models_without_a_reload(
    browser, live_url, root, support, team_key, make_api_key, screen
):
    from conftest import log_in, watch

    other = make_api_key(name="Other key", everyone=False, default_model="gpt-4.1")
    ApiKey.objects.filter(pk=other.pk).update(listed_models=["o1", "gpt-4.1"])
    Team.objects.create(group=support, default_key=team_key, default_model="gpt-4o")
    context = browser.new_context(base_url=live_url, **SCREENS[screen])
    page = context.new_page()
    errors = watch(page)
    log_in(page, "root")
    page.goto(change_url(support))
    models = page.locator("select[name='team-0-default_model']")
    listed = "select => Array.from(select.options, option => [option.value, option.text])"
    assert models.evaluate(listed)[1:] == [[model, model] for model in OFFERED]
    assert models.input_value() == "gpt-4o"

    page.locator(".field-default_key .select2-selection").click()
    page.locator(".select2-search__field").fill("Other")
    page.locator(".select2-results__option", has_text="Other key").click()

    wait_for(lambda: models.evaluate(listed) == [
        ["", "The key's default (gpt-4.1)"], ["o1", "o1"], ["gpt-4.1", "gpt-4.1"]], 5)
    assert models.input_value() == ""  # gpt-4o is not the other key's
    models.select_option("o1")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(r"/admin/auth/group/$"))
    team = Team.objects.get(group=support)
    assert (team.default_key, team.default_model) == (other, "o1")
    context.close()
    assert not errors, errors


def test_the_team_settings_form_keeps_every_setting_a_team_has():
    editable = {field.name for field in Team._meta.concrete_fields if field.editable}
    assert set(TeamSettingsForm.base_fields) == editable


# -- unlocking a login -------------------------------------------------------------------------


def lock_out(settings) -> Client:
    """Fail alice's login until she is locked out; return her browser."""
    member = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        member.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert member.post("/accounts/login/", {"username": "alice", "password": PASSWORD}
                       ).status_code == 429
    return member


def test_unlock_login_action_lets_a_locked_out_member_log_in(admin_client, user, other_user,
                                                             settings):
    member = lock_out(settings)
    response = admin_client.post("/admin/auth/user/", {
        "action": "unlock_login", "_selected_action": [user.pk, other_user.pk]}, follow=True)
    page = response.content.decode()
    assert "1 user unlocked" in page and "1 user had no failed logins" in page

    response = member.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in member.session
    (event,) = AuditEvent.objects.filter(action="login unlocked")
    assert (event.target, event.actor_name) == ("user 'alice'", "root")


def test_a_locked_out_members_page_offers_unlock_login(admin_client, user, settings):
    url = f"/admin/auth/user/{user.pk}/change/"
    assert "Unlock login" not in admin_client.get(url).content.decode()
    member = lock_out(settings)

    page = admin_client.get(url)
    (form,) = [form for form in html(page).find_all("form")
               if form.attrs.get("action", "").endswith("/unlock-login/")]
    assert re.fullmatch(r"Unlock login \(\d+ failed logins\)", form.text)
    response = admin_client.post(form.attrs["action"], follow=True)
    assert response.redirect_chain[-1][0] == url
    assert "1 user unlocked" in response.content.decode()
    assert member.post("/accounts/login/", {"username": "alice", "password": PASSWORD}
                       ).status_code == 302
    assert AuditEvent.objects.filter(action="login unlocked", target="user 'alice'").exists()


def test_unlocking_needs_the_permission_to_change_users(django_user_model, user, settings):
    member = lock_out(settings)
    staff = django_user_model.objects.create_user("stafford", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    client = Client()
    client.force_login(staff)
    assert client.post(f"/admin/auth/user/{user.pk}/unlock-login/").status_code == 403
    client.post("/admin/auth/user/", {"action": "unlock_login", "_selected_action": [user.pk]})
    assert member.post("/accounts/login/", {"username": "alice", "password": PASSWORD}
                       ).status_code == 429
    assert not AuditEvent.objects.filter(action="login unlocked").exists()
