from __future__ import annotations

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, UsernameField
from django.contrib.auth.models import User
from django.core.validators import MaxLengthValidator, MaxValueValidator
from django.db import connection
from django.utils.translation import gettext_lazy as _

from . import crypto, uploads
from .models import ApiKey, ReasoningEffort
from .selectors import ModelGroup

# The largest number a database integer column holds. A larger id names no row, and SQLite cannot
# even bind it as a query parameter, so forms refuse it like any other choice that is not offered.
MAX_ID = connection.ops.integer_field_range("BigIntegerField")[1]
# Django's own wording (and translations) for a choice that is not offered.
NOT_A_CHOICE = _("Select a valid choice. That choice is not one of the available choices.")


def is_id(value: object) -> bool:
    """Return whether ``value`` reads as a whole number an integer key column can hold."""
    try:
        return 0 < int(str(value)) <= MAX_ID
    except ValueError:  # not a number, or too many digits for int() to read
        return False


class ModelSelect(forms.Select):
    """The model select, each option saying what the catalog says of its model: a reasoning
    model (``data-reasoning``), one that takes no temperature (``data-no-temperature``). The
    composer shows the settings that apply to the model chosen (``chat.js``)."""

    specs: dict = {}

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        spec = self.specs.get(str(value))
        if spec is not None:
            if spec.reasoning:
                option["attrs"]["data-reasoning"] = ""
            if not spec.accepts_temperature:
                option["attrs"]["data-no-temperature"] = ""
            if spec.vision:
                option["attrs"]["data-vision"] = ""
        return option


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class AttachmentsField(forms.FileField):
    """Files attached to a message, each checked and converted by ``uploads.prepare``."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = [item for item in (data if isinstance(data, (list, tuple)) else [data]) if item]
        uploads.check_count(len(files))  # before decoding any of them
        prepared, errors = [], []
        for upload in files:
            try:
                prepared.append(uploads.prepare(upload))
            except forms.ValidationError as error:
                errors.extend(error.error_list)
        if errors:
            raise forms.ValidationError(errors)
        return prepared


class MessageForm(forms.Form):
    # A message is its text, its attachments or both: an image alone may ask its question.
    needs_message = True
    content = forms.CharField(
        label=_("Message"), max_length=100_000, required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": _("Ask anything…"),
                                     "autofocus": True}),
    )
    model = forms.ChoiceField(label=_("Model"), widget=ModelSelect)
    attachments = AttachmentsField(
        label=_("Attach"), required=False,
        widget=MultipleFileInput(attrs={"class": "composer__files"}),
    )
    image_detail = forms.ChoiceField(
        label=_("Image detail"), required=False,
        choices=[("", _("The model's default")), ("auto", _("Automatic")),
                 ("low", _("Low (faster, cheaper)")), ("high", _("High"))],
        help_text=_("How closely the model looks at attached images."),
    )
    # Chat settings: they apply from this message on.
    instructions = forms.CharField(
        label=_("Instructions"), required=False, max_length=20_000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": _(
            "How the assistant should answer, e.g. “Answer briefly, in Korean.”")}),
    )
    temperature = forms.DecimalField(
        label=_("Temperature"), required=False, min_value=0, max_value=2, max_digits=3,
        decimal_places=2, widget=forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal"}),
        help_text=_("0 to 2; lower is more focused. Empty: the model's default."),
    )
    max_length = forms.IntegerField(
        label=_("Maximum length"), required=False, min_value=1,
        help_text=_("The longest reply, in tokens. Empty: the model's default."),
    )
    reasoning_effort = forms.ChoiceField(
        label=_("Reasoning effort"), required=False,
        choices=[("", _("The model's default")), *ReasoningEffort.choices],
        help_text=_("How long a reasoning model thinks before it answers; other models ignore "
                    "it."),
    )

    preset = forms.TypedChoiceField(label=_("Preset"), required=False, coerce=int,
                                    empty_value=None)

    def __init__(self, *args, groups: list[ModelGroup], presets=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from django.conf import settings

        self.presets = {preset.pk: preset for preset in presets}
        self.fields["preset"].choices = [("", _("No preset"))] + [
            (preset.pk, preset.name) for preset in presets
        ]
        self.fields["preset"].error_messages["invalid_choice"] = _(
            "That preset is not available to you. Pick one from the list."
        )

        self.fields["max_length"].max_value = settings.CHATSITE_MAX_OUTPUT_TOKENS
        self.fields["max_length"].validators.append(
            MaxValueValidator(settings.CHATSITE_MAX_OUTPUT_TOKENS))
        self.fields["max_length"].widget.attrs["max"] = settings.CHATSITE_MAX_OUTPUT_TOKENS
        self.groups = groups
        choices = [
            (group.key.name, [(f"{group.key.pk}:{m}", group.label(m)) for m in group.models])
            for group in groups
        ]
        self.fields["model"].choices = choices if len(groups) > 1 else (choices[0][1] if choices else [])
        self.fields["model"].widget.specs = {
            f"{group.key.pk}:{model}": spec for group in groups
            for model, spec in group.specs.items()
        }
        self.fields["model"].error_messages["invalid_choice"] = _(
            "That model is not available. Pick one from the list."
        )

    def clean_preset(self):
        chosen = self.cleaned_data.get("preset")
        return self.presets.get(chosen) if chosen else None

    def clean(self):
        cleaned = super().clean()
        if (self.needs_message and not cleaned.get("content", "").strip()
                and not cleaned.get("attachments") and not {"content", "attachments"} & set(
                    self.errors)):
            self.add_error("content", forms.ValidationError(_("Write a message first."),
                                                            code="required"))
        preset = cleaned.get("preset")
        if preset is not None and not any(
            cleaned.get(name) not in (None, "") for name in ("instructions", "temperature",
                                                             "max_length", "reasoning_effort")
        ):
            # Nothing typed (no script filled the fields in): the preset's settings apply.
            cleaned.update(instructions=preset.instructions, temperature=preset.temperature,
                           max_length=preset.max_output_tokens,
                           reasoning_effort=preset.reasoning_effort)
        return cleaned

    def clean_model(self) -> tuple[ApiKey, str]:
        key_id, _sep, model = self.cleaned_data["model"].partition(":")
        for group in self.groups:
            if str(group.key.pk) == key_id and model in group.models:
                return group.key, model
        raise forms.ValidationError(self.fields["model"].error_messages["invalid_choice"])


class PresetForm(MessageForm):
    """The composer's settings saved as the member's own preset (a message is not needed)."""

    preset_name = forms.CharField(label=_("Preset name"), max_length=100,
                                  error_messages={"required": _("Give the preset a name.")})

    needs_message = False


class RenameForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200)


class ImportForm(forms.Form):
    """A file of conversations: chatsite's export (JSON or the archive) or ChatGPT's."""

    file = forms.FileField(
        label=_("Import conversations"), allow_empty_file=False,
        error_messages={"required": _("Choose a file to import."),
                        "empty": _("The file is empty.")},
        widget=forms.FileInput(attrs={"accept": ".json,.zip,application/json,"
                                                "application/zip"}),
    )


class ShareForm(forms.Form):
    """Who to share a conversation with: one of the member's teams, and/or members named by
    username (separated by commas or spaces), each an active member other than themselves."""

    team = forms.ModelChoiceField(label=_("Team"), queryset=None, required=False,
                                  empty_label=_("No team"))
    usernames = forms.CharField(label=_("Members"), max_length=1000, required=False,
                                help_text=_("Usernames, separated by commas."))

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["team"].queryset = user.groups.order_by("name")

    def clean_usernames(self) -> list:
        names = [name for name in self.cleaned_data["usernames"].replace(",", " ").split()
                 if name]
        if len(names) > 50:
            raise forms.ValidationError(_("Name at most 50 members at a time."))
        found = {user.get_username(): user for user in
                 User.objects.filter(username__in=names, is_active=True)}
        unknown = [name for name in names if name not in found]
        if unknown:
            raise forms.ValidationError(_("No active member is called %(names)s.")
                                        % {"names": ", ".join(unknown)})
        if self.user.get_username() in found:
            raise forms.ValidationError(_("You cannot share a conversation with yourself."))
        return list(dict.fromkeys(found[name] for name in names))

    def clean(self):
        cleaned = super().clean()
        if not self.errors and not cleaned.get("team") and not cleaned.get("usernames"):
            raise forms.ValidationError(_("Pick a team or name a member to share with."))
        return cleaned


class LoginForm(AuthenticationForm):
    """Django's login form, holding the username to the length a username has: Django only tells
    the browser (``maxlength``), and a longer one would reach the failed-login log (django-axes),
    whose column refuses it on PostgreSQL."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.validators.append(MaxLengthValidator(username.max_length))


