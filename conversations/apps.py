from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = _("Chat")

    def ready(self) -> None:
        from . import alerts, audit, relations
        from .replies import reply_accounted

        audit.connect()
        relations.name_relations()
        reply_accounted.connect(alerts.on_reply_accounted, dispatch_uid="budget-alerts")
