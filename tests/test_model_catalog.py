"""The model catalog the admin owns (issue 11): per key, the models it offers and what each is.

Defaults come from one table (``model_defaults.py``), matched by model-id prefix; the admin
overrides any field per key and model, narrows what members are offered, and narrows teams'
grants of a shared key to different models. "Refresh models" brings the provider's list in
without losing the admin's settings. A member sees display names, only what their grants allow,
and a forged POST for another model is refused before anything is sent.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conversations import catalog, model_defaults, selectors
from conversations.models import ApiKey, AuditEvent, CatalogModel, Conversation, Message
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, form_data, migrated_back_to
from tests.helpers import page as parse

LISTED = ["gpt-4o", "gpt-4o-mini", "o3", "text-embedding-3-small", "gpt-4o-realtime-preview"]
CHAT = ["gpt-4o", "gpt-4o-mini", "o3"]


@pytest.fixture
def key(make_api_key, fake_upstream):
    fake_upstream.default.models = LISTED
    return make_api_key(name="Shared key", default_model="gpt-4o-mini")


def row(key, model: str) -> CatalogModel:
    return CatalogModel.objects.get(api_key=key, model=model)


def offered_to(client) -> dict[str, str]:
    """The models the member's model select offers: value → label."""
    select = parse(client.get("/")).find("select", name="model")
    return {option.attrs["value"]: option.text for option in select.find_all("option")}


# -- the defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "family", "priced"), [
    ("gpt-4o", "gpt-4o", True),
    ("gpt-4o-2024-11-20", "gpt-4o", True),
    ("gpt-4o-2024-05-13", "gpt-4o", False),  # an older snapshot sold at another price
    ("GPT-4o-mini", "gpt-4o-mini", True),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", True),
    ("o3-mini", "o3-mini", True),
    ("o4-mini-2025-04-16", "o4-mini", True),
    ("gpt-5", "gpt-5", True),
    ("gpt-5.4", "gpt-5", False),  # a newer GPT-5: the family's ways, no price guessed
    ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "gpt-4o-mini", False),
])
def test_a_model_gets_its_familys_defaults_and_a_price_only_where_it_is_known(
    model, family, priced
):
    defaults = model_defaults.defaults_for(model)
    expected = next(f.defaults for f in model_defaults.FAMILIES if f.prefix == family)
    assert (defaults.context_window, defaults.reasoning, defaults.length_parameter,
            defaults.system_role) == (expected.context_window, expected.reasoning,
                                      expected.length_parameter, expected.system_role)
    assert (defaults.input_price is not None) is priced


@pytest.mark.parametrize("model", ["llama-3.1-8b-instruct", "o10", "gpt-4oo", "mistral/gpt-4o"])
def test_an_unknown_model_is_treated_conservatively(model):
    assert model_defaults.defaults_for(model) == model_defaults.UNKNOWN
    unknown = model_defaults.UNKNOWN
    assert (unknown.length_parameter, unknown.system_role, unknown.accepts_temperature) == (
        "max_tokens", "system", True)
    assert unknown.input_price is None and not unknown.reasoning
    assert not (unknown.accepts_safety_identifier or unknown.accepts_prompt_cache_key)


def test_the_families_a_team_meets_are_described():
    gpt4o, o3, gpt5 = (model_defaults.defaults_for(m) for m in ("gpt-4o", "o3", "gpt-5"))
    assert (gpt4o.length_parameter, gpt4o.system_role, gpt4o.accepts_temperature,
            gpt4o.reasoning) == ("max_tokens", "system", True, False)
    for reasoning in (o3, gpt5):
        assert (reasoning.length_parameter, reasoning.system_role,
                reasoning.accepts_temperature, reasoning.reasoning) == (
            "max_completion_tokens", "developer", False, True)
    assert (gpt4o.input_price, gpt4o.cached_input_price, gpt4o.output_price) == (
        Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))


