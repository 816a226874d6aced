"""The usage pages: staff see everyone's usage, a member their own; filters, grouping, the chart,
CSV export, and a bounded number of queries on a year of data.

Usage is stored as ``UsageDaily`` rows (bulk-created here, or recorded by a real reply through
the fake upstream); pages are read with the test client and a small HTML parser, and the chart is
checked once in Chromium.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from conftest import PASSWORD, log_in, wait_for, watch
from conversations.models import ApiKey, Message, Team, UsageDaily, UserLimit
from tests.helpers import page as html

D1, D2, D3 = datetime.date(2025, 3, 1), datetime.date(2025, 3, 2), datetime.date(2025, 3, 5)
RANGE = {"start": "2025-03-01", "end": "2025-03-05"}


# -- data ------------------------------------------------------------------------------------


@pytest.fixture
def staff(django_user_model):
    """A staff member allowed to view usage (the permission the admin usage page asks for)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("root", password=PASSWORD, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_usagedaily"))
    return user


@pytest.mark.django_db
def test_staff_without_the_usage_permission_cannot_see_everyones_usage(django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password=PASSWORD, is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get("/admin/usage/").status_code == 403


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def key(name: str) -> ApiKey:
    return ApiKey.objects.create(name=name, secret_encrypted="not a secret", secret_hint="sk-…none")


def usage_row(day, user, *, team=None, api_key=None, organization="", project="",
              model="gpt-4o-mini", requests=1, prompt=0, completion=0, estimated=0, cached=0,
              reasoning=0, cost="0", uncosted=0) -> UsageDaily:
    return UsageDaily(
        day=day, user=user, team=team, api_key=api_key, organization=organization,
        project=project, model=model, requests=requests, prompt_tokens=prompt,
        completion_tokens=completion, total_tokens=prompt + completion, estimated_tokens=estimated,
        cached_tokens=cached, reasoning_tokens=reasoning, cost=Decimal(cost),
        uncosted_requests=uncosted,
    )


@pytest.fixture
def recorded(user, other_user):
    """Four rows over three days; mallory's figures (7,331 and 4,242) are easy to spot."""
    support, research = Group.objects.create(name="Support"), Group.objects.create(name="Research")
    key_a, key_b = key("Key A"), key("Key B")
    UsageDaily.objects.bulk_create([
        usage_row(D1, user, team=support, api_key=key_a, organization="org-a", project="proj_x",
                  model="gpt-4o-mini", requests=2, prompt=100, completion=50, cached=20,
                  cost="0.000045"),
        usage_row(D1, other_user, team=research, api_key=key_b, organization="org-b",
                  project="proj_x", model="gpt-4o", requests=1, prompt=7000, completion=331,
                  reasoning=12, cost="0.02081"),
        # Kept from before costs were recorded: its cost is unknown.
        usage_row(D2, user, team=support, api_key=key_b, organization="org-b", project="proj_y",
                  model="gpt-4o-mini", requests=3, prompt=200, completion=100, estimated=40,
                  uncosted=3),
        usage_row(D3, other_user, api_key=key_a, organization="org-a", project="proj_y",
                  model="gpt-4o-mini", requests=1, prompt=4000, completion=242,
                  cost="0.0007452"),
    ])
    return {"alice": user, "mallory": other_user, "Support": support, "Research": research,
            "Key A": key_a, "Key B": key_b}


def total(document) -> str:
    return document.find(id="total-tokens").text


def table(document) -> list[tuple[str, str]]:
    """Return the grouped table's rows as (label, total tokens)."""
    rows = document.find("table", class_="usage-table usage-groups").find("tbody").find_all("tr")
    return [(row.find("th").text, row.find_all("td")[3].text) for row in rows]


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


MALLORY_FIGURES = ("7331", "7,331", "4242", "4,242", "11,573", "7000", "7,000", "mallory",
                   "Research", "0.0208", "0.0007")


# -- what the admin sees ---------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_page_shows_totals_chart_and_table_of_recorded_usage(admin_client, recorded):
    document = html(admin_client.get("/admin/usage/", RANGE))

    assert total(document) == "12,023"
    assert document.find(id="total-requests").text == "7"
    assert document.find(id="total-prompt").text == "11,300"
    assert document.find(id="total-completion").text == "723"
    assert table(document) == [("gpt-4o", "7,331"), ("gpt-4o-mini", "4,692")]
    bars = document.find_all("rect", class_="usage-chart__bar")
    assert [bar.attrs["data-day"] for bar in bars] == [
        "2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05"]
    assert [bar.attrs["data-tokens"] for bar in bars] == ["7481", "300", "0", "0", "4242"]


@pytest.mark.django_db
def test_chart_bars_are_scaled_to_the_busiest_day_with_tooltips_and_a_summary(
    admin_client, recorded
):
    document = html(admin_client.get("/admin/usage/", RANGE))
    svg = document.find("svg")

    assert svg.attrs["role"] == "img"
    assert svg.attrs["aria-label"] == (
        "Total tokens per day from 2025-03-01 to 2025-03-05: 12,023 tokens in all, "
        "the most on 2025-03-01 (7,481).")
    heights = {bar.attrs["data-day"]: float(bar.attrs["height"])
               for bar in svg.find_all("rect", class_="usage-chart__bar")}
    tallest = heights["2025-03-01"]
    assert tallest == max(heights.values()) > 0
    assert heights["2025-03-05"] == pytest.approx(tallest * 4242 / 7481, abs=0.01)
    assert heights["2025-03-03"] == 0
    titles = [title.text for title in svg.find_all("title")]
    assert titles == ["2025-03-01: 7,481 tokens", "2025-03-02: 300 tokens", "2025-03-03: 0 tokens",
                      "2025-03-04: 0 tokens", "2025-03-05: 4,242 tokens"]
    labels = [text.text for text in svg.find_all("text")]
    assert labels == ["7,481", "0", "2025-03-01", "2025-03-05"]


@pytest.mark.django_db
def test_default_range_is_the_last_30_days_zero_filled(admin_client, user):
    today = timezone.localdate()
    UsageDaily.objects.bulk_create([
        usage_row(today, user, prompt=5, completion=6),
        usage_row(today - datetime.timedelta(days=30), user, prompt=1000, completion=1000),
    ])

    document = html(admin_client.get("/admin/usage/"))

    assert total(document) == "11"
    bars = document.find_all("rect", class_="usage-chart__bar")
    assert len(bars) == 30
    assert bars[0].attrs["data-day"] == (today - datetime.timedelta(days=29)).isoformat()
    assert bars[-1].attrs["data-day"] == today.isoformat()
    assert document.find("input", name="start").attrs["value"] == bars[0].attrs["data-day"]
    assert document.find("input", name="end").attrs["value"] == today.isoformat()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "value", "expected_total", "expected_table"), [
    ("user", "alice", "450", [("gpt-4o-mini", "450")]),
    ("user", "mallory", "11,573", [("gpt-4o", "7,331"), ("gpt-4o-mini", "4,242")]),
    ("team", "Support", "450", [("gpt-4o-mini", "450")]),
    ("team", "Research", "7,331", [("gpt-4o", "7,331")]),
    ("api_key", "Key A", "4,392", [("gpt-4o-mini", "4,392")]),
    ("api_key", "Key B", "7,631", [("gpt-4o", "7,331"), ("gpt-4o-mini", "300")]),
    ("organization", "org-a", "4,392", [("gpt-4o-mini", "4,392")]),
    ("project", "proj_y", "4,542", [("gpt-4o-mini", "4,542")]),
    ("model", "gpt-4o", "7,331", [("gpt-4o", "7,331")]),
    ("start", "2025-03-02", "4,542", [("gpt-4o-mini", "4,542")]),
    ("end", "2025-03-01", "7,481", [("gpt-4o", "7,331"), ("gpt-4o-mini", "150")]),
])
def test_each_filter_narrows_the_totals_and_the_table(
    admin_client, recorded, name, value, expected_total, expected_table
):
    if name in ("user", "team", "api_key"):
        value = recorded[value].pk
    document = html(admin_client.get("/admin/usage/", {**RANGE, name: value}))

    assert total(document) == expected_total
    assert table(document) == expected_table
    if name not in ("start", "end"):
        selected = document.find("select", name=name).find_all("option", selected="")
        assert [option.attrs["value"] for option in selected] == [str(value)]


