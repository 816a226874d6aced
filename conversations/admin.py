"""The operator's console: keys and who may use them, teams, limits, usage, conversations, audit.

Secrets are write-only here: the key form never renders one back, lists show the masked hint,
and the "Test connection" and "Refresh models" actions report results without it.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters

from . import catalog, crypto, upstream
from .admin_guards import AdminLoginForm, GuardedAdminMixin, GuardedFieldsMixin
from .forms import ApiKeyAdminForm
from .models import ApiKey, AuditEvent, Conversation, Message, Team, UsageDaily, UserLimit

User = get_user_model()
admin.site.login_form = AdminLoginForm


@admin.register(ApiKey)
class ApiKeyAdmin(GuardedAdminMixin, admin.ModelAdmin):
    form = ApiKeyAdminForm
    list_display = ["name", "secret_hint", "organization", "project", "base_url", "is_active",
                    "everyone", "last_used_at"]
    list_filter = ["is_active", "everyone", "teams"]
    search_fields = ["name", "organization", "project", "base_url"]
    readonly_fields = ["secret_hint", "created_at", "updated_at", "last_used_at"]
    filter_horizontal = ["teams", "users"]
    actions = ["test_connection", "refresh_models", "deactivate"]
    fieldsets = [
        (None, {"fields": ["name", "secret", "secret_hint", "is_active"]}),
        (_("Where and as whom"), {"fields": ["base_url", "organization", "project"]}),
        (_("Who may use it"), {"fields": ["everyone", "teams", "users"]}),
        (_("Models"), {"fields": ["default_model", "allowed_models"]}),
        (_("History"), {"fields": ["created_at", "updated_at", "last_used_at"]}),
    ]

    @method_decorator(sensitive_post_parameters("secret"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if not change or form.cleaned_data.get("secret") or form.moved_fields():
            # A new key, or one sent somewhere new: its model list, now rather than on a
            # member's page (pages never wait on the provider).
            catalog.refresh_quietly(obj)

    @admin.action(description=_("Test connection"))
    def test_connection(self, request, queryset) -> None:
        for key in queryset:
            try:
                models = upstream.list_models(crypto.credentials_for(key))
            except (upstream.UpstreamError, crypto.DecryptionError) as error:
                self.message_user(
                    request, _("%(key)s: failed — %(error)s") % {"key": key.name, "error": error},
                    messages.ERROR,
                )
                continue
            scope = ", ".join(filter(None, [key.organization, key.project])) or _("no scope")
            self.message_user(
                request,
                _("%(key)s: connected (%(scope)s), %(count)s models available.")
                % {"key": key.name, "scope": scope, "count": len(models)},
                messages.SUCCESS,
            )

    @admin.action(description=_("Refresh models (allow every chat model the key lists)"))
    def refresh_models(self, request, queryset) -> None:
        for key in queryset:
            try:
                models = catalog.refresh(key)
            except (upstream.UpstreamError, crypto.DecryptionError) as error:
                self.message_user(
                    request, _("%(key)s: failed — %(error)s") % {"key": key.name, "error": error},
                    messages.ERROR,
                )
                continue
            key.allowed_models = models
            key.save()
            self.message_user(
                request,
                _("%(key)s: %(count)s models allowed: %(models)s")
                % {"key": key.name, "count": len(models), "models": ", ".join(models)},
                messages.SUCCESS,
            )

    @admin.action(description=_("Deactivate"))
    def deactivate(self, request, queryset) -> None:
        count = 0
        for key in queryset.filter(is_active=True):  # one save each, so each is audited
            key.is_active = False
            key.save()
            count += 1
        self.message_user(request, ngettext("%d key deactivated.", "%d keys deactivated.", count)
                          % count)


class TeamInline(GuardedFieldsMixin, admin.StackedInline):
    model = Team
    can_delete = False
    verbose_name_plural = _("team settings")
    autocomplete_fields = ["default_key"]


class KeyGrantInline(GuardedFieldsMixin, admin.TabularInline):
    model = ApiKey.teams.through
    extra = 0
    verbose_name = _("API key granted to this team")
    verbose_name_plural = _("API keys granted to this team")
    autocomplete_fields = ["apikey"]


admin.site.unregister(Group)


@admin.register(Group)
class TeamGroupAdmin(GuardedAdminMixin, GroupAdmin):
    """Teams are Django groups, with their settings and their keys inline."""

    inlines = [TeamInline, KeyGrantInline]
    list_display = ["name", "member_count"]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(members=Count("user", distinct=True))

    @admin.display(description=_("members"), ordering="members")
    def member_count(self, group) -> int:
        return group.members


class UserLimitInline(GuardedFieldsMixin, admin.StackedInline):
    model = UserLimit
    can_delete = True
    verbose_name_plural = _("chat limits")


admin.site.unregister(User)


@admin.register(User)
class ChatUserAdmin(GuardedAdminMixin, UserAdmin):
    inlines = [UserLimitInline]
    list_display = ["username", "email", "is_active", "is_staff", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser", "groups"]


@admin.register(UserLimit)
class UserLimitAdmin(GuardedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "monthly_token_budget", "requests_per_minute"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(GuardedAdminMixin, admin.ModelAdmin):
    list_display = ["group", "default_key", "default_model", "monthly_token_budget"]
    list_select_related = ["group", "default_key"]
    search_fields = ["group__name"]
    autocomplete_fields = ["group", "default_key"]


class ReadOnlyAdmin(GuardedAdminMixin, admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    list_display = ["day", "user", "team", "api_key", "organization", "project", "model",
                    "requests", "prompt_tokens", "completion_tokens", "total_tokens",
                    "estimated_tokens"]
    list_select_related = ["user", "team", "api_key"]
    list_filter = ["day", "team", "api_key", "organization", "project", "model"]
    search_fields = ["user__username", "model"]
    date_hierarchy = "day"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_name", "action", "target", "details"]
    list_filter = ["action"]
    search_fields = ["actor_name", "action", "target", "details"]
    date_hierarchy = "at"


class MessageInline(GuardedFieldsMixin, admin.TabularInline):
    model = Message
    fields = ["role", "status", "short_content", "model", "api_key", "error_status",
              "error_type", "error_code", "total_tokens", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("api_key")

    @admin.display(description=_("content"))
    def short_content(self, message: Message) -> str:
        return message.content[:120]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(GuardedAdminMixin, admin.ModelAdmin):
    """Read-only unless CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS: admins look, members own."""

    list_display = ["__str__", "owner", "model", "api_key", "updated_at"]
    list_select_related = ["owner", "api_key"]
    list_filter = ["api_key", "model"]
    search_fields = ["title", "owner__username"]
    readonly_fields = ["owner", "api_key", "model", "created_at", "updated_at"]
    fields = ["title", "owner", "api_key", "model", "system_prompt", "created_at", "updated_at"]
    inlines = [MessageInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return settings.CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return settings.CHATSITE_ADMIN_CAN_EDIT_CONVERSATIONS and super().has_delete_permission(
            request, obj
        )


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    """Failed replies name the key and the upstream status, so an admin can tell what broke."""

    list_display = ["id", "conversation", "role", "status", "model", "api_key", "team",
                    "error_status", "error_type", "error_code", "total_tokens",
                    "usage_estimated", "created_at"]
    list_select_related = ["conversation", "api_key", "team"]
    list_filter = ["status", "role", "error_type", "api_key", "model", "usage_estimated"]
    search_fields = ["content", "error_message", "error_detail"]
    readonly_fields = [f.name for f in Message._meta.fields]


# django-axes' lists of login attempts, with the same guards as ours.
for _model, _axes_admin in ((AccessAttempt, AccessAttemptAdmin), (AccessLog, AccessLogAdmin),
                            (AccessFailureLog, AccessFailureLogAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
        admin.site.register(_model, type(_axes_admin.__name__, (GuardedAdminMixin, _axes_admin), {}))