# -- spec_for ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_spec_for_merges_the_admins_overrides_with_the_defaults_in_one_query(
    key, django_assert_num_queries, settings
):
    settings.CHATSITE_FIRST_TOKEN_TIMEOUT = 300
    row = CatalogModel.objects.get(api_key=key, model="gpt-4o")
    row.display_name, row.context_window = "GPT-4o (EU)", 64_000
    row.output_price, row.accepts_temperature = Decimal("9.5"), False
    row.save()  # as the admin's form does

    # One query and the stamp (access.py); then the stamp alone, until the catalog changes.
    for given, queries in ((key, 2), (key.pk, 1)):
        with django_assert_num_queries(queries):
            spec = catalog.spec_for(given, "gpt-4o")
        assert spec.display_name == "GPT-4o (EU)" and spec.offered
        assert spec.context_window == 64_000 and spec.max_output_tokens == 16_384
        assert spec.output_price == Decimal("9.5")
        assert spec.input_price is spec.cached_input_price is None  # the prices go together
        assert not spec.accepts_temperature and spec.length_parameter == "max_tokens"
        assert spec.first_token_timeout == 300
        assert spec.overridden == {"display_name", "context_window", "output_price",
                                   "accepts_temperature"}

    o3 = catalog.spec_for(key.pk, "o3")
    assert (o3.display_name, o3.reasoning, o3.first_token_timeout) == ("o3", True, 600)
    assert not catalog.spec_for(key, "gpt-3.5-turbo").offered  # not listed by this key
    with django_assert_num_queries(2):
        assert not catalog.spec_for(key.pk + 1000, "gpt-4o").offered  # no such key


@pytest.mark.django_db
def test_the_tables_prices_are_in_dollars_and_go_together(key, settings):
    assert catalog.spec_for(key, "gpt-4o").input_price == Decimal("2.50")
    row = CatalogModel.objects.get(api_key=key, model="gpt-4o")
    row.input_price, row.output_price = Decimal("2"), Decimal("7")
    row.save()
    spec = catalog.spec_for(key, "gpt-4o")
    assert (spec.input_price, spec.cached_input_price, spec.output_price) == (
        Decimal("2"), None, Decimal("7"))  # no dollar price mixed into the admin's

    settings.CHATSITE_CURRENCY = "EUR"
    mini = catalog.spec_for(key, "gpt-4o-mini")
    assert mini.input_price is mini.cached_input_price is mini.output_price is None
    assert catalog.spec_for(key, "gpt-4o").output_price == Decimal("7")  # the admin's, in EUR


# -- what members are offered -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_fresh_key_offers_every_chat_model_its_provider_lists(alice, key):
    assert list(CatalogModel.objects.filter(api_key=key).values_list("model", "offered")) == [
        (model, True) for model in CHAT]
    assert offered_to(alice) == {f"{key.pk}:{model}": model for model in CHAT}


@pytest.mark.django_db
def test_members_see_display_names_and_only_offered_models(alice, key, fake_upstream):
    CatalogModel.objects.filter(api_key=key, model="gpt-4o").update(display_name="GPT-4o")
    CatalogModel.objects.filter(api_key=key, model="o3").update(offered=False)

    assert offered_to(alice) == {f"{key.pk}:gpt-4o": "GPT-4o",
                                 f"{key.pk}:gpt-4o-mini": "gpt-4o-mini"}
    response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:o3"})
    assert response.status_code == 400
    assert "Model: That model is not available. Pick one from the list." in (
        response.content.decode())
    assert not Message.objects.exists() and not fake_upstream.chat_requests


@pytest.mark.django_db(transaction=True)
def test_a_model_withdrawn_after_the_chat_began_is_refused_on_retry(alice, key, fake_upstream):
    reply = finished_reply(Message.objects.get(pk=post(alice, key, "o3")))
    row = CatalogModel.objects.get(api_key=key, model="o3")
    row.offered = False
    row.save()
    requests_before = len(fake_upstream.chat_requests)

    response = alice.post(f"/m/{reply.pk}/retry", follow=True)

    assert "You may no longer use o3 with this key." in response.content.decode()
    assert len(fake_upstream.chat_requests) == requests_before


