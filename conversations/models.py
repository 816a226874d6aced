"""Data: upstream API keys, conversations and their messages.

Models hold data only; talking to the upstream lives in ``upstream.py``, key material in
``crypto.py``, and the running of a reply in ``replies/``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(is_active=True)

    def usable_by(self, user) -> ApiKeyQuerySet:
        """Active keys granted to ``user``: to everyone, to one of their teams, or to them."""
        keys = self.active()
        if user.is_superuser:
            return keys
        return keys.filter(
            models.Q(everyone=True) | models.Q(teams__user=user) | models.Q(users=user)
        ).distinct()


class ApiKey(models.Model):
    """An upstream API key, scoped to an OpenAI organization and project.

    The secret is stored only encrypted (``secret_encrypted``); ``secret_hint`` is the masked form
    (``sk-…abcd``) shown in lists. Only ``crypto.credentials_for(key)`` decrypts it.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    secret_encrypted = models.TextField(editable=False)
    secret_hint = models.CharField(_("key"), max_length=40, editable=False)
    organization = models.CharField(
        _("OpenAI organization"), max_length=100, blank=True,
        help_text=_("Sent as the OpenAI-Organization header when set (org-…)."),
    )
    project = models.CharField(
        _("OpenAI project"), max_length=100, blank=True,
        help_text=_("Sent as the OpenAI-Project header when set (proj_…)."),
    )
    base_url = models.URLField(
        _("base URL"), default=DEFAULT_BASE_URL,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text=_("Any OpenAI-compatible API, up to and including /v1."),
    )
    default_model = models.CharField(_("default model"), max_length=200, blank=True)
    allowed_models = models.JSONField(
        _("allowed models"), default=list, blank=True,
        help_text=_("Model ids members may use with this key; empty allows every chat model the "
                    "key lists. The admin action “Refresh models” fills it from the key."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    everyone = models.BooleanField(
        _("available to everyone"), default=False,
        help_text=_("Every user may chat with this key. Otherwise only the teams and users "
                    "below."),
    )
    teams = models.ManyToManyField(
        Group, blank=True, related_name="api_keys", verbose_name=_("teams"),
        help_text=_("Members of these teams may chat with this key."),
    )
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="api_keys", verbose_name=_("users"),
        help_text=_("These users may chat with this key, whatever their teams."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The provider's model list, fetched outside any request (pages never wait on it): the
    # chat models it listed, and when; None while it has never answered.
    listed_models = models.JSONField(null=True, blank=True, editable=False)
    models_listed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    # Where the secret is sent, and as whom: changing one needs the secret again.
    DESTINATION_FIELDS = ("base_url", "organization", "project")

    class Meta:
        ordering = ["name"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return self.name


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, user) -> ConversationQuerySet:
        return self.filter(owner=user)


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    # The member's settings, sent with every reply from the next one on.
    system_prompt = models.TextField(_("instructions"), blank=True)
    temperature = models.DecimalField(
        _("temperature"), max_digits=3, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(2)],
    )
    max_output_tokens = models.PositiveIntegerField(
        _("maximum length"), null=True, blank=True, validators=[MinValueValidator(1)],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="conversation_owner_recent")]

    def __str__(self) -> str:
        return self.title or str(_("New chat"))


class MessageQuerySet(models.QuerySet):
    def for_conversation(self, conversation: Conversation) -> MessageQuerySet:
        return self.filter(conversation=conversation).order_by("created_at", "id")

    def unfinished(self) -> MessageQuerySet:
        return self.filter(status__in=Message.UNFINISHED)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", _("System")
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        STREAMING = "streaming", _("Writing")
        COMPLETE = "complete", _("Complete")
        ERROR = "error", _("Failed")
        CANCELLED = "cancelled", _("Stopped")
        INTERRUPTED = "interrupted", _("Interrupted")

    UNFINISHED = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    finish_reason = models.CharField(max_length=32, blank=True)
    # A failed reply: what the member reads, and what the admin needs to tell why.
    error_message = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)
    error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(
        default=False, help_text=_("The upstream sent no usage; the token counts are estimated.")
    )
    model = models.CharField(max_length=200, blank=True)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True)
    # The team whose grant the member used, charged with the reply's usage.
    team = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, blank=True)
    # A retried reply stays stored but is no longer sent upstream as context.
    superseded = models.BooleanField(default=False)
    cancel_requested = models.BooleanField(default=False)
    # A finished reply's HTML, rendered once when it finished (``rendering.VERSION`` says with
    # which rules; an older one is rendered again when shown).
    content_html = models.TextField(blank=True, editable=False)
    html_version = models.PositiveSmallIntegerField(default=0, editable=False)
    # Renewed by the generating process while it lives; past it, the reply is interrupted.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_time"),
            models.Index(fields=["status"], name="message_status"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_unfinished(self) -> bool:
        return self.status in self.UNFINISHED

    @property
    def is_stale(self) -> bool:
        """Whether the process generating this reply stopped renewing its claim: it is shown as
        interrupted (the watchdog writes that down)."""
        return (
            self.status in self.UNFINISHED and self.lease_expires_at is not None
            and self.lease_expires_at < timezone.now()
        )

    @property
    def is_incomplete(self) -> bool:
        """Whether this reply ended before the model finished it."""
        return self.role == self.Role.ASSISTANT and (
            self.status in (self.Status.ERROR, self.Status.CANCELLED, self.Status.INTERRUPTED)
            or self.finish_reason in ("length", "content_filter")
        )


class PresetQuerySet(models.QuerySet):
    def available_to(self, user) -> PresetQuerySet:
        """The member's own presets, and the site's granted to everyone or to their teams."""
        site = models.Q(owner__isnull=True) & (
            models.Q(everyone=True) | models.Q(teams__user=user)
        )
        return self.filter(models.Q(owner=user) | site).distinct()


class Preset(models.Model):
    """A named way to start a chat: a model and the chat settings. An administrator's preset is
    granted to teams (or everyone) the way keys are; a member's own is theirs alone."""

    name = models.CharField(_("name"), max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
        related_name="presets", verbose_name=_("owner"),
        help_text=_("Empty for a preset of the site, granted below."),
    )
    api_key = models.ForeignKey("ApiKey", on_delete=models.SET_NULL, null=True, blank=True,
                                verbose_name=_("API key"))
    model = models.CharField(_("model"), max_length=200, blank=True)
    instructions = models.TextField(_("instructions"), blank=True)
    temperature = models.DecimalField(
        _("temperature"), max_digits=3, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(2)],
    )
    max_output_tokens = models.PositiveIntegerField(
        _("maximum length"), null=True, blank=True, validators=[MinValueValidator(1)],
    )
    everyone = models.BooleanField(_("available to everyone"), default=False)
    teams = models.ManyToManyField(Group, blank=True, related_name="presets",
                                   verbose_name=_("teams"))

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = _("preset")
        verbose_name_plural = _("presets")

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    """What a team (a Django group) is given: a default key and model, and a monthly budget."""

    group = models.OneToOneField(
        Group, on_delete=models.CASCADE, primary_key=True, related_name="team"
    )
    default_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("default key"),
    )
    default_model = models.CharField(_("default model"), max_length=200, blank=True)
    monthly_token_budget = models.PositiveBigIntegerField(
        _("monthly token budget"), null=True, blank=True,
        help_text=_("Tokens the whole team may use per calendar month; empty for no limit."),
    )
    default_preset = models.ForeignKey(
        Preset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("default preset"),
        help_text=_("Preselected when a member of the team starts a new chat."),
    )

    class Meta:
        verbose_name = _("team settings")
        verbose_name_plural = _("team settings")

    def __str__(self) -> str:
        return self.group.name


