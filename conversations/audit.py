"""The audit log: who changed keys, access or limits, when, and what — never a secret.

Changes are caught with model signals, so the admin, management commands and services are all
recorded alike; the acting user comes from the request being served (``actor_middleware``), or
is "system" outside a request.
"""

from __future__ import annotations

import contextvars

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.utils.translation import gettext_lazy as _

from .models import ApiKey, AuditEvent, CatalogModel, Team, UserLimit

# What the admin shows for each action recorded (the log stores the English words, so that it
# reads the same whatever language the actor used); an action not named here is shown as stored.
ACTION_LABELS = {
    "key created": _("key created"),
    "key changed": _("key changed"),
    "key destination changed": _("key destination changed"),
    "key deactivated": _("key deactivated"),
    "key activated": _("key activated"),
    "key deleted": _("key deleted"),
    "access granted": _("access granted"),
    "access revoked": _("access revoked"),
    "access all revoked": _("all access revoked"),
    "member added to team": _("member added to team"),
    "member removed from team": _("member removed from team"),
    "member removed from all teams": _("member removed from all teams"),
    "team settings changed": _("team settings changed"),
    "user limits changed": _("user limits changed"),
    "limits removed": _("limits removed"),
    "model catalog changed": _("model catalog changed"),
    "grants narrowed to a model": _("grants narrowed to a model"),
    "grants no longer narrowed to a model": _("grants no longer narrowed to a model"),
    "models offered": _("models offered"),
    "models withdrawn": _("models withdrawn"),
    "login unlocked": _("login unlocked"),
    "conversations exported": _("conversations exported"),
    "budget alert": _("budget alert"),
    "encryption key rotated": _("encryption key rotated"),
    "conversation shared": _("conversation shared"),
    "share revoked": _("share revoked"),
}


def action_label(action: str):
    """The name of a recorded action in the current language."""
    return ACTION_LABELS.get(action, action)


_actor: contextvars.ContextVar = contextvars.ContextVar("chatsite_audit_actor", default=None)

# Fields of a key whose changes are recorded; the secret is recorded as "replaced", never shown.
KEY_FIELDS = ("name", "base_url", "organization", "project", "default_model", "is_active",
              "everyone")


def actor_middleware(get_response):
    """Remember who is acting for the audit log during the request."""

    def middleware(request):
        token = _actor.set(request)
        try:
            return get_response(request)
        finally:
            _actor.reset(token)

    return middleware


def _current_actor():
    request = _actor.get()
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    return None


def record(action: str, target: str, details: str = "") -> AuditEvent:
    actor = _current_actor()
    return AuditEvent.objects.create(
        actor=actor, actor_name=actor.get_username() if actor else "system",
        action=action, target=target[:200], details=details,
    )


def _remember_key(sender, instance: ApiKey, **kwargs) -> None:
    instance._audit_before = (
        ApiKey.objects.filter(pk=instance.pk).values(*KEY_FIELDS, "secret_encrypted").first()
        if instance.pk else None
    )


def _key_saved(sender, instance: ApiKey, created: bool, **kwargs) -> None:
    target = f"API key {instance.name!r}"
    if created:
        record("key created", target, _describe_key(instance))
        return
    before = getattr(instance, "_audit_before", None) or {}
    changes = [
        f"{name}: {before.get(name)!r} → {getattr(instance, name)!r}"
        for name in KEY_FIELDS if before.get(name) != getattr(instance, name)
    ]
    if before.get("secret_encrypted") != instance.secret_encrypted:
        changes.append(f"secret replaced (now {instance.secret_hint})")
    if not changes:
        return
    action = "key changed"
    if any(before.get(name) != getattr(instance, name) for name in ApiKey.DESTINATION_FIELDS):
        action = "key destination changed"
    elif before.get("is_active") and not instance.is_active:
        action = "key deactivated"
    elif before.get("is_active") is False and instance.is_active:
        action = "key activated"
    record(action, target, "; ".join(changes))


def _describe_key(key: ApiKey) -> str:
    return (f"secret {key.secret_hint}; base_url {key.base_url!r}; organization "
            f"{key.organization!r}; project {key.project!r}; active {key.is_active}; "
            f"everyone {key.everyone}")


def _key_deleted(sender, instance: ApiKey, **kwargs) -> None:
    record("key deleted", f"API key {instance.name!r}", f"secret {instance.secret_hint}")


