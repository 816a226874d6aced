"""Forms of the operator's console that only the admin uses: a team's page (its members, its
settings, the keys granted to it).

A team is a Django group. Its members and its keys are many-to-many rows, and every change to
them goes through Django's many-to-many managers, so the audit log's signal handlers record it
(``audit.py``) as they record the same change made from a user's or a key's page.

A grant is a row of the many-to-many table Django creates itself (``ApiKey.teams.through``); it
reads "Key 1 → Support" on the team's page and in its history by the name ``relations.py`` gives
such rows.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.validators import MaxLengthValidator
from django.db.models.fields import BLANK_CHOICE_DASH
from django.forms.models import BaseInlineFormSet
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from .admin_guards import IdsChoiceField
from .models import ApiKey, Team
from .selectors import models_for_key

User = get_user_model()


# -- members -----------------------------------------------------------------------------------


class TeamForm(forms.ModelForm):
    """A group's name and permissions, and its members, added and removed on the team's page."""

    members = IdsChoiceField(
        queryset=User.objects.order_by(User.USERNAME_FIELD), required=False,
        label=_("Members"), widget=FilteredSelectMultiple(_("members"), is_stacked=False),
        help_text=_("Members chat with the keys granted to the team, within its budget."),
    )

    class Meta:
        model = Group
        fields = ["name", "permissions"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "members" in self.fields and self.instance.pk is not None:
            self.fields["members"].initial = self.instance.user_set.all()

    def _save_m2m(self) -> None:
        super()._save_m2m()
        if "members" in self.fields:  # not when the admin shows the members read-only
            # Only who joins or leaves is added or removed, each change audited.
            self.instance.user_set.set(self.cleaned_data["members"])


# -- the team's settings -----------------------------------------------------------------------


def offered_models(key: ApiKey | None) -> list[str]:
    """Return the models ``key`` offers its members; none without a key."""
    return models_for_key(key).models if key is not None else []


def default_model_blank(key: ApiKey | None) -> str:
    """Return how the default model's empty choice reads with ``key`` as the default key."""
    if key is None:
        return str(BLANK_CHOICE_DASH[0][1])
    if key.default_model:
        return str(_("The key's default (%(model)s)") % {"model": key.default_model})
    return str(_("The key's default"))


class KeyModelsSelect(forms.Select):
    """The default model's select, carrying the models of every key it may be paired with
    (``data-models``) and the name of the key's field (``data-key-field``): when the admin
    chooses another key, ``team_default_model.js`` lists that key's models, without a reload.
    Without a script the list follows the key once saved."""

    class Media:
        js = ["admin/js/jquery.init.js", "chatsite/team_default_model.js"]  # after django.jQuery

    def offer(self, *, keys, key_field: str) -> None:
        """List the models of each of ``keys`` in the widget, for the key field ``key_field``."""
        self.attrs["data-key-field"] = key_field
        self.attrs["data-no-key"] = default_model_blank(None)
        self.attrs["data-models"] = json.dumps({
            str(key.pk): {"blank": default_model_blank(key), "models": offered_models(key)}
            for key in keys
        }, ensure_ascii=False)


class TeamSettingsForm(forms.ModelForm):
    """A team's settings, whose default model is one its default key offers, chosen from a list.

    A value the key does not offer (any more) stays listed and kept while neither the key nor
    the model is changed, so saving a team's budget never loses it; a newly chosen one is
    refused."""

    default_model = forms.CharField(
        label=capfirst(Team._meta.get_field("default_model").verbose_name), required=False,
        widget=KeyModelsSelect,
        validators=[MaxLengthValidator(Team._meta.get_field("default_model").max_length)],
        help_text=_("One of the models the default key offers; empty for the key's own "
                    "default."),
    )

    class Meta:
        model = Team
        fields = ["group", "default_key", "default_model", "default_preset",
                  "monthly_token_budget", "monthly_cost_budget"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        current = self.data.get(self.add_prefix("default_model"), "") if self.is_bound else (
            self.initial.get("default_model") or "")
        self._list_models(self.instance.default_key if self.instance.default_key_id else None,
                          current)
        if "default_key" in self.fields:
            self.fields["default_model"].widget.offer(
                keys=self.fields["default_key"].queryset,
                key_field=self.add_prefix("default_key"))

    def _list_models(self, key: ApiKey | None, current: str) -> None:
        """Offer the models of ``key``, and ``current`` even if it is not one of them."""
        offered = offered_models(key)
        choices = [("", default_model_blank(key)), *((model, model) for model in offered)]
        if current and current not in offered:
            choices.append((current, _("%(model)s (not offered by the default key)")
                            % {"model": current}))
        self.fields["default_model"].widget.choices = choices

    def clean(self):
        cleaned = super().clean()
        if "default_key" not in cleaned or "default_model" not in cleaned:
            return cleaned  # the field's own error says what is wrong
        key, model = cleaned["default_key"], cleaned["default_model"]
        self._list_models(key, model)  # shown again: the models of the key just chosen
        changed = {"default_key", "default_model"} & set(self.changed_data)
        if model and changed and model not in offered_models(key):
            if key is None:
                message = _("A default model needs a default key: choose the key first.")
            else:
                message = _("The default model must be one the default key offers: “%(key)s” "
                            "does not offer “%(model)s”.") % {"key": key.name, "model": model}
            self.add_error("default_model", message)
        return cleaned


# -- keys granted to the team ------------------------------------------------------------------


class KeyGrantFormSet(BaseInlineFormSet):
    """The keys granted to a team (rows of ``ApiKey.teams.through``), saved through the key's
    many-to-many manager so each grant and revocation is audited."""

    def save_new(self, form, commit: bool = True):
        if not commit:
            return super().save_new(form, commit)
        key = form.cleaned_data["apikey"]
        key.teams.add(self.instance)
        return self.model.objects.get(apikey=key, group=self.instance)

    def save_existing(self, form, obj, commit: bool = True):
        if not commit or "apikey" not in form.changed_data:
            return super().save_existing(form, obj, commit)
        # Another key in a grant's row: the first key is revoked, the other granted.
        for previous in ApiKey.objects.filter(pk=form.initial["apikey"]):
            previous.teams.remove(self.instance)
        return self.save_new(form, commit)

    def delete_existing(self, obj, commit: bool = True) -> None:
        if not commit:
            return
        # The row as stored: its form may hold another key, chosen before Delete was ticked.
        stored = self.model.objects.select_related("apikey").filter(pk=obj.pk).first()
        if stored is not None:
            obj.apikey = stored.apikey  # named in the history by the key it granted
            stored.apikey.teams.remove(self.instance)
