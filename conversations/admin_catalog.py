"""The model catalog in the operator's console: what each key offers, and what each model is.

**Admin → Models** lists every model of every key (filter by key): the admin ticks what members
are offered, names it for them, and on a model's page overrides anything the defaults
(``model_defaults.py``) assume -- each field shows its default, and an empty one keeps it -- and
narrows teams' grants of the key to it. A key's own page shows its catalog as a table, linking
here. Rows come from the provider's list ("Refresh models"), so none is added by hand; every
change is audited (the actions here, the rest by ``audit.py``).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Prefetch
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import access, audit, catalog
from .admin_guards import GuardedAdminMixin
from .models import ApiKey, CatalogModel


def _shown(value) -> str:
    """A default as the admin reads it."""
    if value is None:
        return str(_("none"))
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class CatalogModelForm(forms.ModelForm):
    """A model's settings, each field saying what it is when left empty (the default)."""

    class Meta:
        model = CatalogModel
        fields = ["offered", "display_name", *CatalogModel.SETTINGS[1:], "teams"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.model:
            return
        defaults = catalog.merge(self.instance.model, {}, offered=True)
        for name in CatalogModel.SETTINGS[1:]:
            field = self.fields.get(name)
            if field is None:
                continue
            default = getattr(defaults, name)
            if name == "first_token_timeout":
                default = int(default)
            label = _("Default (%(value)s)") % {"value": _shown(default)}
            if isinstance(field.widget, forms.NullBooleanSelect):
                field.widget.choices = [("unknown", label), ("true", _("Yes")),
                                        ("false", _("No"))]
            elif isinstance(field, forms.ChoiceField):
                field.choices = [("", label), *field.choices[1:]]
            else:
                field.widget.attrs["placeholder"] = _shown(default)
                field.help_text = f"{field.help_text} {label}".strip()
        self.fields["display_name"].widget.attrs["placeholder"] = self.instance.model


@admin.register(CatalogModel)
class CatalogModelAdmin(GuardedAdminMixin, admin.ModelAdmin):
    form = CatalogModelForm
    list_display = ["model", "api_key", "display_name", "offered", "listed", "window",
                    "kind", "prices", "team_names"]
    list_display_links = ["model"]
    list_editable = ["offered", "display_name"]
    list_filter = ["api_key", "offered", "teams"]
    list_select_related = ["api_key"]
    search_fields = ["model", "display_name", "api_key__name"]
    readonly_fields = ["api_key", "model", "listed"]
    filter_horizontal = ["teams"]
    actions = ["offer", "withdraw"]
    fieldsets = [
        (None, {"fields": ["api_key", "model", "listed", "offered", "display_name"]}),
        (_("Size"), {"fields": ["context_window", "max_output_tokens"]}),
        (_("What it takes"), {"fields": [
            "vision", "image_detail", "reasoning", "accepts_temperature", "length_parameter", "system_role",
            "first_token_timeout", "accepts_safety_identifier", "accepts_prompt_cache_key"]}),
        (_("Prices"), {
            "fields": ["input_price", "cached_input_price", "output_price"],
            "description": _("Per million tokens, in the site's currency. The defaults are "
                             "the provider's published prices in US dollars when chatsite was "
                             "released (on a site counting in dollars): keep them current "
                             "here. The three go together: once one is set, an empty one means "
                             "no price."),
        }),
        (_("Who may use it"), {"fields": ["teams"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(
            Prefetch("teams", to_attr="named_teams"))

    def has_add_permission(self, request) -> bool:
        return False  # the provider's list adds models ("Refresh models")

    @staticmethod
    def spec(row: CatalogModel) -> catalog.ModelSpec:
        return catalog.merge(row.model, {name: getattr(row, name)
                                         for name in CatalogModel.SETTINGS},
                             offered=row.offered)

    @admin.display(description=_("listed by the provider"), boolean=True)
    def listed(self, row: CatalogModel) -> bool:
        return row.model in (row.api_key.listed_models or [])

    @admin.display(description=_("context / output"))
    def window(self, row: CatalogModel) -> str:
        spec = self.spec(row)
        return f"{_shown(spec.context_window)} / {_shown(spec.max_output_tokens)}"

    @admin.display(description=_("takes"))
    def kind(self, row: CatalogModel) -> str:
        spec = self.spec(row)
        parts = [spec.length_parameter, spec.system_role]
        if spec.reasoning:
            parts.insert(0, str(_("reasoning")))
        if spec.accepts_temperature:
            parts.append("temperature")
        return ", ".join(parts)

    @admin.display(description=_("prices (input / cached / output)"))
    def prices(self, row: CatalogModel) -> str:
        spec = self.spec(row)
        if spec.input_price is None and spec.output_price is None:
            return str(_("no price"))
        return " / ".join(_shown(price) if price is None else f"{price.normalize():f}"
                          for price in (spec.input_price, spec.cached_input_price,
                                        spec.output_price))

    @admin.display(description=_("only for teams"))
    def team_names(self, row: CatalogModel) -> str:
        teams = getattr(row, "named_teams", None)
        if teams is None:
            teams = list(row.teams.all())
        return ", ".join(team.name for team in teams) or "-"

    def _offer(self, request, queryset, offered: bool) -> None:
        rows = list(queryset.select_related("api_key").exclude(offered=offered))
        with transaction.atomic():
            CatalogModel.objects.filter(pk__in=[row.pk for row in rows]).update(offered=offered)
            access.changed()  # update() sends no signal
        for key in {row.api_key for row in rows}:
            names = ", ".join(sorted(row.model for row in rows if row.api_key_id == key.pk))
            audit.record("models offered" if offered else "models withdrawn",
                         f"API key {key.name!r}", names)
        self.message_user(request, (ngettext(
            "%(count)d model is now offered.", "%(count)d models are now offered.", len(rows))
            if offered else ngettext(
            "%(count)d model is no longer offered.", "%(count)d models are no longer offered.",
            len(rows))) % {"count": len(rows)}, messages.SUCCESS)

    @admin.action(description=_("Offer to members"), permissions=["change"])
    def offer(self, request, queryset) -> None:
        self._offer(request, queryset, True)

    @admin.action(description=_("Stop offering to members"), permissions=["change"])
    def withdraw(self, request, queryset) -> None:
        self._offer(request, queryset, False)


def models_table(key: ApiKey) -> str:
    """The key's catalog as a table for its page: every model it lists, what is offered, what
    each model is; those no longer listed that keep the admin's settings, marked."""
    if not key.pk:
        return str(_("Saved keys list their models here."))
    rows = list(CatalogModel.objects.filter(api_key=key))
    specs = catalog.specs_for(key, rows)
    ids = {row.model: row.pk for row in rows}
    changelist = reverse("admin:conversations_catalogmodel_changelist")
    intro = (format_html(
        '<p><a href="{}?api_key__id__exact={}">{}</a></p>', changelist, key.pk,
        _("Choose what members are offered, and change what a model is"))
        if rows else format_html("<p>{}</p>", _(
            "The provider's list has not been fetched yet: the key's default model and the "
            "site's fallbacks are offered. Use “Refresh models”.")))

    def cells(model: str, spec: catalog.ModelSpec | None, note: str) -> tuple:
        link = (format_html('<a href="{}">{}</a>', reverse(
            "admin:conversations_catalogmodel_change", args=[ids[model]]), model)
            if model in ids else model)
        if spec is None:
            return (link, "", note, "", "", "", "")
        price = " / ".join("-" if value is None else f"{value.normalize():f}"
                           for value in (spec.input_price, spec.output_price))
        return (link, spec.display_name, note or (_("yes") if spec.offered else _("no")),
                f"{spec.context_window:,}", spec.length_parameter, spec.system_role, price)

    lines = [cells(model, spec, "") for model, spec in specs.items()]
    lines += [cells(row.model, None, _("no longer listed")) for row in rows
              if row.model not in specs]
    head = format_html_join("", "<th>{}</th>", ((label,) for label in (
        _("model"), _("display name"), _("offered"), _("context window"),
        _("length parameter"), _("instructions as"), _("price in / out"))))
    body = format_html_join("", "<tr>" + "<td>{}</td>" * 7 + "</tr>", lines)
    return format_html('{}<table class="catalog"><thead><tr>{}</tr></thead><tbody>{}</tbody>'
                       "</table>", intro, head, body)


def grant_models(grant) -> str:
    """The models a team's grant of a key allows (a row of ``ApiKey.teams.through``)."""
    if grant is None or not grant.pk:
        return "-"
    models = list(CatalogModel.objects.filter(api_key_id=grant.apikey_id, teams=grant.group_id)
                  .values_list("model", flat=True))
    return ", ".join(models) if models else str(_("every model the key offers"))
