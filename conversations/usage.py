"""Token usage and its cost: recorded once per finished reply, aggregated per day and dimension.

Every reply adds its tokens (with the cached, reasoning and audio parts the provider details)
and its cost to one ``UsageDaily`` row (day, user, team, key, OpenAI organization, OpenAI
project, model), so usage pages and budget checks read a few aggregate rows instead of scanning
messages. When the upstream sent no usage chunk, the figures are estimated from the text (about
four bytes of UTF-8 a token) and counted as estimated, in tokens and in cost.

A reply's cost comes from its model's prices in the catalog when it was sent; the prices used are
kept with the reply, so a later price change does not rewrite history. A model without a price
costs nothing known: its replies are counted as "without a price", never as zero.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from babel import numbers as babel_numbers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .models import ApiKey, Message, UsageDaily

BYTES_PER_TOKEN = 4
# Each chat message costs a few tokens of framing on top of its text.
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    """Return a rough token count for ``text`` (no tokenizer download is possible offline)."""
    if not text:
        return 0
    return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN))


# An image part, as OpenAI counts one at high detail within 2048 x 768 pixels (low: 85).
TOKENS_PER_IMAGE = 765


def estimate_prompt_tokens(context: list[dict]) -> int:
    return sum(TOKENS_PER_MESSAGE + _estimate_content(item["content"]) for item in context)


def _estimate_content(content: str | list) -> int:
    """Estimate a message's content: its text, or its content parts (text and images)."""
    if isinstance(content, str):
        return estimate_tokens(content)
    return sum(estimate_tokens(part.get("text", "")) if part.get("type") == "text"
               else TOKENS_PER_IMAGE for part in content)


@dataclass(frozen=True)
class Tokens:
    prompt: int
    completion: int
    total: int
    estimated: bool
    cached: int = 0  # of ``prompt``, read from the provider's prompt cache
    reasoning: int = 0  # of ``completion``, spent thinking
    audio: int = 0
    image: int = 0  # of ``prompt``, for attached images


def tokens_for(message: Message, prompt_estimate: int) -> Tokens:
    """Return the reply's usage: the upstream's figures, or an estimate where it sent none."""
    if message.total_tokens is not None:
        return Tokens(
            prompt=message.prompt_tokens or 0,
            completion=message.completion_tokens or 0,
            total=message.total_tokens,
            estimated=message.usage_estimated,  # set by ``charge`` when it estimated them
            cached=min(message.cached_tokens or 0, message.prompt_tokens or 0),
            reasoning=message.reasoning_tokens or 0,
            audio=message.audio_tokens or 0,
            image=message.image_tokens or 0,
        )
    completion = estimate_tokens(message.content)
    return Tokens(prompt_estimate, completion, prompt_estimate + completion, estimated=True)


PER_MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")


@dataclass(frozen=True)
class Prices:
    """A model's prices per million tokens, in the site's currency."""

    input: Decimal
    cached_input: Decimal  # the input price where the model has no cached-input price
    output: Decimal

    @classmethod
    def of(cls, spec) -> Prices | None:
        """The prices of a catalog entry, or None where it lacks an input or output price."""
        if spec is None or spec.input_price is None or spec.output_price is None:
            return None
        cached = spec.cached_input_price
        return cls(Decimal(spec.input_price),
                   Decimal(cached if cached is not None else spec.input_price),
                   Decimal(spec.output_price))

    def cost(self, tokens: Tokens) -> Decimal:
        """What ``tokens`` cost: cached input at its own price, reasoning as output (it is part
        of the completion tokens)."""
        cached = min(tokens.cached, tokens.prompt)
        spent = ((tokens.prompt - cached) * self.input + cached * self.cached_input
                 + tokens.completion * self.output)
        return (spent / PER_MILLION).quantize(COST_PLACES)


