"""Our own limits on members: monthly token budgets (per user, per team) and messages per minute.

Checked when a message is sent (and retried or edited), before any upstream call. Budgets read
the daily aggregates, so a member at or over a budget cannot start another reply; replies already
in flight finish, which is the most a budget can be overshot by.

The per-minute limit is a sliding window kept in Django's cache (Redis in production, local
memory in the embedded default): a member allowed N messages a minute has N slots, and a message
takes a free slot with ``cache.add`` (atomic on every backend), which frees itself sixty seconds
later. So no 60-second span ever holds more than N messages -- not even across a minute
boundary, where a fixed per-minute counter would let 2N through -- and parallel requests cannot
slip past it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import formats
from django.utils.translation import gettext as _

from . import usage
from .models import BudgetAlert, Team, UserLimit


class LimitReached(ValidationError):
    """One of our limits refuses the message; the text says which and when it resets."""


_NO_LIMIT = object()
WINDOW_SECONDS = 60


def _user_limit(user) -> UserLimit | None:
    return UserLimit.objects.filter(user=user).first()


def monthly_budget(user, limit=_NO_LIMIT) -> int | None:
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    if limit is not None and limit.monthly_token_budget is not None:
        return limit.monthly_token_budget
    return settings.CHATSITE_DEFAULT_MONTHLY_TOKENS


def monthly_cost_budget(user, limit=_NO_LIMIT) -> Decimal | None:
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    if limit is not None and limit.monthly_cost_budget is not None:
        return limit.monthly_cost_budget
    return settings.CHATSITE_DEFAULT_MONTHLY_COST


def requests_per_minute(user, limit=_NO_LIMIT) -> int | None:
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    if limit is not None and limit.requests_per_minute is not None:
        return limit.requests_per_minute
    return settings.CHATSITE_DEFAULT_REQUESTS_PER_MINUTE


def check_budgets(*, user, team, limit=_NO_LIMIT) -> None:
    """Raise ``LimitReached`` if the user or their team has used a monthly budget, in tokens or
    in money."""
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    for budget in budgets(user=user, team=team, limit=limit):
        if not budget.left:
            raise LimitReached(budget.used_up_message(), code=budget.code)


def _now() -> float:
    return time.time()


def _slot_keys(user, allowed: int) -> list[str]:
    return [f"chatsite:rpm:{user.pk}:{slot}" for slot in range(allowed)]


def take_request(*, user, limit=_NO_LIMIT) -> None:
    """Count one message against the user's per-minute limit; raise ``LimitReached`` past it."""
    allowed = requests_per_minute(user, limit)
    if allowed is None:
        return
    keys = _slot_keys(user, allowed)
    taken = cache.get_many(keys)
    now = _now()
    for key in keys:
        if key not in taken and cache.add(key, now, timeout=WINDOW_SECONDS):
            return
    # Every slot is taken (or was taken by a parallel request in the meantime): the next one
    # frees itself a minute after the oldest message in the window.
    taken = cache.get_many(keys)
    oldest = min(taken.values(), default=now)
    wait = max(1, math.ceil(oldest + WINDOW_SECONDS - _now()))
    raise LimitReached(
        _("You can send at most %(allowed)s messages a minute. Try again in %(wait)s "
          "seconds.") % {"allowed": allowed, "wait": wait},
        code="rate",
    )


def check(*, user, team) -> None:
    """Apply every limit to one new message from ``user``."""
    limit = _user_limit(user)
    check_budgets(user=user, team=team, limit=limit)
    take_request(user=user, limit=limit)


@dataclass(frozen=True)
class Budget:
    """One monthly budget that applies to a member: their own, or one of their teams', in
    tokens or in the site's currency."""

    team: object | None  # the team (a Group), or None for the member's own budget
    limit: int | Decimal
    used: int | Decimal
    kind: str = BudgetAlert.Kind.TOKENS

    @property
    def left(self) -> int | Decimal:
        return max(0, self.limit - self.used)

    @property
    def percent_used(self) -> int:
        if not self.limit:
            return 100
        return min(100, int(self.used * 100 / self.limit))

    @property
    def in_money(self) -> bool:
        return self.kind == BudgetAlert.Kind.COST

    @property
    def code(self) -> str:
        return f"{'team' if self.team else 'user'}_{'cost_' if self.in_money else ''}budget"

    def amount(self, value) -> str:
        """``value`` as this budget counts: "12.50 USD" or "12,000 tokens"."""
        if self.in_money:
            return usage.money(value)
        return _("%(tokens)s tokens") % {
            "tokens": formats.number_format(value, force_grouping=True)}

    @property
    def shown(self) -> dict[str, str]:
        """Limit, use and what is left as a page shows them: amounts of money each with their
        currency; token counts bare, but for the limit ("250 of 1,000 tokens: 750 left")."""
        if self.in_money:
            return {"limit": self.amount(self.limit), "used": self.amount(self.used),
                    "left": self.amount(self.left)}
        return {"limit": self.amount(self.limit),
                "used": formats.number_format(self.used, force_grouping=True),
                "left": formats.number_format(self.left, force_grouping=True)}

    def used_up_message(self) -> str:
        resets = formats.date_format(usage.next_month_start(), "DATE_FORMAT")
        if self.team is None:
            return _("You have used your monthly budget of %(budget)s. It resets on %(date)s; "
                     "an administrator can raise it sooner.") % {
                "budget": self.amount(self.limit), "date": resets}
        return _("Your team %(team)s has used its monthly budget of %(budget)s. It resets on "
                 "%(date)s; an administrator can raise it sooner.") % {
            "team": self.team.name, "budget": self.amount(self.limit), "date": resets}


def budgets(*, user, team=_NO_LIMIT, limit=_NO_LIMIT, spent: usage.Spent | None = None
            ) -> list[Budget]:
    """Return the monthly budgets that apply to ``user``, in tokens and in money: their own and
    their teams' (only ``team``'s when one is given: the team the message is charged to).
    ``spent``: the member's use this month, if the caller has it. A fixed number of queries."""
    found = []
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    own_tokens, own_cost = monthly_budget(user, limit), monthly_cost_budget(user, limit)
    if own_tokens is not None or own_cost is not None:
        mine = spent if spent is not None else usage.spent_this_month(user=user)
        if own_tokens is not None:
            found.append(Budget(None, own_tokens, mine.tokens))
        if own_cost is not None:
            found.append(Budget(None, own_cost, mine.cost, BudgetAlert.Kind.COST))
    if team is None:
        return found
    teams = Team.objects.filter(
        Q(monthly_token_budget__isnull=False) | Q(monthly_cost_budget__isnull=False)
    ).select_related("group").order_by("group__name")
    teams = list(teams.filter(group=team) if team is not _NO_LIMIT
                 else teams.filter(group__user=user))
    if teams:
        team_spent = usage.spent_this_month_by_team([entry.group_id for entry in teams])
        for entry in teams:
            used = team_spent.get(entry.group_id, usage.Spent())
            if entry.monthly_token_budget is not None:
                found.append(Budget(entry.group, entry.monthly_token_budget, used.tokens))
            if entry.monthly_cost_budget is not None:
                found.append(Budget(entry.group, entry.monthly_cost_budget, used.cost,
                                    BudgetAlert.Kind.COST))
    return found


def binding_budget(*, user, spent: usage.Spent | None = None) -> Budget | None:
    """Return the budget that stops ``user`` first (the largest share used), if any applies."""
    return max(budgets(user=user, spent=spent), key=lambda budget: budget.percent_used,
               default=None)