def post(client, key, model: str, text: str = "Hi") -> int:
    response = client.post("/c/new/messages", {"content": text, "model": f"{key.pk}:{model}"})
    assert response.status_code == 302, response.content.decode()[:500]
    return Message.objects.filter(role="assistant").latest("id").pk


# -- refreshing keeps the admin's settings ------------------------------------------------------


@pytest.mark.django_db
def test_refresh_adds_new_models_drops_gone_ones_and_keeps_the_admins_settings(
    key, fake_upstream
):
    CatalogModel.objects.filter(api_key=key, model="gpt-4o").update(display_name="GPT-4o",
                                                                    input_price=Decimal("3"))
    CatalogModel.objects.filter(api_key=key, model="o3").update(context_window=100_000)
    fake_upstream.default = Scenario(models=["gpt-4o", "gpt-4.1", "gpt-4o-mini-2024-07-18"])

    listing = catalog.refresh(key)

    assert listing.added == ["gpt-4.1", "gpt-4o-mini-2024-07-18"]
    assert listing.removed == ["gpt-4o-mini"]  # no settings of the admin's: gone
    assert listing.kept == ["o3"]  # the admin's settings stay, waiting for it to come back
    gpt4o = row(key, "gpt-4o")
    assert (gpt4o.display_name, gpt4o.input_price) == ("GPT-4o", Decimal("3"))
    assert row(key, "gpt-4.1").offered  # the key is not narrowed: new models are offered
    assert selectors.models_for_key(key).models == ["gpt-4.1", "gpt-4o",
                                                    "gpt-4o-mini-2024-07-18"]
    assert not catalog.spec_for(key, "o3").offered  # no longer listed: offered to nobody

    fake_upstream.default = Scenario(models=["gpt-4o", "o3"])
    catalog.refresh(key)
    assert catalog.spec_for(key, "o3").offered
    assert catalog.spec_for(key, "o3").context_window == 100_000


@pytest.mark.django_db
def test_on_a_narrowed_key_new_models_wait_for_the_admin(key, fake_upstream):
    CatalogModel.objects.filter(api_key=key, model="o3").update(offered=False)
    fake_upstream.default = Scenario(models=[*CHAT, "gpt-5"])

    assert catalog.refresh(key).added == ["gpt-5"]

    assert not row(key, "gpt-5").offered
    assert selectors.models_for_key(key).models == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.django_db
def test_the_admins_refresh_action_reports_what_changed(admin_client, key, fake_upstream):
    CatalogModel.objects.filter(api_key=key, model="o3").update(display_name="o3 (slow)")
    fake_upstream.default = Scenario(models=["gpt-4o", "gpt-5"])

    response = admin_client.post("/admin/conversations/apikey/", {
        "action": "refresh_models", "_selected_action": [key.pk]}, follow=True)

    page = response.content.decode()
    assert "2 chat models listed: gpt-4o, gpt-5" in page
    assert "new: gpt-5" in page and "gone: gpt-4o-mini" in page
    assert "no longer listed, kept with your settings: o3" in page


# -- the admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_keys_page_lists_its_models_linking_to_where_they_are_changed(admin_client, key):
    CatalogModel.objects.filter(api_key=key, model="o3").update(offered=False)

    page = parse(admin_client.get(f"/admin/conversations/apikey/{key.pk}/change/"))

    table = page.find("table", class_="catalog")
    rows = [[cell.text for cell in line.find_all("td")] for line in table.find_all("tr")[1:]]
    assert [line[:3] for line in rows] == [["gpt-4o", "gpt-4o", "yes"],
                                           ["gpt-4o-mini", "gpt-4o-mini", "yes"],
                                           ["o3", "o3", "no"]]
    assert rows[2][3:] == ["200,000", "max_completion_tokens", "developer", "2 / 8"]
    links = [a.attrs["href"] for a in table.find_all("a")]
    assert links[0] == f"/admin/conversations/catalogmodel/{row(key, 'gpt-4o').pk}/change/"