@pytest.mark.django_db
def test_filter_selects_offer_the_values_with_usage(admin_client, recorded):
    document = html(admin_client.get("/admin/usage/", RANGE))

    def options(name):
        return [option.text for option in document.find("select", name=name).find_all("option")]

    assert options("user") == ["All users", "alice", "mallory"]
    assert options("team") == ["All teams", "Research", "Support"]
    assert options("api_key") == ["All keys", "Key A", "Key B"]
    assert options("organization") == ["All organizations", "org-a", "org-b"]
    assert options("project") == ["All projects", "proj_x", "proj_y"]
    assert options("model") == ["All models", "gpt-4o", "gpt-4o-mini"]
    # Outside the range, only the values used in it are offered.
    later = html(admin_client.get("/admin/usage/", {"start": "2025-03-05", "end": "2025-03-05"}))
    assert [o.text for o in later.find("select", name="team").find_all("option")] == ["All teams"]


@pytest.mark.django_db
@pytest.mark.parametrize(("group_by", "expected"), [
    ("user", [("mallory", "11,573"), ("alice", "450")]),
    ("team", [("Research", "7,331"), ("(none)", "4,242"), ("Support", "450")]),
    ("api_key", [("Key B", "7,631"), ("Key A", "4,392")]),
    ("organization", [("org-b", "7,631"), ("org-a", "4,392")]),
    ("project", [("proj_x", "7,481"), ("proj_y", "4,542")]),
    ("model", [("gpt-4o", "7,331"), ("gpt-4o-mini", "4,692")]),
])
def test_table_groups_by_every_dimension(admin_client, recorded, group_by, expected):
    document = html(admin_client.get("/admin/usage/", {**RANGE, "group_by": group_by}))

    assert table(document) == expected
    assert total(document) == "12,023"


