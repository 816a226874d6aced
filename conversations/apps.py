from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = _("Chat")

    def ready(self) -> None:
        from . import audit, relations

        audit.connect()
        relations.name_relations()