@pytest.mark.django_db
def test_an_admin_overrides_a_model_and_narrows_what_is_offered(admin_client, alice, key):
    url = f"/admin/conversations/catalogmodel/{row(key, 'gpt-4o').pk}/change/"
    shown = admin_client.get(url)
    document = parse(shown)
    assert document.find("input", name="context_window").attrs["placeholder"] == "128,000"
    assert document.find("select", name="reasoning").find_all("option")[0].text == (
        "Default (no)")
    assert document.find("select", name="length_parameter").find_all("option")[0].text == (
        "Default (max_tokens)")

    data = {**form_data(shown, "catalogmodel_form"), "display_name": "GPT-4o (EU)",
            "output_price": "9.50", "accepts_temperature": "false", "_save": "Save"}
    response = admin_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:3000]
    spec = catalog.spec_for(key, "gpt-4o")
    assert (spec.display_name, spec.output_price, spec.accepts_temperature) == (
        "GPT-4o (EU)", Decimal("9.50"), False)
    assert spec.context_window == 128_000  # left empty: the default
    event = AuditEvent.objects.filter(action="model catalog changed").latest("id")
    assert "'gpt-4o'" in event.target and "output_price Decimal('9.50')" in event.details

    admin_client.post("/admin/conversations/catalogmodel/", {
        "action": "withdraw", "_selected_action": [row(key, "o3").pk]})
    assert f"{key.pk}:o3" not in offered_to(alice)
    assert AuditEvent.objects.filter(action="models withdrawn", details="o3").exists()
    assert admin_client.get("/admin/conversations/catalogmodel/add/").status_code == 403


@pytest.mark.django_db
def test_the_model_list_in_the_admin_shows_effective_values(admin_client, key):
    CatalogModel.objects.filter(api_key=key, model="gpt-4o-mini").update(
        input_price=None, output_price=Decimal("0.7"))
    page = admin_client.get(
        f"/admin/conversations/catalogmodel/?api_key__id__exact={key.pk}").content.decode()
    assert "reasoning, max_completion_tokens, developer" in page  # o3
    assert "max_tokens, system, temperature" in page  # gpt-4o
    assert "2.5 / 1.25 / 10" in page


# -- grants per team ---------------------------------------------------------------------------


@pytest.fixture
def teams(key, user, other_user):
    """One key shared by two teams, each given other models: Alpha gpt-4o-mini, Beta gpt-4o."""
    ApiKey.objects.filter(pk=key.pk).update(everyone=False)
    alpha, beta = Group.objects.create(name="Alpha"), Group.objects.create(name="Beta")
    key.teams.add(alpha, beta)
    row(key, "gpt-4o-mini").teams.add(alpha)
    row(key, "gpt-4o").teams.add(beta)
    user.groups.add(alpha)
    other_user.groups.add(beta)
    return alpha, beta


@pytest.mark.django_db
def test_two_teams_sharing_a_key_are_given_different_models(client, user, other_user, key,
                                                           teams):
    client.force_login(user)
    assert offered_to(client) == {f"{key.pk}:gpt-4o-mini": "gpt-4o-mini"}
    client.force_login(other_user)
    assert offered_to(client) == {f"{key.pk}:gpt-4o": "gpt-4o"}
    assert ApiKey.objects.filter(secret_encrypted=key.secret_encrypted).count() == 1


