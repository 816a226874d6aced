"""The usage pages: every member's usage for staff, and a member's own, with a CSV export.

Both pages read the daily aggregates through ``usage.py`` with a fixed number of queries whatever
the amount of data, and never read messages. The member page is the same page scoped to
``user=request.user``: it has no user filter, and any ``user`` parameter is ignored.
"""

from __future__ import annotations

import csv
import datetime
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from . import charts, limits, text, usage
from .forms import MAX_ID, NOT_A_CHOICE

DEFAULT_DAYS = 30
MAX_DAYS = 366

GROUP_BY_LABELS = {
    "user": _("User"),
    "team": _("Team"),
    "api_key": _("API key"),
    "organization": _("OpenAI organization"),
    "project": _("OpenAI project"),
    "model": _("Model"),
}


def id_filter(label) -> forms.IntegerField:
    """Return a filter on the id of a user, team or key; a number no id can have is no choice."""
    return forms.IntegerField(label=label, required=False, min_value=1, max_value=MAX_ID,
                              widget=forms.Select, error_messages={"max_value": NOT_A_CHOICE})


class UsageFilterForm(forms.Form):
    """The GET filters of a usage page; a value that does not parse is reported and ignored."""

    start = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    user = id_filter(_("User"))
    team = id_filter(_("Team"))
    api_key = id_filter(_("API key"))
    organization = forms.CharField(
        label=_("OpenAI organization"), required=False, max_length=100, widget=forms.Select
    )
    project = forms.CharField(
        label=_("OpenAI project"), required=False, max_length=100, widget=forms.Select
    )
    model = forms.CharField(label=_("Model"), required=False, max_length=200, widget=forms.Select)
    group_by = forms.ChoiceField(label=_("Group by"), required=False)

    def __init__(self, *args, member: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if member:
            del self.fields["user"]
        self.fields["group_by"].choices = [
            (name, label) for name, label in GROUP_BY_LABELS.items() if name in self.fields
        ]

    @property
    def filter_names(self) -> tuple[str, ...]:
        return tuple(name for name in usage.FILTERS if name in self.fields)

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and start > end:
            self.add_error("end", _("The end date is before the start date."))
        elif start and (end or timezone.localdate()) - start >= datetime.timedelta(days=MAX_DAYS):
            self.add_error("start", _("Choose at most %(days)s days.") % {"days": MAX_DAYS})
        return cleaned

    def query(self) -> UsageQuery:
        """Return what to show: the valid filters, and defaults for the rest."""
        self.is_valid()
        data = self.cleaned_data
        if "start" in self.errors or "end" in self.errors:
            data = {key: value for key, value in data.items() if key not in ("start", "end")}
        end = data.get("end") or timezone.localdate()
        # The default range ends on ``end``; in the first days of year 1 it starts on day one.
        span = datetime.timedelta(days=DEFAULT_DAYS - 1)
        start = data.get("start") or max(end, datetime.date.min + span) - span
        # Show the dates in use, defaults included, in the date fields.
        self.data = self.data.copy()
        self.data["start"], self.data["end"] = start.isoformat(), end.isoformat()
        group_by = data.get("group_by") or "model"
        filters = {
            name: data[name] for name in self.filter_names if data.get(name) not in (None, "")
        }
        return UsageQuery(start=start, end=end, group_by=group_by, filters=filters)

    def set_choices(self, choices: dict[str, list[tuple[str, str]]]) -> None:
        everything = {
            "user": _("All users"), "team": _("All teams"), "api_key": _("All keys"),
            "organization": _("All organizations"), "project": _("All projects"),
            "model": _("All models"),
        }
        for name in self.filter_names:
            self.fields[name].widget.choices = [("", everything[name]), *choices.get(name, [])]


@dataclass
class UsageQuery:
    start: datetime.date
    end: datetime.date
    group_by: str
    filters: dict = field(default_factory=dict)

    def as_params(self, **extra: str) -> str:
        params = {"start": self.start.isoformat(), "end": self.end.isoformat(),
                  "group_by": self.group_by, **self.filters, **extra}
        return urlencode(params)


@require_GET
@staff_member_required
@permission_required("conversations.view_usagedaily", raise_exception=True)
def usage_admin(request: HttpRequest) -> HttpResponse:
    return _usage_page(request, member=False)


@require_GET
@login_required
def usage_mine(request: HttpRequest) -> HttpResponse:
    return _usage_page(request, member=True)


def _usage_page(request: HttpRequest, *, member: bool) -> HttpResponse:
    form = UsageFilterForm(request.GET, member=member)
    query = form.query()
    scope = {"user": request.user} if member else {}
    rows = usage.filtered(start=query.start, end=query.end, **query.filters, **scope)
    if request.GET.get("format") == "csv":
        return _csv_response(query, rows)
    form.set_choices(usage.filter_choices(
        start=query.start, end=query.end, chosen=query.filters, dimensions=form.filter_names,
        **scope,
    ))
    days = usage.by_day_filled(rows, start=query.start, end=query.end)
    context = {
        "member": member,
        "form": form,
        "query": query,
        "group_label": GROUP_BY_LABELS[query.group_by],
        "totals": usage.totals(days),
        "chart": charts.bar_chart([(day["day"], day["total_tokens"]) for day in days]),
        "days": days,
        "groups": usage.by_dimension_labelled(rows, query.group_by),
        "csv_query": query.as_params(format="csv"),
    }
    if member:
        spent = usage.spent_this_month(user=request.user)
        context["month_used"] = spent.tokens
        context["month_cost"] = spent.cost_shown
        context["budget"] = limits.binding_budget(user=request.user, spent=spent)
        context["alert_percent"] = settings.CHATSITE_BUDGET_ALERT_PERCENT
        context["month_resets"] = usage.next_month_start()
    return render(request, "conversations/usage.html", context)


CSV_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_tokens",
               "cached_tokens", "reasoning_tokens", "image_tokens", "cost", "estimated_cost",
               "requests_without_price")
# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_response(query: UsageQuery, rows) -> HttpResponse:
    """Return the filtered usage as CSV, one line per day and value of the grouping."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"chatsite-usage-{query.start.isoformat()}-{query.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    # Column names stay fixed identifiers, whatever the language: scripts read them.
    # Costs are in the site's currency (a column says which), as plain decimals; a row whose
    # every request had no price has an empty cost: unknown, not zero.
    writer.writerow(["day", query.group_by, *CSV_COLUMNS, "currency"])
    for row in usage.by_day_and_dimension(rows, query.group_by):
        row["requests_without_price"] = row["uncosted_requests"]
        unknown = row["requests"] and row["uncosted_requests"] == row["requests"]
        for name in ("cost", "estimated_cost"):
            row[name] = "" if unknown else usage.plain_amount(row[name])
        writer.writerow([row["day"].isoformat(), _cell(row["label"]),
                         *(0 if row[name] is None else row[name] for name in CSV_COLUMNS),
                         settings.CHATSITE_CURRENCY])
    return response


def _cell(value: str | None) -> str:
    """Return a member-controlled value as a CSV cell: never run as a formula, and isolated if it
    holds a direction control, which would otherwise reorder the rest of the line in a text view."""
    value = value or ""
    # Looked for past leading direction controls too, in case a reader drops those.
    if value.lstrip(text.BIDI_CONTROLS).startswith(FORMULA_STARTS):
        value = f"'{value}"
    return text.isolate_if_needed(value)
