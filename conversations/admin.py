"""The operator's console: keys and who may use them, teams, limits, usage, conversations, audit.

Secrets are write-only here: the key form never renders one back, lists show the masked hint,
and the "Test connection" and "Refresh models" actions report results without it.

A team's page holds all of the team: its members, its settings and the keys granted to it
(``admin_forms.py``). A member locked out by too many failed logins is unlocked from their
user's page or the user list ("Unlock login").
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Sum
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters

from . import admin_catalog, archive, audit, catalog, crypto, upstream
from .admin_forms import KeyGrantFormSet, TeamForm, TeamSettingsForm
from .admin_guards import AdminLoginForm, GuardedAdminMixin, GuardedFieldsMixin
from .forms import ApiKeyAdminForm
from .models import (
    ApiKey,
    AuditEvent,
    BudgetAlert,
    Conversation,
    Message,
    Preset,
    Team,
    UsageDaily,
    UserLimit,
)

User = get_user_model()
admin.site.login_form = AdminLoginForm


@admin.register(ApiKey)
class ApiKeyAdmin(GuardedAdminMixin, admin.ModelAdmin):
    form = ApiKeyAdminForm
    list_display = ["name", "secret_hint", "organization", "project", "base_url", "is_active",
                    "everyone", "last_used_at"]
    list_filter = ["is_active", "everyone", "teams"]
    search_fields = ["name", "organization", "project", "base_url"]
    readonly_fields = ["secret_hint", "created_at", "updated_at", "last_used_at", "catalog"]
    filter_horizontal = ["teams", "users"]
    actions = ["test_connection", "refresh_models", "deactivate"]
    fieldsets = [
        (None, {"fields": ["name", "secret", "secret_hint", "is_active"]}),
        (_("Where and as whom"), {"fields": ["base_url", "organization", "project"]}),
        (_("Who may use it"), {"fields": ["everyone", "teams", "users"]}),
        (_("Models"), {"fields": ["default_model", "catalog"]}),
        (_("History"), {"fields": ["created_at", "updated_at", "last_used_at"]}),
    ]

    @admin.display(description=_("models"))
    def catalog(self, key: ApiKey) -> str:
        return admin_catalog.models_table(key)

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

    @admin.action(description=_("Refresh models"))
    def refresh_models(self, request, queryset) -> None:
        for key in queryset:
            try:
                listing = catalog.refresh(key)
            except (upstream.UpstreamError, crypto.DecryptionError) as error:
                self.message_user(
                    request, _("%(key)s: failed — %(error)s") % {"key": key.name, "error": error},
                    messages.ERROR,
                )
                continue
            changes = [_("%(count)s chat models listed: %(models)s")
                       % {"count": len(listing.models), "models": ", ".join(listing.models)}]
            if listing.added:
                changes.append(_("new: %(models)s") % {"models": ", ".join(listing.added)})
            if listing.removed:
                changes.append(_("gone: %(models)s") % {"models": ", ".join(listing.removed)})
            if listing.kept:
                changes.append(_("no longer listed, kept with your settings: %(models)s")
                               % {"models": ", ".join(listing.kept)})
            self.message_user(request, f"{key.name}: " + "; ".join(map(str, changes)),
                              messages.SUCCESS)

    @admin.action(description=_("Deactivate"))
    def deactivate(self, request, queryset) -> None:
        count = 0
        with transaction.atomic():  # each change with the stamp it writes (access.py)
            for key in queryset.filter(is_active=True):  # one save each, so each is audited
                key.is_active = False
                key.save()
                count += 1
        self.message_user(request, ngettext("%d key deactivated.", "%d keys deactivated.", count)
                          % count)


class TeamInline(GuardedFieldsMixin, admin.StackedInline):
    model = Team
    form = TeamSettingsForm
    can_delete = False
    verbose_name_plural = _("team settings")
    autocomplete_fields = ["default_key"]


class KeyGrantInline(GuardedFieldsMixin, admin.TabularInline):
    model = ApiKey.teams.through
    formset = KeyGrantFormSet
    extra = 0
    verbose_name = _("API key granted to this team")
    verbose_name_plural = _("API keys granted to this team")
    autocomplete_fields = ["apikey"]
    fields = ["apikey", "models"]
    readonly_fields = ["models"]

    @admin.display(description=_("models (narrowed under Admin → Models)"))
    def models(self, grant) -> str:
        return admin_catalog.grant_models(grant)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("apikey", "group")  # their names


admin.site.unregister(Group)


@admin.register(Group)
class TeamGroupAdmin(GuardedAdminMixin, GroupAdmin):
    """Teams are Django groups, with their members, their settings and their keys."""

    form = TeamForm
    fields = ["name", "members", "permissions"]
    inlines = [TeamInline, KeyGrantInline]
    list_display = ["name", "member_count"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_total=Count("user", distinct=True))

    def get_readonly_fields(self, request, obj=None):
        # Membership is part of the user, as in Django's own many-to-many inlines: changing it
        # takes the permission to change users.
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.has_perm(
                f"{User._meta.app_label}.{get_permission_codename('change', User._meta)}"):
            readonly.append("members")
        return readonly

    @admin.display(description=_("members"), ordering="member_total")
    def member_count(self, group) -> int:
        return group.member_total

    @admin.display(description=_("members"))
    def members(self, group) -> str:
        """The members, where they are shown read-only."""
        names = group.user_set.order_by(User.USERNAME_FIELD).values_list(User.USERNAME_FIELD,
                                                                           flat=True)
        return ", ".join(names) or "-"


class UserLimitInline(GuardedFieldsMixin, admin.StackedInline):
    model = UserLimit
    can_delete = True
    verbose_name_plural = _("chat limits")


admin.site.unregister(User)


def _login_unlock(*, user) -> int:
    """Clear every failed login django-axes holds for ``user``, from any address, so a locked
    out user may log in again; audit it. Return how many of axes' records were cleared."""
    username = user.get_username()
    cleared = axes_reset(username=username)
    if cleared:
        audit.record("login unlocked", f"user {username!r}",
                     f"failed logins cleared ({cleared} records of django-axes)")
    return cleared