@pytest.mark.django_db
def test_a_member_of_both_teams_sees_the_union_and_a_direct_grant_sees_all(
    client, user, key, teams, django_user_model
):
    alpha, beta = teams
    user.groups.add(beta)
    client.force_login(user)
    assert set(offered_to(client)) == {f"{key.pk}:gpt-4o", f"{key.pk}:gpt-4o-mini"}

    carol = django_user_model.objects.create_user("carol")
    key.users.add(carol)
    client.force_login(carol)
    assert set(offered_to(client)) == {f"{key.pk}:{model}" for model in CHAT}


@pytest.mark.django_db
def test_a_forged_post_for_a_model_the_team_was_not_given_is_refused(
    client, user, key, teams, fake_upstream
):
    client.force_login(user)
    response = client.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:gpt-4o"})

    assert response.status_code == 400
    assert "Model: That model is not available. Pick one from the list." in (
        response.content.decode())
    assert not Message.objects.exists() and not fake_upstream.chat_requests
    assert selectors.grant_for(user=user, key=key, model="gpt-4o") is None
    assert selectors.grant_for(user=user, key=key, model="gpt-4o-mini").team == teams[0]


@pytest.mark.django_db(transaction=True)
def test_the_reply_is_charged_to_the_team_whose_grant_allows_the_model(
    client, user, key, teams, fake_upstream
):
    alpha, beta = teams
    user.groups.add(beta)  # Alpha comes first by name, but only Beta was given gpt-4o
    client.force_login(user)
    reply = finished_reply(Message.objects.get(pk=post(client, key, "gpt-4o")))
    assert reply.status == "complete" and reply.team == beta


@pytest.mark.django_db(transaction=True)
def test_a_conversation_whose_model_the_team_lost_is_refused_on_retry(
    client, user, key, teams, fake_upstream
):
    client.force_login(user)
    reply = finished_reply(Message.objects.get(pk=post(client, key, "gpt-4o-mini")))
    row(key, "gpt-4o-mini").teams.remove(teams[0])
    row(key, "gpt-4o").teams.add(teams[0])
    before = len(fake_upstream.chat_requests)

    response = client.post(f"/m/{reply.pk}/retry", follow=True)

    assert "You may no longer use gpt-4o-mini with this key." in response.content.decode()
    assert len(fake_upstream.chat_requests) == before
    assert Conversation.objects.get().messages.count() == 2


@pytest.mark.django_db
def test_the_teams_page_shows_what_each_grant_allows_and_changes_are_audited(
    admin_client, key, teams
):
    alpha, _beta = teams
    page = parse(admin_client.get(f"/admin/auth/group/{alpha.pk}/change/"))
    assert [cell.text for cell in page.find_all("td", class_="field-models")] == [
        "gpt-4o-mini", "-"]  # the grant, and the empty row a new grant starts from
    assert page.find("th", class_="column-models").text == (
        "Models (narrowed under Admin → Models)")
    assert AuditEvent.objects.filter(action="grants narrowed to a model",
                                     details="teams: Alpha").exists()

    deleting = admin_client.get(f"/admin/auth/group/{alpha.pk}/delete/").content.decode()
    assert "gpt-4o-mini (Shared key) → Alpha" in deleting
    assert "CatalogModel_teams object" not in deleting


# -- upgrading ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_upgrading_turns_each_keys_allow_list_into_its_catalog(key):
    with migrated_back_to(("conversations", "0009_usage_details_and_cost")) as old_apps:
        old_key = old_apps.get_model("conversations", "ApiKey")
        old_key.objects.filter(pk=key.pk).update(allowed_models=["gpt-4o", "o3"])
        never_listed = old_key.objects.create(name="Never listed", secret_encrypted="x",
                                              allowed_models=["gpt-4.1"])
        MigrationExecutor(connection).migrate([("conversations", "0010_model_catalog")])

    assert list(CatalogModel.objects.filter(api_key=key).values_list("model", "offered")) == [
        ("gpt-4o", True), ("gpt-4o-mini", False), ("o3", True)]
    assert selectors.models_for_key(ApiKey.objects.get(pk=never_listed.pk)).models == ["gpt-4.1"]