class SetupForm(forms.Form):
    """The first administrator: a username and a password typed twice."""

    username = UsernameField(label=_("Username"), max_length=150)
    password1 = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label=_("Password again"), widget=forms.PasswordInput, strip=False)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password1") and cleaned.get("password1") != cleaned.get("password2"):
            self.add_error("password2", _("The two passwords differ."))
        elif cleaned.get("password1"):
            try:
                password_validation.validate_password(
                    cleaned["password1"], User(username=cleaned.get("username", ""))
                )
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class ApiKeyAdminForm(forms.ModelForm):
    """Admin form for keys: the secret is write-only and never rendered back."""

    secret = forms.CharField(
        label=_("Secret key"), required=False, strip=True,
        # "off" is ignored on password fields: browsers would fill in the admin's own password.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("The API key (sk-…). Stored encrypted and never shown again; "
                    "leave empty to keep the current one."),
    )

    base_url = forms.URLField(
        label=_("Base URL"), assume_scheme="https", initial=ApiKey._meta.get_field("base_url").default,
        help_text=ApiKey._meta.get_field("base_url").help_text,
    )

    class Meta:
        model = ApiKey
        fields = ["name", "secret", "base_url", "organization", "project", "default_model",
                  "is_active", "everyone", "teams", "users"]

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"].strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise forms.ValidationError(_("The base URL must start with https:// or http://."))
        return url

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", _("Enter the API key."))
        elif self.instance.pk and not cleaned.get("secret") and self.moved_fields():
            # Whoever may change a key must not be able to send it somewhere else (their own
            # server, through "Test connection") without knowing it already.
            self.add_error("secret", _(
                "Changing where this key is sent (%(fields)s) needs the secret again: enter "
                "the API key, or leave those fields as they were."
            ) % {"fields": ", ".join(
                str(self.fields[name].label) for name in self.moved_fields()
            )})
        return cleaned

    def moved_fields(self) -> list[str]:
        """Return the fields that say where the key is sent whose value this form changes."""
        return [
            name for name in ApiKey.DESTINATION_FIELDS
            if name in self.cleaned_data
            and (self.cleaned_data[name] or "") != (getattr(self.instance, name) or "")
        ]

    def save(self, commit: bool = True) -> ApiKey:
        key = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            crypto.set_secret(key, self.cleaned_data["secret"])
        if commit:
            key.save()
        return key
