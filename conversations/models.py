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
        # EXISTS, not joins and DISTINCT: PostgreSQL would compare whole rows (the encrypted
        # secret and the model list included) to drop the duplicates the joins make.
        grants = ApiKey.teams.through.objects.filter(apikey=models.OuterRef("pk"),
                                                     group__user=user)
        own = ApiKey.users.through.objects.filter(apikey=models.OuterRef("pk"), user=user)
        return keys.filter(
            models.Q(everyone=True) | models.Exists(grants) | models.Exists(own)
        )


class ApiKey(models.Model):
    """An upstream API key, scoped to an OpenAI organization and project.

    The secret is stored only encrypted (``secret_encrypted``); ``secret_hint`` is the masked form
    (``sk-…abcd``) shown in lists. Only ``crypto.credentials_for(key)`` decrypts it.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    secret_encrypted = models.TextField(_("encrypted secret"), editable=False)
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
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    # The provider's model list, fetched outside any request (pages never wait on it): the
    # chat models it listed, and when; None while it has never answered. What each one is, and
    # whether members are offered it, is in the key's catalog (``CatalogModel``).
    listed_models = models.JSONField(_("listed models"), null=True, blank=True, editable=False)
    models_listed_at = models.DateTimeField(_("models listed at"), null=True, blank=True,
                                            editable=False)

    objects = ApiKeyQuerySet.as_manager()

    # Where the secret is sent, and as whom: changing one needs the secret again.
    DESTINATION_FIELDS = ("base_url", "organization", "project")

    class Meta:
        ordering = ["name"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return self.name


class CatalogModel(models.Model):
    """One model of a key's catalog: whether members are offered it, and what the admin says of
    it where the defaults (``model_defaults.py``) do not fit. An empty field uses the default;
    ``catalog.spec_for`` merges the two.

    A row exists for every model the key's provider lists (``catalog.refresh`` adds and removes
    them); one that is no longer listed is kept while it holds the admin's settings, and offered
    to nobody until the provider lists it again.
    """

    class LengthParameter(models.TextChoices):
        MAX_TOKENS = "max_tokens", "max_tokens"
        MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens"

    class SystemRole(models.TextChoices):
        SYSTEM = "system", "system"
        DEVELOPER = "developer", "developer"

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="catalog",
                                verbose_name=_("API key"))
    model = models.CharField(_("model id"), max_length=200)
    offered = models.BooleanField(
        _("offered"), default=True,
        help_text=_("Members granted the key may pick it."),
    )
    display_name = models.CharField(_("display name"), max_length=200, blank=True,
                                    help_text=_("Shown to members; empty for the model id."))
    context_window = models.PositiveIntegerField(
        _("context window"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Tokens of prompt and reply together; longer conversations leave out their "
                    "earliest messages."))
    max_output_tokens = models.PositiveIntegerField(
        _("output limit"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("The longest reply, in tokens; kept free in the context window."))
    vision = models.BooleanField(_("image input"), null=True, blank=True)
    image_detail = models.CharField(
        _("image detail"), max_length=8, blank=True,
        choices=[("auto", _("Automatic")), ("low", _("Low")), ("high", _("High"))],
        help_text=_("How closely the model looks at attached images, unless the member "
                    "chooses (low is faster and cheaper)."))
    reasoning = models.BooleanField(
        _("reasoning"), null=True, blank=True,
        help_text=_("Thinks before it answers: members may choose a reasoning effort, and the "
                    "page says it is thinking."))
    accepts_temperature = models.BooleanField(_("accepts temperature"), null=True, blank=True)
    length_parameter = models.CharField(_("length parameter"), max_length=24, blank=True,
                                        choices=LengthParameter.choices)
    system_role = models.CharField(_("role of the instructions"), max_length=16, blank=True,
                                   choices=SystemRole.choices)
    input_price = models.DecimalField(
        _("input price"), max_digits=12, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Per million input tokens, in the site's currency."))
    cached_input_price = models.DecimalField(
        _("cached input price"), max_digits=12, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Per million input tokens served from the provider's prompt cache."))
    output_price = models.DecimalField(
        _("output price"), max_digits=12, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Per million output tokens (reasoning tokens included)."))
    first_token_timeout = models.PositiveIntegerField(
        _("first-text deadline"), null=True, blank=True, validators=[MinValueValidator(1)],
        help_text=_("Seconds to wait for the first text of a reply (a reasoning model thinks "
                    "first)."))
    accepts_safety_identifier = models.BooleanField(_("accepts safety_identifier"), null=True,
                                                    blank=True)
    accepts_prompt_cache_key = models.BooleanField(_("accepts prompt_cache_key"), null=True,
                                                   blank=True)
    teams = models.ManyToManyField(
        Group, blank=True, related_name="catalog_models", verbose_name=_("only for teams"),
        help_text=_("Narrows teams' grants of this key: a team named on any of the key's models "
                    "may use only the models that name it. Teams named nowhere, and members "
                    "granted the key themselves or as everyone, use every offered model."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    # The fields an admin sets; empty ones use the defaults.
    SETTINGS = ("display_name", "context_window", "max_output_tokens", "vision", "image_detail",
                "reasoning",
                "accepts_temperature", "length_parameter", "system_role", "input_price",
                "cached_input_price", "output_price", "first_token_timeout",
                "accepts_safety_identifier", "accepts_prompt_cache_key")

    class Meta:
        ordering = ["api_key", "model"]
        verbose_name = _("model")
        verbose_name_plural = _("models")
        constraints = [models.UniqueConstraint(fields=["api_key", "model"],
                                               name="catalog_one_row_per_key_and_model")]

    def __str__(self) -> str:
        return f"{self.model} ({self.api_key})" if self.api_key_id else self.model


class ReasoningEffort(models.TextChoices):
    """How hard a reasoning model thinks (``reasoning_effort``); empty: the model's default."""

    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")


