from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = _("Chat")

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        from . import access, alerts, attachments, audit, preferences, relations, search
        from .replies import reply_accounted

        access.connect()
        audit.connect()
        attachments.connect()
        relations.name_relations()
        user_logged_in.connect(preferences.remember_at_login, dispatch_uid="member-preferences")
        reply_accounted.connect(alerts.on_reply_accounted, dispatch_uid="budget-alerts")
        post_migrate.connect(search.repair_index, sender=self, dispatch_uid="search-index")