@pytest.mark.django_db
def test_estimated_tokens_are_marked_as_estimated(admin_client, recorded):
    document = html(admin_client.get("/admin/usage/", RANGE))

    estimated = document.find("div", class_="usage-estimated")
    assert (estimated.find("dt").text, estimated.find("dd").text) == ("Of which estimated", "40")
    note = document.find("p", class_="usage-estimated usage-estimated__note")
    assert note.text.startswith("40 tokens are estimated: the AI provider sent no usage")
    row = document.find("table", class_="usage-table usage-groups").find_all("tr")[2]
    assert row.find("th").text == "gpt-4o-mini"
    assert row.find("td", class_="number usage-estimated").text == "40"


@pytest.mark.django_db
def test_bad_filters_are_reported_and_the_defaults_used(admin_client, recorded):
    for params, error in [
        ({"start": "yesterday"}, "From: Enter a valid date."),
        ({"start": "2025-03-05", "end": "2025-03-01"}, "To: The end date is before the start date."),
        ({"start": "2020-01-01", "end": "2025-03-01"}, "From: Choose at most 366 days."),
        ({"user": "x"}, "User: Enter a whole number."),
        ({"group_by": "password"}, "Group by: Select a valid choice."),
    ]:
        response = admin_client.get("/admin/usage/", params)
        assert response.status_code == 200
        assert html(response).find(role="alert").text.startswith(error), params
        assert len(html(response).find_all("rect", class_="usage-chart__bar")) == 30


