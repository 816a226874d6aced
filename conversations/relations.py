"""Names for the rows of the many-to-many tables Django creates itself.

Django names a row of such a table (``ApiKey.teams.through``, ``User.groups.through``)
"ApiKey_teams object (1)", and its kind "apikey-group relationship": that is what the admin
showed wherever one appears — the confirmation of deleting a key, a team or a user (one or a
selection), a team's inline of grants and its history. Django offers no hook to name them (the
classes are made when the models load), so ``name_relations()``, run once when the app is ready,
gives every such table a ``__str__`` that names a row by its two ends ("Support key → Support",
"alice in Support") and, for the tables of our models and of auth's, a name for its kind. Every
admin page then says the same, from this one place.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .text import isolate_if_needed

ARROW = _("%(source)s → %(target)s")

# "app_label.Model.field": how a row reads, and the name of its kind (singular, plural).
NAMES = {
    "conversations.ApiKey.teams": (ARROW, _("API key granted to a team"),
                                   _("API keys granted to teams")),
    "conversations.ApiKey.users": (ARROW, _("API key granted to a user"),
                                   _("API keys granted to users")),
    "conversations.Preset.teams": (ARROW, _("preset granted to a team"),
                                   _("presets granted to teams")),
    "conversations.CatalogModel.teams": (ARROW, _("model a team's grant is narrowed to"),
                                         _("models teams' grants are narrowed to")),
    f"{settings.AUTH_USER_MODEL}.groups": (_("%(source)s in %(target)s"), _("team membership"),
                                           _("team memberships")),
    f"{settings.AUTH_USER_MODEL}.user_permissions": (
        _("%(source)s: %(target)s"), _("permission of a user"), _("permissions of users")),
    "auth.Group.permissions": (_("%(source)s: %(target)s"), _("permission of a team"),
                               _("permissions of teams")),
}


def _row_name(source: str, target: str, pattern):
    def __str__(row) -> str:
        """Name the row by its two ends (a name holding a direction control isolated, so it
        cannot reorder the rest)."""
        return str(pattern) % {"source": isolate_if_needed(str(getattr(row, source))),
                               "target": isolate_if_needed(str(getattr(row, target)))}

    return __str__


def name_relations() -> None:
    """Name the rows, and where known the kind, of every many-to-many table Django created."""
    for model in apps.get_models():
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            if not through._meta.auto_created:
                continue
            pattern, *kind = NAMES.get(f"{model._meta.label}.{field.name}", (ARROW,))
            through.__str__ = _row_name(field.m2m_field_name(), field.m2m_reverse_field_name(),
                                        pattern)
            if kind:
                through._meta.verbose_name, through._meta.verbose_name_plural = kind
            # Its two ends are named after their models ("API key", not "apikey"): the columns
            # of an inline of such rows (a team's keys) are headed by them.
            for end in (field.m2m_field_name(), field.m2m_reverse_field_name()):
                end_field = through._meta.get_field(end)
                end_field.verbose_name = end_field.related_model._meta.verbose_name