@admin.register(User)
class ChatUserAdmin(GuardedAdminMixin, UserAdmin):
    inlines = [UserLimitInline]
    list_display = ["username", "email", "is_active", "is_staff", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser", "groups"]
    actions = ["unlock_login", "export_conversations"]

    def get_urls(self):
        return [
            path("<path:object_id>/unlock-login/", self.admin_site.admin_view(self.unlock_view),
                 name=f"{self.opts.app_label}_{self.opts.model_name}_unlock_login"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, unquote(object_id))
        if user is not None:
            failures = AccessAttempt.objects.filter(username=user.get_username()).aggregate(
                total=Sum("failures_since_start"))["total"]
            extra_context = {**(extra_context or {}), "failed_logins": failures or 0}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description=_("Unlock login"), permissions=["change"])
    def unlock_login(self, request, queryset) -> None:
        self._unlock(request, list(queryset))

    def has_export_conversations_permission(self, request) -> bool:
        """Export is reading conversations: staff who may view them in the admin."""
        return request.user.has_perm(f"{Conversation._meta.app_label}."
                                     f"{get_permission_codename('view', Conversation._meta)}")

    @admin.action(description=_("Export conversations (ZIP)"),
                  permissions=["export_conversations"])
    def export_conversations(self, request, queryset):
        """Download one member's conversations (a departing member's, say) as the archive
        they would get from "Export all"; recorded in the audit log."""
        users = list(queryset[:2])
        if len(users) != 1:
            self.message_user(request, _("Select exactly one user to export their "
                                         "conversations."), messages.WARNING)
            return None
        member = users[0]
        conversations = Conversation.objects.owned_by(member)
        audit.record("conversations exported", f"user {member.get_username()!r}",
                     f"{conversations.count()} conversation(s), as a ZIP archive")
        return archive.response(conversations, username=member.get_username())

    def unlock_view(self, request, object_id):
        """Unlock one user's login (a POST from their page's "Unlock login" button)."""
        user = self.get_object(request, unquote(object_id))
        if user is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        if request.method == "POST":
            self._unlock(request, [user])
        return HttpResponseRedirect(reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[user.pk],
            current_app=self.admin_site.name))

    def _unlock(self, request, users) -> None:
        unlocked = sum(1 for user in users if _login_unlock(user=user))
        if unlocked:
            self.message_user(request, ngettext(
                "%(count)d user unlocked: their failed logins are cleared.",
                "%(count)d users unlocked: their failed logins are cleared.", unlocked,
            ) % {"count": unlocked}, messages.SUCCESS)
        if len(users) > unlocked:
            skipped = len(users) - unlocked
            self.message_user(request, ngettext(
                "%(count)d user had no failed logins to clear.",
                "%(count)d users had no failed logins to clear.", skipped,
            ) % {"count": skipped}, messages.INFO)