# -- CSV -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csv_export_has_a_header_and_one_line_per_day_and_value(admin_client, recorded):
    response = admin_client.get("/admin/usage/", {**RANGE, "format": "csv"})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="chatsite-usage-2025-03-01-2025-03-05.csv"')
    assert csv_rows(response) == [
        ["day", "model", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
         "estimated_tokens", "cached_tokens", "reasoning_tokens", "image_tokens", "cost",
         "estimated_cost", "requests_without_price", "currency"],
        ["2025-03-01", "gpt-4o", "1", "7000", "331", "7331", "0", "0", "12", "0", "0.02081",
         "0", "0", "USD"],
        ["2025-03-01", "gpt-4o-mini", "2", "100", "50", "150", "0", "20", "0", "0", "0.000045",
         "0", "0", "USD"],
        # Usage from before costs were recorded: the cost is unknown (empty), not zero.
        ["2025-03-02", "gpt-4o-mini", "3", "200", "100", "300", "40", "0", "0", "0", "", "",
         "3", "USD"],
        ["2025-03-05", "gpt-4o-mini", "1", "4000", "242", "4242", "0", "0", "0", "0",
         "0.000745", "0", "0", "USD"],
    ]


@pytest.mark.django_db
def test_csv_export_respects_filters_and_grouping(admin_client, recorded):
    response = admin_client.get("/admin/usage/", {
        **RANGE, "format": "csv", "team": recorded["Support"].pk, "group_by": "api_key"})

    assert [row[:7] for row in csv_rows(response)] == [
        ["day", "api_key", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
         "estimated_tokens"],
        ["2025-03-01", "Key A", "2", "100", "50", "150", "0"],
        ["2025-03-02", "Key B", "3", "200", "100", "300", "40"],
    ]


@pytest.mark.django_db
def test_page_links_to_the_csv_of_what_it_shows(admin_client, recorded):
    document = html(admin_client.get("/admin/usage/", {**RANGE, "model": "gpt-4o"}))
    link = document.find("a", class_="usage-csv").attrs["href"]

    rows = csv_rows(admin_client.get(f"/admin/usage/{link}"))

    assert [row[:7] for row in rows[1:]] == [["2025-03-01", "gpt-4o", "1", "7000", "331", "7331",
                                              "0"]]


@pytest.mark.django_db
def test_csv_cells_cannot_run_as_spreadsheet_formulas(admin_client, user):
    UsageDaily.objects.bulk_create([usage_row(D1, user, model="=HYPERLINK(\"x\")", prompt=1)])

    rows = csv_rows(admin_client.get("/admin/usage/", {**RANGE, "format": "csv"}))

    assert rows[1][1] == "'=HYPERLINK(\"x\")"


# -- what a member sees ----------------------------------------------------------------------


@pytest.mark.django_db
def test_member_sees_only_their_own_usage(alice, recorded):
    response = alice.get("/usage/", RANGE)
    document = html(response)

    assert total(document) == "450"
    assert table(document) == [("gpt-4o-mini", "450")]
    assert [bar.attrs["data-tokens"] for bar in document.find_all(
        "rect", class_="usage-chart__bar")] == ["150", "300", "0", "0", "0"]
    assert document.find_all("select", name="user") == []
    assert [o.text for o in document.find("select", name="team").find_all("option")] == [
        "All teams", "Support"]
    body = response.content.decode()
    for figure in MALLORY_FIGURES:
        assert figure not in body
    csv_body = alice.get("/usage/", {**RANGE, "format": "csv"}).content.decode()
    assert [row[:7] for row in csv_rows(alice.get("/usage/", {**RANGE, "format": "csv"}))[1:]] == [
        ["2025-03-01", "gpt-4o-mini", "2", "100", "50", "150", "0"],
        ["2025-03-02", "gpt-4o-mini", "3", "200", "100", "300", "40"],
    ]
    assert "7331" not in csv_body


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {"user": "{mallory}"},
    {"user": "{mallory}", "format": "csv"},
    {"user": "{mallory}", "group_by": "user"},
    {"team": "{Research}"},
])
def test_member_cannot_ask_for_someone_elses_usage(alice, recorded, params):
    params = {name: value.format(mallory=recorded["mallory"].pk, Research=recorded["Research"].pk)
              for name, value in params.items()}

    body = alice.get("/usage/", {**RANGE, **params}).content.decode()

    for figure in MALLORY_FIGURES:
        assert figure not in body


