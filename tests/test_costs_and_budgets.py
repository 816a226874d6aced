"""Usage details and money: what a reply cost, budgets in the site's currency, budget alerts.

Replies come from the fake upstream over loopback; the usage chunk it sends is OpenAI's, with
``prompt_tokens_details`` and ``completion_tokens_details``. Prices are the catalog's, set for
the model of the key as an admin would.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.core.cache import cache
from django.utils import timezone

from conversations import replies
from conversations.models import (
    AuditEvent,
    BudgetAlert,
    CatalogModel,
    Message,
    Team,
    UsageDaily,
    UserLimit,
)
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, migrated_back_to, page, send_message

pytestmark = pytest.mark.django_db(transaction=True)

DETAILED_USAGE = {
    "prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1500, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 300, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0},
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def set_prices(api_key, model: str, *, input, cached_input, output) -> None:
    """Set a model's prices on a key as an admin does in the catalog (None: the default)."""
    CatalogModel.objects.update_or_create(api_key=api_key, model=model, defaults={
        "input_price": None if input is None else Decimal(input),
        "cached_input_price": None if cached_input is None else Decimal(cached_input),
        "output_price": None if output is None else Decimal(output),
    })


def reply_with(client, api_key, scenario: Scenario, fake_upstream, text="Hello",
               conversation=None) -> Message:
    """Send a message and return its reply once the generating thread is done with it (budget
    alerts come after the reply's final write)."""
    fake_upstream.queue(scenario)
    reply = finished_reply(send_message(client, api_key, text, conversation=conversation))
    assert replies.wait_idle(10)
    return reply


# -- what a reply cost -------------------------------------------------------------------------


def test_a_usage_chunk_with_cached_and_reasoning_tokens_is_stored_with_its_cost(
    alice, user, api_key, fake_upstream
):
    set_prices(api_key, "gpt-4o-mini", input="2.00", cached_input="0.50", output="8.00")

    reply = reply_with(alice, api_key, Scenario(tokens=["Hi"], usage=DETAILED_USAGE),
                       fake_upstream)

    assert (reply.prompt_tokens, reply.completion_tokens, reply.total_tokens) == (2000, 500, 2500)
    assert (reply.cached_tokens, reply.reasoning_tokens, reply.audio_tokens) == (1500, 300, 0)
    # 500 uncached input × 2.00 + 1,500 cached × 0.50 + 500 output (reasoning included) × 8.00,
    # per million tokens.
    assert reply.cost == Decimal("0.00575")
    assert reply.cost_currency == "USD" and not reply.usage_estimated
    assert (reply.price_input, reply.price_cached_input, reply.price_output) == (
        Decimal("2"), Decimal("0.5"), Decimal("8"))
    row = UsageDaily.objects.get()
    assert (row.cached_tokens, row.reasoning_tokens, row.cost, row.uncosted_requests) == (
        1500, 300, Decimal("0.00575"), 0)
    shown = page(alice.get("/usage/"))
    assert shown.find(id="total-cost").text == "$0.0058"
    assert shown.find(id="total-cached").text == "1,500"
    assert shown.find(id="total-reasoning").text == "300"


