"""Bad input in the admin answered the way Django answers it elsewhere, where Django would crash.

Django's admin refuses most bad query strings and form values properly: a lookup that is no field
sends the list back with ``?e=1``, an unknown object id redirects with "doesn't exist", a form
shows its errors. A few inputs get past those checks and end in a 500 (Django 5.2); the mixins
here close them, for our ModelAdmin classes and inlines and for the ones we re-register:

- a search longer than SQLite takes in a LIKE pattern (50,000 bytes) is refused like any invalid
  search, with a message above the list; in an autocomplete (and with a NUL, which PostgreSQL
  takes in no text) it finds nothing;
- a NUL in a lookup (PostgreSQL takes none in text) sends the list back with ``?e=1``;
- a date hierarchy step whose next year, month or day is past 9999-12-31, or a year with more
  digits than a C int holds, sends the list back with ``?e=1`` (Django only catches a date that
  does not exist), and so does a date-and-time lookup that falls outside years 1 to 9999 once
  converted to UTC (on SQLite, which stores UTC; east of UTC the first hours of year 1 do);
- a date and time entered in a form that falls outside years 1 to 9999 in UTC is a form error
  (Django would fail storing it, or, on PostgreSQL, reading it back);
- a username longer than a username can be is a login form error, as on the site's login page
  (``forms.LoginForm``);
- an empty ``_to_field`` on an object's page is no field, as if absent (Django looks it up);
- an id beyond what an integer column holds names no object in an object's URL when the key is
  a one-to-one field (Django guards plain primary keys only), and is an invalid value in a
  many-to-many field (which Django looks up with ``IN``, unguarded) and in an autocomplete field
  (whose rejected value Django looks up again to show it, text or NUL included).
"""

from __future__ import annotations

import datetime

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList, ChangeListSearchForm
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .forms import LoginForm, is_id

# Characters in an admin search: far more than anyone types, far less than SQLite's limit.
SEARCH_MAX_LENGTH = 1000


def _integer_key(field) -> bool:
    """Return whether ``field`` (or the key it points to) is an integer column."""
    return isinstance(getattr(field, "target_field", field), models.IntegerField)


def representable_in_utc(value: datetime.datetime | None) -> None:
    """Refuse a moment that would fall before year 1 or after year 9999 in UTC."""
    if value is None or timezone.is_naive(value):
        return
    try:
        value.astimezone(datetime.UTC)
    except OverflowError:
        raise ValidationError(
            _("Enter a date and time between the years 1 and 9999 in UTC."), code="out_of_range"
        ) from None


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's login form (staff only), with the site's bound on the username."""


class BoundedSearchForm(ChangeListSearchForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields[SEARCH_VAR] = forms.CharField(
            required=False, strip=False, max_length=SEARCH_MAX_LENGTH
        )


class GuardedChangeList(ChangeList):
    search_form_class = BoundedSearchForm

    def get_filters(self, request):
        if any("\x00" in value for values in self.filter_params.values() for value in values):
            raise IncorrectLookupParameters("a lookup holds a NUL")
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as error:  # the date hierarchy's end of range
            raise IncorrectLookupParameters(error) from error

    def get_results(self, request):
        try:
            return super().get_results(request)
        except OverflowError as error:  # a moment converted to UTC, before any query runs
            raise IncorrectLookupParameters(error) from error


class IdAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete select, which shows a rejected value by looking it up: only values
    that can be ids are looked up."""

    def optgroups(self, name, value, attr=None):
        return super().optgroups(name, [choice for choice in value if is_id(choice)], attr)


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """Django's choice of several rows, refusing a value no integer key can hold before it is
    looked up."""

    def _check_values(self, value):
        for choice in value:
            self.validate_no_null_characters(choice)
            if not is_id(choice):
                raise ValidationError(self.error_messages["invalid_pk_value"],
                                      code="invalid_pk_value", params={"pk": choice})
        return super()._check_values(value)


class GuardedFieldsMixin:
    """For ModelAdmin classes and inlines: relation fields that take only ids a column holds,
    and dates and times that UTC can hold."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and isinstance(db_field, models.DateTimeField):
            formfield.validators.append(representable_in_utc)
        return formfield

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if ("widget" not in kwargs and _integer_key(db_field)
                and db_field.name in self.get_autocomplete_fields(request)):
            kwargs["widget"] = IdAutocompleteSelect(db_field, self.admin_site,
                                                    using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if _integer_key(db_field):
            kwargs.setdefault("form_class", IdsChoiceField)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class GuardedAdminMixin(GuardedFieldsMixin):
    """For ModelAdmin classes: the guarded changelist, and object URLs with impossible ids."""

    def get_changelist(self, request, **kwargs):
        return GuardedChangeList

    def get_search_results(self, request, queryset, search_term):
        if len(search_term) > SEARCH_MAX_LENGTH or "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def get_object(self, request, object_id, from_field=None):
        from_field = from_field or None  # an empty ?_to_field= is no field (Django looks it up)
        field = self.opts.pk if from_field is None else self.opts.get_field(from_field)
        if _integer_key(field) and not is_id(object_id):
            return None  # "doesn't exist", as for any other id without an object
        return super().get_object(request, object_id, from_field)
