"""Our own limits on members: monthly token budgets (per user, per team) and messages per minute.

Checked when a message is sent (and retried or edited), before any upstream call. Budgets read
the daily aggregates, so a member at or over a budget cannot start another reply; replies already
in flight finish, which is the most a budget can be overshot by. The per-minute count lives in
Django's cache (Redis in production, local memory in the embedded default), incremented
atomically, so parallel requests cannot slip past it.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import formats
from django.utils.translation import gettext as _

from . import usage
from .models import Team, UserLimit


class LimitReached(ValidationError):
    """One of our limits refuses the message; the text says which and when it resets."""


def _user_limit(user) -> UserLimit | None:
    return UserLimit.objects.filter(user=user).first()


def monthly_budget(user) -> int | None:
    limit = _user_limit(user)
    if limit is not None and limit.monthly_token_budget is not None:
        return limit.monthly_token_budget
    return settings.CHATSITE_DEFAULT_MONTHLY_TOKENS


def requests_per_minute(user) -> int | None:
    limit = _user_limit(user)
    if limit is not None and limit.requests_per_minute is not None:
        return limit.requests_per_minute
    return settings.CHATSITE_DEFAULT_REQUESTS_PER_MINUTE


def check_budgets(*, user, team) -> None:
    """Raise ``LimitReached`` if the user or their team has used its monthly budget."""
    resets = formats.date_format(usage.next_month_start(), "DATE_FORMAT")
    budget = monthly_budget(user)
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


def take_request(*, user) -> None:
    """Count one message against the user's per-minute limit; raise ``LimitReached`` past it."""
    allowed = requests_per_minute(user)
    if allowed is None:
        return
    now = time.time()
    window = int(now // 60)
    key = f"chatsite:rpm:{user.pk}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=120)
        count = 1
    if count > allowed:
        wait = max(1, math.ceil((window + 1) * 60 - now))
        raise LimitReached(
            _("You can send at most %(allowed)s messages a minute. Try again in %(wait)s "
              "seconds.") % {"allowed": allowed, "wait": wait},
            code="rate",
        )


def check(*, user, team) -> None:
    """Apply every limit to one new message from ``user``."""
    check_budgets(user=user, team=team)
    take_request(user=user)