def test_a_later_price_change_does_not_rewrite_what_earlier_replies_cost(
    alice, api_key, fake_upstream
):
    set_prices(api_key, "gpt-4o-mini", input="1.00", cached_input=None, output="1.00")
    first = reply_with(alice, api_key, Scenario(tokens=["A"], usage={
        "prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}), fake_upstream)
    set_prices(api_key, "gpt-4o-mini", input="10.00", cached_input=None, output="10.00")

    second = reply_with(alice, api_key, Scenario(tokens=["B"], usage={
        "prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}), fake_upstream,
        conversation=first.conversation)

    first.refresh_from_db()
    assert first.cost == Decimal("0.002") and first.price_input == Decimal("1")
    assert second.cost == Decimal("0.02") and second.price_input == Decimal("10")
    assert UsageDaily.objects.get().cost == Decimal("0.022")


def test_estimated_usage_is_marked_estimated_in_cost_too(alice, api_key, fake_upstream):
    set_prices(api_key, "gpt-4o-mini", input="1.00", cached_input="0.10", output="4.00")

    reply = reply_with(alice, api_key, Scenario(tokens=["x" * 400], send_usage=False),
                       fake_upstream)

    assert reply.usage_estimated and reply.completion_tokens == 100
    assert reply.cost == (reply.prompt_tokens * Decimal(1) + 100 * Decimal(4)) / 1_000_000
    row = UsageDaily.objects.get()
    assert row.estimated_cost == row.cost == reply.cost > 0
    assert "(of which estimated: $0.0004)" in page(alice.get("/usage/")).find(
        id="total-cost").text


def test_a_model_without_a_price_costs_unknown_not_zero(alice, api_key, fake_upstream):
    api_key.listed_models = ["acme-chat-1"]  # a model the catalog knows no price for
    api_key.save(update_fields=["listed_models"])

    fake_upstream.queue(Scenario(tokens=["Hi"]))
    reply = finished_reply(send_message(alice, api_key, "Hello", model="acme-chat-1"))
    assert replies.wait_idle(10)

    assert reply.status == Message.Status.COMPLETE
    assert reply.cost is None and reply.cost_currency == ""
    assert UsageDaily.objects.get().uncosted_requests == 1
    assert page(alice.get("/usage/")).find(id="total-cost").text == "unknown"


@pytest.mark.slow
def test_usage_kept_from_before_costs_shows_an_unknown_cost_after_the_upgrade(user, api_key):
    with migrated_back_to(("conversations", "0008_presets")) as old_apps:
        old_usage = old_apps.get_model("conversations", "UsageDaily")
        old_usage.objects.create(day=timezone.localdate(), user_id=user.pk, model="gpt-4o",
                                 requests=3, prompt_tokens=90, completion_tokens=10,
                                 total_tokens=100)

    row = UsageDaily.objects.get()
    assert (row.requests, row.total_tokens, row.uncosted_requests, row.cost) == (3, 100, 3, 0)


# -- budgets in money --------------------------------------------------------------------------


def spend(user, *, cost="0", tokens=0, team=None):
    UsageDaily.objects.create(day=timezone.localdate(), user=user, team=team, model="gpt-4o",
                              requests=1, total_tokens=tokens, cost=Decimal(cost))


def test_a_member_over_their_cost_budget_is_refused_with_the_amount_and_nothing_is_sent(
    alice, user, api_key, fake_upstream
):
    UserLimit.objects.create(user=user, monthly_cost_budget=Decimal("5.00"))
    spend(user, cost="5.00")

    response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{api_key.pk}:gpt-4o"})

    assert response.status_code == 400
    assert "You have used your monthly budget of $5.00" in response.content.decode()
    assert not Message.objects.exists() and not fake_upstream.chat_requests


def test_a_team_over_its_cost_budget_stops_its_members_with_the_teams_name(
    alice, user, other_user, make_api_key
):
    support = Group.objects.create(name="Support")
    user.groups.add(support)
    key = make_api_key(everyone=False)
    key.teams.add(support)
    Team.objects.create(group=support, monthly_cost_budget=Decimal("20"))
    spend(other_user, cost="20.00", team=support)

    response = alice.post("/c/new/messages", {"content": "Hi", "model": f"{key.pk}:gpt-4o"})

    assert response.status_code == 400
    assert ("Your team Support has used its monthly budget of $20.00"
            in response.content.decode())


def test_the_usage_page_shows_the_cost_budget_that_binds(alice, user):
    UserLimit.objects.create(user=user, monthly_token_budget=1_000_000,
                             monthly_cost_budget=Decimal("10"))
    spend(user, cost="9.00", tokens=1000)

    section = page(alice.get("/usage/")).find("section", class_="usage-budget")

    assert ("You have used $9.00 of your monthly budget of $10.00: $1.00 left."
            in section.text)
    assert "90% of the budget is used." in section.text
    assert Decimal(section.find("meter").attrs["value"]) == 9


# -- alerts ------------------------------------------------------------------------------------


def test_crossing_the_alert_threshold_alerts_once_member_admins_and_audit(
    alice, user, django_user_model, make_api_key, fake_upstream, admin_client
):
    support = Group.objects.create(name="Support")
    user.groups.add(support)
    lead = django_user_model.objects.create_user("lead", email="lead@example.com",
                                                 is_staff=True)
    lead.groups.add(support)
    django_user_model.objects.create_user("bystander", email="other@example.com", is_staff=True)
    key = make_api_key(everyone=False)
    key.teams.add(support)
    Team.objects.create(group=support, monthly_token_budget=100)
    spend(user, tokens=70, team=support)
    assert "budget-notice" not in alice.get("/").content.decode()

    # The fake's usage: 7 prompt tokens + 4 completion tokens → 81 of 100.
    reply_with(alice, key, Scenario(), fake_upstream)
    reply_with(alice, key, Scenario(tokens=["more"]), fake_upstream)  # 88: no second alert

    alert = BudgetAlert.objects.get()
    assert (alert.team, alert.kind, alert.percent) == (support, "tokens", 81)
    assert [message.to for message in mail.outbox] == [["lead@example.com"]]
    assert "Support" in mail.outbox[0].subject and "81%" in mail.outbox[0].subject
    assert AuditEvent.objects.filter(action="budget alert", target="team 'Support'").count() == 1
    notice = page(alice.get("/")).find(id="budget-notice")
    assert "Your team Support has used 81% of its monthly token budget." in notice.text
    index = page(admin_client.get("/admin/"))
    assert "81% of the monthly tokens budget" in index.find(id="budget-alerts").text


def test_an_alert_that_cannot_be_mailed_never_costs_the_reply(
    alice, user, api_key, fake_upstream, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # nothing listens there
    user.is_superuser, user.email = True, "alice@example.com"
    user.save()
    UserLimit.objects.create(user=user, monthly_token_budget=10)

    reply = reply_with(alice, api_key, Scenario(), fake_upstream)

    assert reply.status == Message.Status.COMPLETE and reply.content == "Hello, world!"
    assert BudgetAlert.objects.get().user == user