class ChatSettings(models.Model):
    """The settings a chat sends with each reply beside its instructions: a conversation's, and
    a preset's to start one with (empty: the model's default)."""

    temperature = models.DecimalField(
        _("temperature"), max_digits=3, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(2)],
    )
    max_output_tokens = models.PositiveIntegerField(
        _("maximum length"), null=True, blank=True, validators=[MinValueValidator(1)],
    )
    reasoning_effort = models.CharField(_("reasoning effort"), max_length=8, blank=True,
                                        choices=ReasoningEffort.choices)

    class Meta:
        abstract = True


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, user) -> ConversationQuerySet:
        return self.filter(owner=user)


class Conversation(ChatSettings):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations",
        verbose_name=_("owner"),
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True,
                                verbose_name=_("API key"))
    model = models.CharField(_("model"), max_length=200, blank=True)
    # The member's settings, sent with every reply from the next one on.
    system_prompt = models.TextField(_("instructions"), blank=True)
    # Where an imported conversation came from (its id in the file), so importing the same file
    # again adds nothing; empty for conversations started here.
    import_source = models.CharField(_("imported from"), max_length=200, blank=True,
                                     editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    # Pinned: listed on top of the sidebar. Archived: left out of the sidebar (listed on its own
    # page), not deleted. Setting either leaves ``updated_at`` as it is.
    pinned_at = models.DateTimeField(_("pinned"), null=True, blank=True, editable=False)
    archived_at = models.DateTimeField(_("archived"), null=True, blank=True, editable=False)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [models.Index(fields=["owner", "-updated_at"], name="conversation_owner_recent")]
        constraints = [models.UniqueConstraint(
            fields=["owner", "import_source"], condition=~models.Q(import_source=""),
            name="conversation_imported_once")]

    def __str__(self) -> str:
        return self.title or str(_("New chat"))


class Share(models.Model):
    """A conversation shared read-only with one of its owner's teams or with one member.
    Recipients read it and may continue it as their own copy; deleting the row revokes it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE,
                                     related_name="shares", verbose_name=_("conversation"))
    team = models.ForeignKey(Group, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="shares", verbose_name=_("team"))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True,
                             blank=True, related_name="shares_received",
                             verbose_name=_("member"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                   related_name="+", verbose_name=_("shared by"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("share")
        verbose_name_plural = _("shares")
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(team__isnull=False, user__isnull=True)
                           | models.Q(team__isnull=True, user__isnull=False)),
                name="share_with_a_team_or_a_member"),
            models.UniqueConstraint(fields=["conversation", "team"],
                                    condition=models.Q(team__isnull=False),
                                    name="share_once_per_team"),
            models.UniqueConstraint(fields=["conversation", "user"],
                                    condition=models.Q(user__isnull=False),
                                    name="share_once_per_member"),
        ]

    def __str__(self) -> str:
        return str(self.team) if self.team_id else str(self.user)


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
        Conversation, on_delete=models.CASCADE, related_name="messages",
        verbose_name=_("conversation"),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices,
                              default=Status.COMPLETE)
    finish_reason = models.CharField(_("finish reason"), max_length=32, blank=True)
    # A failed reply: what the member reads, and what the admin needs to tell why.
    error_message = models.TextField(_("error message"), blank=True)
    error_detail = models.TextField(_("error detail"), blank=True)
    error_status = models.PositiveSmallIntegerField(_("error status"), null=True, blank=True)
    error_type = models.CharField(_("error type"), max_length=100, blank=True)
    error_code = models.CharField(_("error code"), max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), null=True,
                                                    blank=True)
    total_tokens = models.PositiveIntegerField(_("total tokens"), null=True, blank=True)
    usage_estimated = models.BooleanField(
        _("usage estimated"), default=False,
        help_text=_("The upstream sent no usage; the token counts are estimated."),
    )
    # Parts of the figures above, as the usage chunk details them (null: not reported).
    cached_tokens = models.PositiveIntegerField(_("cached tokens"), null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), null=True, blank=True)
    audio_tokens = models.PositiveIntegerField(_("audio tokens"), null=True, blank=True)
    image_tokens = models.PositiveIntegerField(_("image tokens"), null=True,
                                               blank=True)  # of the prompt's
    # What the reply cost, at the prices of its model when it finished, kept with it so that a
    # later price change does not rewrite history (null: the model had no price).
    cost = models.DecimalField(_("cost"), max_digits=18, decimal_places=8, null=True,
                               blank=True)
    cost_currency = models.CharField(_("cost currency"), max_length=3, blank=True)
    price_input = models.DecimalField(_("input price"), max_digits=12, decimal_places=6,
                                      null=True, blank=True)
    price_cached_input = models.DecimalField(
        _("cached input price"), max_digits=12, decimal_places=6, null=True, blank=True
    )
    price_output = models.DecimalField(_("output price"), max_digits=12, decimal_places=6,
                                       null=True, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True,
                                verbose_name=_("API key"))
    # The team whose grant the member used, charged with the reply's usage.
    team = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, blank=True,
                             verbose_name=_("team"))
    # A retried reply stays stored but is no longer sent upstream as context.
    superseded = models.BooleanField(_("superseded"), default=False)
    # How many of the earliest messages were left out of this reply's context, so that the
    # conversation fit the model's context window (the page says so).
    context_omitted = models.PositiveIntegerField(_("messages left out of the context"),
                                                  default=0, editable=False)
    cancel_requested = models.BooleanField(_("stop requested"), default=False)
    # A finished reply's HTML, rendered once when it finished (``rendering.VERSION`` says with
    # which rules; an older one is rendered again when shown).
    content_html = models.TextField(_("content HTML"), blank=True, editable=False)
    html_version = models.PositiveSmallIntegerField(_("HTML version"), default=0,
                                                    editable=False)
    # Renewed by the generating process while it lives; past it, the reply is interrupted.
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("message")
        verbose_name_plural = _("messages")
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


class Preset(ChatSettings):
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
        Group, on_delete=models.CASCADE, primary_key=True, related_name="team",
        verbose_name=_("team"),
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
    monthly_cost_budget = models.DecimalField(
        _("monthly cost budget"), max_digits=14, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("What the whole team may spend per calendar month, in the site's currency; "
                    "empty for no limit."),
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
        related_name="chat_limit", verbose_name=_("user"),
    )
    monthly_token_budget = models.PositiveBigIntegerField(
        _("monthly token budget"), null=True, blank=True,
        help_text=_("Tokens this user may use per calendar month; empty for no limit."),
    )
    monthly_cost_budget = models.DecimalField(
        _("monthly cost budget"), max_digits=14, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("What this user may spend per calendar month, in the site's currency; "
                    "empty for no limit."),
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

    day = models.DateField(_("day"))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                             verbose_name=_("user"))
    team = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, blank=True,
                             verbose_name=_("team"))
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True,
                                verbose_name=_("API key"))
    organization = models.CharField(_("organization"), max_length=100, blank=True)
    project = models.CharField(_("project"), max_length=100, blank=True)
    model = models.CharField(_("model"), max_length=200)
    requests = models.PositiveIntegerField(_("requests"), default=0)
    prompt_tokens = models.PositiveBigIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveBigIntegerField(_("completion tokens"), default=0)
    total_tokens = models.PositiveBigIntegerField(_("total tokens"), default=0)
    estimated_tokens = models.PositiveBigIntegerField(
        _("estimated tokens"), default=0,
        help_text=_("Part of the total estimated because the upstream sent no usage."),
    )
    cached_tokens = models.PositiveBigIntegerField(_("cached tokens"), default=0)
    reasoning_tokens = models.PositiveBigIntegerField(_("reasoning tokens"), default=0)
    audio_tokens = models.PositiveBigIntegerField(_("audio tokens"), default=0)
    image_tokens = models.PositiveBigIntegerField(_("image tokens"), default=0)  # of the prompt's
    # In the site's currency, of the replies whose model had a price; the others are counted in
    # ``uncosted_requests`` (rows kept from before costs were recorded count all their requests
    # there: their cost is unknown, not zero).
    cost = models.DecimalField(_("cost"), max_digits=20, decimal_places=8, default=0)
    estimated_cost = models.DecimalField(
        _("estimated cost"), max_digits=20, decimal_places=8, default=0,
        help_text=_("Part of the cost computed from estimated tokens."),
    )
    uncosted_requests = models.PositiveIntegerField(_("requests without a price"), default=0)

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

    at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("actor"),
    )
    actor_name = models.CharField(_("actor name"), max_length=150, blank=True)
    action = models.CharField(_("action"), max_length=40)
    target = models.CharField(_("target"), max_length=200)
    details = models.TextField(_("details"), blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit log")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"


class Stamp(models.Model):
    """A value written anew whenever what it stands for changes (``access.py``): answers kept
    in memory under one value are not used under the next."""

    name = models.CharField(_("name"), max_length=40, primary_key=True)
    value = models.CharField(_("value"), max_length=32)

    class Meta:
        verbose_name = _("stamp")
        verbose_name_plural = _("stamps")

    def __str__(self) -> str:
        return self.name


class Preference(models.Model):
    """A member's own settings for the site: the colour theme ("" follows the system) and the
    language ("" follows the browser)."""

    class Theme(models.TextChoices):
        SYSTEM = "", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
        related_name="chat_preference", verbose_name=_("user"),
    )
    theme = models.CharField(_("theme"), max_length=8, choices=Theme.choices, blank=True)
    # "" follows the browser (Accept-Language); otherwise one of settings.LANGUAGES.
    language = models.CharField(_("language"), max_length=16, blank=True)

    class Meta:
        verbose_name = _("preference")
        verbose_name_plural = _("preferences")

    def __str__(self) -> str:
        # Once deleted (the admin names it then), Django has cleared the key: the kind.
        return str(self.user) if self.user_id is not None else str(_("preference"))


class BudgetAlert(models.Model):
    """A budget that crossed the alert threshold in one month: recorded once, so the member, the
    admins and their mailboxes hear of it once per period."""

    class Kind(models.TextChoices):
        TOKENS = "tokens", _("tokens")
        COST = "cost", _("cost")

    month = models.DateField(_("month"),
                             help_text=_("The first day of the month the alert is for."))
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
        related_name="+", verbose_name=_("user"),
    )
    team = models.ForeignKey(Group, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="+", verbose_name=_("team"))
    percent = models.PositiveSmallIntegerField(_("percent"),
                                               help_text=_("How much was used when it fired."))
    limit = models.DecimalField(_("limit"), max_digits=20, decimal_places=2)
    used = models.DecimalField(_("used"), max_digits=20, decimal_places=2)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("budget alert")
        verbose_name_plural = _("budget alerts")
        constraints = [
            models.UniqueConstraint(fields=["user", "kind", "month"],
                                    condition=models.Q(team__isnull=True),
                                    name="budget_alert_once_per_user_month"),
            models.UniqueConstraint(fields=["team", "kind", "month"],
                                    condition=models.Q(team__isnull=False),
                                    name="budget_alert_once_per_team_month"),
            models.CheckConstraint(
                condition=models.Q(user__isnull=True) ^ models.Q(team__isnull=True),
                name="budget_alert_user_or_team",
            ),
        ]

    def __str__(self) -> str:
        whose = self.team.name if self.team_id else str(self.user)
        return f"{whose}: {self.percent}% of the {self.get_kind_display()} budget ({self.month:%Y-%m})"


def attachment_storage():
    """The storage attachments live in: ``STORAGES["attachments"]`` (the data directory unless
    an operator names another backend, e.g. S3)."""
    from django.core.files.storage import storages

    return storages["attachments"]


def attachment_path(attachment: Attachment, filename: str) -> str:
    """An unguessable name for a stored attachment; nothing of the member's file name is in it
    (the name is kept in the row, and only the serving view hands the file out)."""
    import secrets

    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp",
                 "application/pdf": "pdf"}.get(attachment.content_type, "txt")
    return f"attachments/{timezone.now():%Y/%m}/{secrets.token_urlsafe(24)}.{extension}"


class Attachment(models.Model):
    """An image or a file a member attached to a message, checked and converted on upload
    (``uploads.py``): an image is re-encoded from its pixels (no metadata) at the size models
    use; a text file or a PDF keeps its text, sent to the model with the file's name."""

    class Kind(models.TextChoices):
        IMAGE = "image", _("Image")
        TEXT = "text", _("Text file")

    class Detail(models.TextChoices):
        AUTO = "auto", _("Automatic")
        LOW = "low", _("Low")
        HIGH = "high", _("High")

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments",
                                verbose_name=_("message"))
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    name = models.CharField(_("name"), max_length=255)
    # What the server found the file to be when it decoded it; never what the upload claimed.
    content_type = models.CharField(_("content type"), max_length=100)
    size = models.PositiveIntegerField(_("size"))
    width = models.PositiveIntegerField(_("width"), null=True, blank=True)
    height = models.PositiveIntegerField(_("height"), null=True, blank=True)
    file = models.FileField(_("file"), storage=attachment_storage, upload_to=attachment_path,
                            max_length=255)
    text = models.TextField(_("text"), blank=True)  # a text file's or a PDF's text
    detail = models.CharField(_("image detail"), max_length=8, blank=True,
                              choices=Detail.choices)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")

    def __str__(self) -> str:
        return self.name

    @property
    def is_image(self) -> bool:
        return self.kind == self.Kind.IMAGE