class UserLimit(models.Model):
    """A member's own limits; without a row, the site-wide defaults from settings apply."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
        related_name="chat_limit",
    )
    monthly_token_budget = models.PositiveBigIntegerField(
        _("monthly token budget"), null=True, blank=True,
        help_text=_("Tokens this user may use per calendar month; empty for no limit."),
    )
    requests_per_minute = models.PositiveIntegerField(
        _("messages per minute"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Empty for no limit."),
    )

    class Meta:
        verbose_name = _("user limits")
        verbose_name_plural = _("user limits")

    def __str__(self) -> str:
        # Once deleted (the admin names it then), Django has cleared the key: the user's id.
        return str(self.user) if self.user_id is not None else str(_("user limits"))


class UsageDaily(models.Model):
    """Tokens per day and per dimension, kept as replies finish, so usage pages never scan
    messages."""

    day = models.DateField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    team = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, blank=True)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True)
    organization = models.CharField(max_length=100, blank=True)
    project = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    estimated_tokens = models.PositiveBigIntegerField(
        default=0, help_text=_("Part of the total estimated because the upstream sent no usage.")
    )

    class Meta:
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        constraints = [
            # One row per dimension set, an empty team or key included: a plain unique
            # constraint would let rows with NULLs repeat (NULLs differ), and concurrent first
            # replies of a day would each create one. Expressions work on SQLite and PostgreSQL.
            models.UniqueConstraint(
                "day", "user", Coalesce("team", 0, output_field=models.BigIntegerField()),
                Coalesce("api_key", 0, output_field=models.BigIntegerField()),
                "organization", "project", "model",
                name="usage_daily_one_row_per_dimensions",
            ),
        ]
        indexes = [
            models.Index(fields=["day"], name="usage_day"),
            models.Index(fields=["user", "day"], name="usage_user_day"),
            models.Index(fields=["team", "day"], name="usage_team_day"),
            models.Index(fields=["api_key", "day"], name="usage_key_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model}: {self.total_tokens} tokens"


class AuditEvent(models.Model):
    """Who changed keys, access or limits, when, and what — never a secret."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=200)
    details = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit log")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"


class Preference(models.Model):
    """A member's own settings for the site: the colour theme ("" follows the system)."""

    class Theme(models.TextChoices):
        SYSTEM = "", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
        related_name="chat_preference",
    )
    theme = models.CharField(_("theme"), max_length=8, choices=Theme.choices, blank=True)

    class Meta:
        verbose_name = _("preference")
        verbose_name_plural = _("preferences")

    def __str__(self) -> str:
        # Once deleted (the admin names it then), Django has cleared the key: the kind.
        return str(self.user) if self.user_id is not None else str(_("preference"))