def charge(message: Message, prompt_estimate: int, prices: Prices | None) -> dict:
    """Return the fields that account a finished reply — its estimated tokens where the upstream
    sent none, its cost at ``prices`` (its model's when the reply was sent; None: no price) and
    those prices — and set them on ``message``, so that the reply's final write stores them with
    the rest."""
    tokens = tokens_for(message, prompt_estimate)
    fields = {}
    if tokens.estimated:
        fields.update(prompt_tokens=tokens.prompt, completion_tokens=tokens.completion,
                      total_tokens=tokens.total, usage_estimated=True)
    if prices is not None:
        fields.update(cost=prices.cost(tokens), cost_currency=settings.CHATSITE_CURRENCY,
                      price_input=prices.input, price_cached_input=prices.cached_input,
                      price_output=prices.output)
    for name, value in fields.items():
        setattr(message, name, value)
    return fields


def record(message: Message, prompt_estimate: int = 0) -> Tokens:
    """Add the reply's tokens and cost (``charge`` has set them on it) to the day's aggregate."""
    tokens = tokens_for(message, prompt_estimate)
    cost = message.cost
    key = message.api_key
    dimensions = {
        "day": timezone.localdate(message.finished_at or timezone.now()),
        "user_id": message.conversation.owner_id,
        "team_id": message.team_id,
        "api_key_id": message.api_key_id,
        "organization": key.organization if key else "",
        "project": key.project if key else "",
        "model": message.model,
    }
    added = {
        "requests": 1,
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.total,
        "estimated_tokens": tokens.total if tokens.estimated else 0,
        "cached_tokens": tokens.cached,
        "reasoning_tokens": tokens.reasoning,
        "audio_tokens": tokens.audio,
        "image_tokens": tokens.image,
        "cost": cost or 0,
        "estimated_cost": cost if cost and tokens.estimated else 0,
        "uncosted_requests": 1 if cost is None else 0,
    }
    # Only the columns that grow: each F() + n is compiled by the ORM in Python, and most
    # replies add nothing to half of them (with all thirteen, this UPDATE was 8.7 % of the
    # CPU of a message and its reply, in a profile of bench/request_cost.py).
    increments = {name: F(name) + value for name, value in added.items() if value}
    for _attempt in range(3):
        # One statement: the dimensions match one row at most, an empty team or key included
        # (the table's constraint counts them as 0, so NULLs do not make duplicates).
        if UsageDaily.objects.filter(**dimensions).update(**increments):
            return tokens
        try:
            with transaction.atomic():
                UsageDaily.objects.create(**dimensions, **added)
            return tokens
        except IntegrityError:  # another reply created the row first: add to it
            continue
    return tokens


def money(amount) -> str:
    """An amount of the site's currency as a member reads it in the page's language, by the
    CLDR's rules (Babel): "$12.50" or "$0.0042" in English, "US$12.50" in Korean and Chinese."""
    amount = Decimal(amount or 0)
    places = 2 if amount == 0 or abs(amount) >= 1 else 4
    amount = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    # currency_digits=False with no quantization: the places chosen above, whatever the
    # currency's usual digits (a fraction of a cent matters here, even in won or yen).
    return babel_numbers.format_currency(
        amount, settings.CHATSITE_CURRENCY, locale=translation.to_locale(
            translation.get_language() or settings.LANGUAGE_CODE),
        currency_digits=False, decimal_quantization=False)


def plain_amount(value) -> str:
    """An amount as a plain decimal for files: no grouping, to the millionth, no trailing
    zeros ("0.0042", "12.5", "0")."""
    return format(Decimal(value or 0).quantize(Decimal("0.000001")).normalize(), "f")


def month_start(today: datetime.date | None = None) -> datetime.date:
    today = today or timezone.localdate()
    return today.replace(day=1)