@pytest.mark.django_db
def test_member_page_shows_the_monthly_budget_and_tokens_used(alice, user, settings):
    settings.CHATSITE_DEFAULT_MONTHLY_TOKENS = None
    UsageDaily.objects.bulk_create([usage_row(timezone.localdate(), user, prompt=200, completion=50)])

    assert "You have used 250 tokens this month (cost: $0.00). You have no monthly budget." in html(
        alice.get("/usage/")).find("section", class_="usage-budget").text

    UserLimit.objects.create(user=user, monthly_token_budget=1000)
    section = html(alice.get("/usage/")).find("section", class_="usage-budget")
    assert "You have used 250 of your monthly budget of 1,000 tokens: 750 left." in section.text
    assert section.find("meter").attrs["value"] == "250"
    assert section.find("meter").attrs["max"] == "1000"


@pytest.mark.django_db
def test_member_page_shows_the_team_budget_that_binds_and_what_is_left(alice, user, settings):
    settings.CHATSITE_DEFAULT_MONTHLY_TOKENS = None
    team = Group.objects.create(name="Support")
    user.groups.add(team)
    Team.objects.create(group=team, monthly_token_budget=1000)
    UserLimit.objects.create(user=user, monthly_token_budget=50_000)
    UsageDaily.objects.bulk_create([usage_row(timezone.localdate(), user, prompt=900, completion=100,
                                              team=team)])

    section = html(alice.get("/usage/")).find("section", class_="usage-budget")

    assert "Your team Support has used 1,000 of its monthly budget of 1,000 tokens: 0 left." in (
        section.text)
    assert "new messages are refused" in section.text


@pytest.mark.django_db(transaction=True)
def test_a_reply_through_the_upstream_shows_on_the_member_page(alice, api_key, fake_upstream):
    response = alice.post("/c/new/messages", {"content": "hi", "model": f"{api_key.pk}:gpt-4o-mini"})
    assert response.status_code == 302
    reply = Message.objects.get(role="assistant")
    wait_for(lambda: Message.objects.get(pk=reply.pk).status == Message.Status.COMPLETE)

    document = html(alice.get("/usage/"))

    assert total(document) == "11"
    assert document.find(id="total-prompt").text == "7"
    assert document.find(id="total-completion").text == "4"
    assert document.find(id="total-requests").text == "1"
    assert table(document) == [("gpt-4o-mini", "11")]
    today = timezone.localdate().isoformat()
    assert f"{today}: 11 tokens" in [title.text for title in document.find_all("title")]
    by_key = html(alice.get("/usage/", {"group_by": "project"}))
    assert table(by_key) == [("proj_chat", "11")]


# -- access and links ------------------------------------------------------------------------


