"""Budget alerts: a budget that crosses ``CHATSITE_BUDGET_ALERT_PERCENT`` (80 % by default) of
its monthly limit is recorded once per month and kind (tokens, cost). The member then reads a
notice on their pages, the admin index lists it, an email goes to whoever looks after that budget,
and the audit log has it.

Checked after each reply is accounted, outside its transaction: an alert that cannot be sent
never costs a reply. The unique constraints on ``BudgetAlert`` make "once" hold across processes.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import translation
from django.utils.translation import gettext as _

from . import audit, limits, usage
from .models import BudgetAlert, Message

logger = logging.getLogger(__name__)


def on_reply_accounted(sender, message: Message, **kwargs) -> None:
    """Receiver of the reply engine's ``reply_accounted`` signal."""
    after_reply(message)


def after_reply(message: Message) -> None:
    """Fire the alerts the accounted reply ``message`` brought its member's budgets to."""
    try:
        owner_id = message.conversation.owner_id
        for budget in limits.budgets(user=owner_id, team=message.team_id):
            if budget.percent_used >= settings.CHATSITE_BUDGET_ALERT_PERCENT:
                _fire(budget, get_user_model().objects.get(pk=owner_id))
    except Exception:  # an alert is never worth a reply: log it and go on
        logger.exception("Budget alerts after reply %s failed", message.pk)


def _fire(budget: limits.Budget, owner) -> None:
    month = usage.month_start()
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                month=month, kind=budget.kind, user=None if budget.team else owner,
                team=budget.team, percent=budget.percent_used, limit=budget.limit,
                used=budget.used,
            )
    except IntegrityError:  # fired already this month
        return
    whose = f"team {budget.team.name!r}" if budget.team else f"user {owner.get_username()!r}"
    audit.record("budget alert", whose,
                 f"{alert.percent}% of the monthly {budget.kind} budget used: "
                 f"{usage.plain_amount(budget.used)} of {usage.plain_amount(budget.limit)}"
                 + (f" {settings.CHATSITE_CURRENCY}" if budget.in_money else " tokens"))
    by_language: dict[str, list[str]] = {}
    for email, language in _recipients(budget):
        by_language.setdefault(language or settings.LANGUAGE_CODE, []).append(email)
    for language, recipients in sorted(by_language.items()):
        with translation.override(language):  # each reads it in the language they chose
            subject, body = _mail(budget, owner, alert)
        try:
            send_mail(subject, body, None, recipients)
        except Exception:
            logger.exception("Could not send the budget alert %s", alert.pk)


def _mail(budget: limits.Budget, owner, alert: BudgetAlert) -> tuple[str, str]:
    """The alert's mail, subject and body, in the active language."""
    shown = budget.shown
    if budget.team:
        subject = _("Budget alert: team %(team)s has used %(percent)s%% of its monthly "
                    "budget") % {"team": budget.team.name, "percent": alert.percent}
    else:
        subject = _("Budget alert: %(user)s has used %(percent)s%% of their monthly "
                    "budget") % {"user": owner.get_username(), "percent": alert.percent}
    body = _("%(used)s of %(limit)s used this month; %(left)s left. New messages are "
             "refused once it is used up, until it resets on the first of next month or "
             "an administrator raises it.") % shown
    return subject, body


def _recipients(budget: limits.Budget) -> list[tuple[str, str]]:
    """Who looks after a budget, as (email, chosen language) pairs: a team's staff members (its
    admins), or the superusers for a member's own budget and for a team without staff
    members."""
    people = get_user_model().objects.filter(is_active=True).exclude(email="")
    fields = ("email", "chat_preference__language")
    if budget.team is not None:
        admins = list(people.filter(is_staff=True, groups=budget.team).values_list(*fields))
        if admins:
            return sorted(set(admins), key=lambda pair: pair[0])
    return sorted(set(people.filter(is_superuser=True).values_list(*fields)),
                  key=lambda pair: pair[0])


def notices_for(user) -> list[BudgetAlert]:
    """This month's alerts about ``user``'s own budgets and their teams'. Every page asks: in
    the usual month, with no alert at all, one small query answers (a quarter of the CPU of
    the query that finds a member's alerts through their teams)."""
    this_month = BudgetAlert.objects.filter(month=usage.month_start())
    if not this_month.exists():
        return []
    return list(
        this_month.filter(Q(user=user) | Q(team__user=user))
        .select_related("team").order_by("team__name", "kind").distinct()
    )


def recent() -> list[BudgetAlert]:
    """This month's alerts, for the admin index."""
    return list(BudgetAlert.objects.filter(month=usage.month_start())
                .select_related("team", "user")[:20])