def next_month_start(today: datetime.date | None = None) -> datetime.date:
    start = month_start(today)
    return (start + datetime.timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Spent:
    """What one member or team used this month: tokens, and cost where known."""

    tokens: int = 0
    cost: Decimal = Decimal(0)
    requests: int = 0
    uncosted_requests: int = 0

    @property
    def cost_shown(self) -> str:
        return cost_shown({"requests": self.requests, "uncosted_requests": self.uncosted_requests,
                           "cost": self.cost})


def spent_this_month(**dimension) -> Spent:
    """Return the tokens and cost used since the first of this month for one dimension (user=,
    team=), in one query."""
    used = UsageDaily.objects.filter(day__gte=month_start(), **dimension).aggregate(
        tokens=Sum("total_tokens"), cost=Sum("cost"), requests=Sum("requests"),
        uncosted=Sum("uncosted_requests"),
    )
    return Spent(used["tokens"] or 0, used["cost"] or Decimal(0), used["requests"] or 0,
                 used["uncosted"] or 0)


def tokens_this_month(**dimension) -> int:
    """Return the tokens used since the first of this month for one dimension (user=, team=)."""
    return spent_this_month(**dimension).tokens


def spent_this_month_by_team(team_ids: list[int]) -> dict[int, Spent]:
    """Return the tokens and cost used since the first of this month per team, in one query."""
    rows = (UsageDaily.objects.filter(day__gte=month_start(), team_id__in=team_ids)
            .values("team_id").annotate(tokens=Sum("total_tokens"), cost=Sum("cost")))
    return {row["team_id"]: Spent(row["tokens"] or 0, row["cost"] or Decimal(0))
            for row in rows}


FILTERS = ("user", "team", "api_key", "organization", "project", "model")


def filtered(
    *, start: datetime.date | None = None, end: datetime.date | None = None, **filters
) -> QuerySet[UsageDaily]:
    """Return the aggregate rows between ``start`` and ``end`` matching ``filters``."""
    rows = UsageDaily.objects.all()
    if start:
        rows = rows.filter(day__gte=start)
    if end:
        rows = rows.filter(day__lte=end)
    condition = Q()
    for name, value in filters.items():
        if name not in FILTERS:
            raise ValueError(f"unknown usage filter {name!r}")
        if value not in (None, ""):
            condition &= Q(**{name: value})
    return rows.filter(condition)


TOTALS = {
    "requests": Sum("requests"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "total_tokens": Sum("total_tokens"),
    "estimated_tokens": Sum("estimated_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "reasoning_tokens": Sum("reasoning_tokens"),
    "image_tokens": Sum("image_tokens"),
    "cost": Sum("cost"),
    "estimated_cost": Sum("estimated_cost"),
    "uncosted_requests": Sum("uncosted_requests"),
}


def by_day(rows: QuerySet[UsageDaily]) -> list[dict]:
    return list(rows.values("day").annotate(**TOTALS).order_by("day"))


GROUPINGS = {
    "user": ("user__username",),
    "team": ("team__name",),
    "api_key": ("api_key__name",),
    "organization": ("organization",),
    "project": ("project",),
    "model": ("model",),
}


def by_dimension(rows: QuerySet[UsageDaily], dimension: str) -> list[dict]:
    fields = GROUPINGS[dimension]
    return list(rows.values(*fields).annotate(**TOTALS).order_by("-total_tokens", *fields))


# -- what the usage pages read -----------------------------------------------------------------


def totals(days: list[dict]) -> dict[str, int]:
    """Return the sums over ``by_day`` rows, so the page's totals cost no query of their own."""
    return with_cost_shown({name: sum(day[name] or 0 for day in days) for name in TOTALS})


def cost_shown(row: dict) -> str:
    """A row's cost as a page shows it: unknown where no request had a price (usage kept from
    before costs were recorded, or models without a price), and how many were left out where
    some had none."""
    requests, uncosted = row.get("requests") or 0, row.get("uncosted_requests") or 0
    if requests and uncosted >= requests:
        return _("unknown")
    shown = money(row.get("cost") or 0)
    if row.get("estimated_cost"):
        shown = _("%(cost)s (of which estimated: %(estimated)s)") % {
            "cost": shown, "estimated": money(row["estimated_cost"])}
    if uncosted:
        return ngettext("%(cost)s (%(count)s request without a price)",
                        "%(cost)s (%(count)s requests without a price)", uncosted) % {
            "cost": shown, "count": uncosted}
    return shown


def with_cost_shown(row: dict) -> dict:
    row["cost_shown"] = cost_shown(row)
    return row


def by_day_filled(
    rows: QuerySet[UsageDaily], *, start: datetime.date, end: datetime.date
) -> list[dict]:
    """Return ``by_day(rows)`` with a zero row for each day from ``start`` to ``end`` without
    usage."""
    found = {row["day"]: row for row in by_day(rows)}
    zero = dict.fromkeys(TOTALS, 0)
    return [
        with_cost_shown(found.get(day, {"day": day, **zero}))
        for day in (start + datetime.timedelta(days=n) for n in range((end - start).days + 1))
    ]


def by_dimension_labelled(rows: QuerySet[UsageDaily], dimension: str) -> list[dict]:
    """Return ``by_dimension`` rows, each with its value under ``"label"`` (None when unset)."""
    return [with_cost_shown({**row, "label": _label(row, dimension)})
            for row in by_dimension(rows, dimension)]


def by_day_and_dimension(rows: QuerySet[UsageDaily], dimension: str) -> list[dict]:
    """Return one labelled row per day and value of ``dimension``, oldest day first."""
    fields = GROUPINGS[dimension]
    return [
        {**row, "label": _label(row, dimension)}
        for row in rows.values("day", *fields).annotate(**TOTALS).order_by("day", *fields)
    ]


def _label(row: dict, dimension: str) -> str | None:
    values = [str(row[field]) for field in GROUPINGS[dimension] if row[field] not in (None, "")]
    return " / ".join(values) or None


def filter_choices(
    *, start: datetime.date, end: datetime.date, chosen: dict, dimensions: tuple[str, ...] = FILTERS,
    **scope,
) -> dict[str, list[tuple[str, str]]]:
    """Return the ``(value, label)`` choices of each filter in ``dimensions``: the values with
    usage between ``start`` and ``end`` within ``scope`` (e.g. ``user=``), plus the ``chosen``
    ones, so that a select keeps showing what is filtered on. A chosen user, team or key is
    offered only if it ever had usage within ``scope``: a member never learns another team's or
    key's name by guessing its id.

    Users, teams and keys are found through their ``(…, day)`` indexes, one probe per row of those
    small tables; organizations, projects and models come from the aggregate rows of the range.
    Nothing scans the whole table.
    """
    in_scope = filtered(**scope)
    in_range = filtered(start=start, end=end, **scope)
    choices: dict[str, list[tuple[str, str]]] = {}
    for dimension, related, label in (
        ("user", get_user_model(), "username"), ("team", Group, "name"),
        ("api_key", ApiKey, "name"),
    ):
        if dimension not in dimensions:
            continue
        seen = Q(Exists(in_range.filter(**{dimension: OuterRef("pk")})))
        if chosen.get(dimension):
            ever = Exists(in_scope.filter(**{dimension: OuterRef("pk")}))
            seen |= Q(pk=chosen[dimension]) & Q(ever)
        choices[dimension] = [
            (str(pk), name)
            for pk, name in related.objects.filter(seen).order_by(label).values_list("pk", label)
        ]
    strings = [name for name in ("organization", "project", "model") if name in dimensions]
    if strings:
        combinations = set(in_range.values_list(*strings).distinct().order_by())
        for index, name in enumerate(strings):
            values = {combination[index] for combination in combinations} - {""}
            if chosen.get(name):
                values.add(chosen[name])
            choices[name] = [(value, value) for value in sorted(values)]
    return choices