def _grants_changed(sender, instance, action: str, reverse: bool, model, pk_set, **kwargs) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    verb = {"post_add": "granted", "post_remove": "revoked", "post_clear": "all revoked"}[action]
    if reverse:  # from the team's or user's side
        keys = ApiKey.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True)
        record(f"access {verb}", str(instance), "keys: " + ", ".join(sorted(keys)))
        return
    names = sorted(str(obj) for obj in model.objects.filter(pk__in=pk_set or ()))
    record(f"access {verb}", f"API key {instance.name!r}",
           f"{model._meta.verbose_name_plural}: {', '.join(names) or '-'}")


def _membership_changed(sender, instance, action: str, reverse: bool, model, pk_set,
                        **kwargs) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    verb = {"post_add": "added to team", "post_remove": "removed from team",
            "post_clear": "removed from all teams"}[action]
    others = sorted(str(obj) for obj in model.objects.filter(pk__in=pk_set or ()))
    record(f"member {verb}", str(instance), ", ".join(others))


def _limit_saved(sender, instance, created: bool, **kwargs) -> None:
    if isinstance(instance, Team):
        details = (f"monthly budget {instance.monthly_token_budget}; monthly cost budget "
                   f"{instance.monthly_cost_budget}; default key {instance.default_key}; "
                   f"default model {instance.default_model!r}")
        record("team settings changed", f"team {instance.group.name!r}", details)
    else:
        details = (f"monthly budget {instance.monthly_token_budget}; monthly cost budget "
                   f"{instance.monthly_cost_budget}; messages per minute "
                   f"{instance.requests_per_minute}")
        record("user limits changed", f"user {instance.user.get_username()!r}", details)


def _limit_deleted(sender, instance, **kwargs) -> None:
    owner = instance.group.name if isinstance(instance, Team) else instance.user.get_username()
    record("limits removed", str(owner))


def _catalog_saved(sender, instance: CatalogModel, created: bool, **kwargs) -> None:
    """A model of a key's catalog changed (its page, or the list's "offered" and name)."""
    settings = [f"offered {instance.offered}"] + [
        f"{name} {getattr(instance, name)!r}" for name in CatalogModel.SETTINGS
        if getattr(instance, name) not in (None, "")]
    record("model catalog changed", f"API key {instance.api_key.name!r}, model "
           f"{instance.model!r}", "; ".join(settings))


def _catalog_teams_changed(sender, instance, action: str, reverse: bool, model, pk_set,
                           **kwargs) -> None:
    """Teams' grants of a key narrowed to a model, or widened again."""
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    rows = [instance] if not reverse else list(
        CatalogModel.objects.filter(pk__in=pk_set or ()).select_related("api_key"))
    teams = ([str(instance)] if reverse else
             sorted(str(team) for team in model.objects.filter(pk__in=pk_set or ())))
    verb = {"post_add": "narrowed to", "post_remove": "no longer narrowed to",
            "post_clear": "no longer narrowed to"}[action]
    for row in rows:
        record(f"grants {verb} a model", f"API key {row.api_key.name!r}, model {row.model!r}",
               "teams: " + (", ".join(teams) or "all"))


def connect() -> None:
    post_save.connect(_catalog_saved, sender=CatalogModel, dispatch_uid="audit-catalog")
    m2m_changed.connect(_catalog_teams_changed, sender=CatalogModel.teams.through,
                        dispatch_uid="audit-catalog-teams")
    pre_save.connect(_remember_key, sender=ApiKey, dispatch_uid="audit-key-before")
    post_save.connect(_key_saved, sender=ApiKey, dispatch_uid="audit-key-saved")
    post_delete.connect(_key_deleted, sender=ApiKey, dispatch_uid="audit-key-deleted")
    m2m_changed.connect(_grants_changed, sender=ApiKey.teams.through, dispatch_uid="audit-teams")
    m2m_changed.connect(_grants_changed, sender=ApiKey.users.through, dispatch_uid="audit-users")
    m2m_changed.connect(_membership_changed, sender=get_user_model().groups.through,
                        dispatch_uid="audit-membership")
    for model in (Team, UserLimit):
        post_save.connect(_limit_saved, sender=model, dispatch_uid=f"audit-{model.__name__}")
        post_delete.connect(_limit_deleted, sender=model,
                            dispatch_uid=f"audit-{model.__name__}-deleted")