@pytest.mark.django_db
def test_non_staff_are_sent_to_the_admin_login(alice, client):
    response = alice.get("/admin/usage/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/usage/"
    assert alice.get("/admin/usage/?format=csv").status_code == 302


@pytest.mark.django_db
def test_anonymous_visitor_is_sent_to_login(client, user):
    response = client.get("/usage/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/usage/"


@pytest.mark.django_db
def test_chat_sidebar_and_admin_index_link_to_the_usage_pages(alice, admin_client):
    member_links = [a.attrs["href"] for a in html(alice.get("/")).find(
        "div", class_="account").find_all("a")]
    assert "/usage/" in member_links
    assert "/admin/usage/" not in member_links

    staff_links = [a.attrs["href"] for a in html(admin_client.get("/")).find(
        "div", class_="account").find_all("a")]
    assert {"/usage/", "/admin/usage/"} <= set(staff_links)
    admin_index = html(admin_client.get("/admin/"))
    assert admin_index.find(id="usage-module").find("th").find("a").attrs["href"] == "/admin/usage/"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/usage/", "/admin/usage/"])
def test_usage_pages_need_no_inline_script_or_style(admin_client, recorded, path):
    response = admin_client.get(path, RANGE)
    document = html(response)

    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert all(script.attrs.get("src") for script in document.find_all("script"))
    assert document.find_all("style") == []
    assert not [element.tag for element in _all(document) if "style" in element.attrs]


def _all(element):
    for child in element.children:
        yield child
        yield from _all(child)


# -- a year of data --------------------------------------------------------------------------


@pytest.fixture
def a_year_of_usage(user, other_user, staff):
    teams = [Group.objects.create(name=f"Team {n}") for n in range(2)]
    keys = [key(f"Year key {n}") for n in range(2)]
    today = timezone.localdate()
    UsageDaily.objects.bulk_create([
        usage_row(today - datetime.timedelta(days=day), member, team=teams[index % 2],
                  api_key=keys[day % 2], organization=f"org-{day % 3}", project=f"proj_{day % 4}",
                  model=model, prompt=day + 1, completion=index + 1)
        for day in range(365)
        for index, member in enumerate((user, other_user, staff))
        for model in ("gpt-4o", "gpt-4o-mini")
    ])
    return today


QUERY_LIMIT = 12


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {},
    {"year": True},
    {"year": True, "group_by": "user"},
    {"year": True, "group_by": "team", "model": "gpt-4o"},
    {"year": True, "group_by": "api_key", "organization": "org-1", "project": "proj_2"},
    {"year": True, "format": "csv"},
])
@pytest.mark.parametrize("path", ["/admin/usage/", "/usage/"])
def test_a_year_of_data_takes_a_bounded_number_of_queries_none_on_messages(
    admin_client, a_year_of_usage, django_assert_max_num_queries, params, path
):
    assert UsageDaily.objects.count() == 365 * 3 * 2
    if params.pop("year", False):
        params["start"] = (a_year_of_usage - datetime.timedelta(days=364)).isoformat()
    with django_assert_max_num_queries(QUERY_LIMIT) as captured:
        response = admin_client.get(path, params)
    assert response.status_code == 200
    sql = " ".join(query["sql"] for query in captured.captured_queries)
    assert "conversations_message" not in sql
    assert "conversations_usagedaily" in sql
    if "format" not in params:
        assert len(html(response).find_all("rect", class_="usage-chart__bar")) == (
            365 if "start" in params else 30)


# -- in a browser ----------------------------------------------------------------------------


@pytest.mark.browser
def test_usage_chart_in_the_browser_has_a_bar_per_day_scaled_to_the_busiest(
    browser, live_url, staff, user  # noqa: F811 (browser is the fixture imported above)
):
    values = {D1: 1200, D2: 300, D3: 2400}
    UsageDaily.objects.bulk_create([
        usage_row(day, user, prompt=value // 2, completion=value - value // 2)
        for day, value in values.items()
    ])
    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    errors = watch(page)
    log_in(page, "root")
    page.goto("/admin/usage/?start=2025-03-01&end=2025-03-07")

    chart = page.get_by_role("img", name=re.compile(r"^Total tokens per day from 2025-03-01"))
    assert chart.is_visible()
    bars = page.locator("svg.usage-chart__svg rect.usage-chart__bar")
    assert bars.count() == 7
    heights = page.eval_on_selector_all(
        "svg.usage-chart__svg rect.usage-chart__bar",
        "bars => Object.fromEntries(bars.map(bar => "
        "[bar.dataset.day, bar.getBoundingClientRect().height]))",
    )
    tallest = heights["2025-03-05"]
    assert tallest > 50 and tallest == max(heights.values())
    assert heights["2025-03-01"] == pytest.approx(tallest / 2, rel=0.02)
    assert heights["2025-03-02"] == pytest.approx(tallest / 8, rel=0.02)
    assert heights["2025-03-03"] == 0
    day = page.locator("g.usage-chart__day", has=page.locator("rect[data-day='2025-03-02']"))
    assert day.locator("title").text_content() == "2025-03-02: 300 tokens"
    assert page.locator("text.usage-chart__max").text_content() == "2,400"
    assert page.locator("#total-tokens").inner_text() == "3,900"
    context.close()
    assert not errors, errors