@admin.register(UserLimit)
class UserLimitAdmin(GuardedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "monthly_token_budget", "monthly_cost_budget", "requests_per_minute"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(GuardedAdminMixin, admin.ModelAdmin):
    list_display = ["group", "default_key", "default_model", "monthly_token_budget",
                    "monthly_cost_budget"]
    list_select_related = ["group", "default_key"]
    search_fields = ["group__name"]
    autocomplete_fields = ["group", "default_key"]
    form = TeamSettingsForm


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
                    "estimated_tokens", "cached_tokens", "reasoning_tokens", "image_tokens", "cost",
                    "uncosted_requests"]
    list_select_related = ["user", "team", "api_key"]
    list_filter = ["day", "team", "api_key", "organization", "project", "model"]
    search_fields = ["user__username", "model"]
    date_hierarchy = "day"


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    """Budgets that crossed the alert threshold, once per month and kind (conversations/alerts)."""

    list_display = ["month", "team", "user", "kind", "percent", "limit", "used", "created_at"]
    list_select_related = ["team", "user"]
    list_filter = ["month", "kind", "team"]
    search_fields = ["team__name", "user__username"]


class AuditActionFilter(admin.SimpleListFilter):
    """The actions recorded so far, named in the admin's language (the log stores English)."""

    title = _("action")
    parameter_name = "action"

    def lookups(self, request, model_admin):
        recorded = AuditEvent.objects.order_by("action").values_list("action", flat=True)
        return [(action, audit.action_label(action)) for action in recorded.distinct()]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_name", "action_name", "target", "details"]
    list_filter = [AuditActionFilter]
    search_fields = ["actor_name", "action", "target", "details"]
    date_hierarchy = "at"

    @admin.display(description=_("action"), ordering="action")
    def action_name(self, event: AuditEvent):
        return audit.action_label(event.action)


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
                    "error_status", "error_type", "error_code", "total_tokens", "cost",
                    "usage_estimated", "created_at"]
    list_select_related = ["conversation", "api_key", "team"]
    list_filter = ["status", "role", "error_type", "api_key", "model", "usage_estimated"]
    search_fields = ["content", "error_message", "error_detail"]
    readonly_fields = [f.name for f in Message._meta.fields]


def _column(method, description):
    """One of django-axes' list columns, headed by a translated name (axes gives none)."""

    @admin.display(description=description)
    def column(self, obj):
        return method(self, obj)

    return column


# Columns of django-axes' lists named after their methods, which no catalogue can translate.
_AXES_COLUMNS = {
    AccessAttempt: {"expiration": _column(AccessAttemptAdmin.expiration, _("expiration")),
                    "status": _column(AccessAttemptAdmin.status, _("status"))},
}

# django-axes' lists of login attempts, with the same guards as ours.
for _model, _axes_admin in ((AccessAttempt, AccessAttemptAdmin), (AccessLog, AccessLogAdmin),
                            (AccessFailureLog, AccessFailureLogAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
        admin.site.register(_model, type(_axes_admin.__name__, (GuardedAdminMixin, _axes_admin),
                                         _AXES_COLUMNS.get(_model, {})))


@admin.register(Preset)
class PresetAdmin(GuardedAdminMixin, admin.ModelAdmin):
    """Ways to start a chat (a model and its settings), granted to teams the way keys are.
    Members' own presets are listed too (owner set), so an admin can help with them."""

    list_display = ["name", "owner", "api_key", "model", "everyone"]
    list_filter = ["everyone", "teams"]
    list_select_related = ["owner", "api_key"]
    search_fields = ["name", "model", "owner__username"]
    autocomplete_fields = ["owner", "api_key"]
    filter_horizontal = ["teams"]
    fieldsets = [
        (None, {"fields": ["name", "api_key", "model"]}),
        (_("Chat settings"), {"fields": ["instructions", "temperature", "max_output_tokens",
                                         "reasoning_effort"]}),
        (_("Who may use it"), {"fields": ["everyone", "teams", "owner"]}),
    ]
