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

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import formats
from django.utils.translation import gettext as _

from . import usage
from .models import Team, UserLimit


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


def requests_per_minute(user, limit=_NO_LIMIT) -> int | None:
    if limit is _NO_LIMIT:
        limit = _user_limit(user)
    if limit is not None and limit.requests_per_minute is not None:
        return limit.requests_per_minute
    return settings.CHATSITE_DEFAULT_REQUESTS_PER_MINUTE


def check_budgets(*, user, team, limit=_NO_LIMIT) -> None:
    """Raise ``LimitReached`` if the user or their team has used its monthly budget."""
    resets = formats.date_format(usage.next_month_start(), "DATE_FORMAT")
    budget = monthly_budget(user, limit)
    if budget is not None and usage.tokens_this_month(user=user) >= budget:
        raise LimitReached(
            _("You have used your monthly budget of %(budget)s tokens. It resets on "
              "%(date)s; an administrator can raise it sooner.")
            % {"budget": formats.number_format(budget, force_grouping=True), "date": resets},
            code="user_budget",
        )
    if team is None:
        return
    team_budget = Team.objects.filter(group=team).values_list(
        "monthly_token_budget", flat=True
    ).first()
    if team_budget is not None and usage.tokens_this_month(team=team) >= team_budget:
        raise LimitReached(
            _("Your team %(team)s has used its monthly budget of %(budget)s tokens. It resets "
              "on %(date)s; an administrator can raise it sooner.")
            % {"team": team.name, "budget": formats.number_format(team_budget, force_grouping=True),
               "date": resets},
            code="team_budget",
        )


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
    """One monthly budget that applies to a member: their own, or one of their teams'."""

    team: object | None  # the team (a Group), or None for the member's own budget
    limit: int
    used: int

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


def budgets(*, user, used: int | None = None) -> list[Budget]:
    """Return the monthly budgets that apply to ``user``: their own and their teams' (``used``:
    the member's tokens this month, if the caller has them). A fixed number of queries."""
    found = []
    own = monthly_budget(user)
    if own is not None:
        found.append(Budget(None, own, usage.tokens_this_month(user=user) if used is None
                            else used))
    teams = list(Team.objects.filter(group__user=user, monthly_token_budget__isnull=False)
                 .select_related("group").order_by("group__name"))
    if teams:
        spent = usage.tokens_this_month_by_team([team.group_id for team in teams])
        found += [Budget(team.group, team.monthly_token_budget, spent.get(team.group_id, 0))
                  for team in teams]
    return found


def binding_budget(*, user, used: int | None = None) -> Budget | None:
    """Return the budget that stops ``user`` first (the least left), if any applies."""
    return min(budgets(user=user, used=used), key=lambda budget: budget.left, default=None)
