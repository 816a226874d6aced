from django.urls import path

from . import attachment_views, usage_views, views

app_name = "conversations"

urlpatterns = [
    # First: Django keeps the patterns tried before the match with the request, and a stream
    # keeps its request for as long as it is open (hours, by the thousand).
    path("m/<int:pk>/stream", views.message_stream, name="message-stream"),
    path("", views.home, name="home"),
    path("setup/", views.setup, name="setup"),
    path("healthz", views.healthz, name="healthz"),
    path("usage/", usage_views.usage_mine, name="usage"),
    path("export/", views.conversations_export_all, name="export-all"),
    path("import/", views.conversations_import, name="import"),
    path("search/", views.search, name="search"),
    path("settings/theme", views.theme_set, name="theme"),
    path("settings/language", views.language_set, name="language"),
    path("presets/save", views.preset_save, name="preset-save"),
    path("c/new/messages", views.message_create, name="message-create-new"),
    path("c/<int:pk>/", views.conversation_detail, name="detail"),
    path("c/<int:pk>/messages", views.message_create, name="message-create"),
    path("c/<int:pk>/rename", views.conversation_rename, name="rename"),
    path("c/<int:pk>/delete", views.conversation_delete, name="delete"),
    path("c/<int:pk>/export", views.conversation_export, name="export"),
    path("c/<int:pk>/pin", views.conversation_pin, name="pin"),
    path("c/<int:pk>/archive", views.conversation_archive, name="archive"),
    path("c/<int:pk>/share", views.conversation_share, name="share"),
    path("c/<int:pk>/unshare", views.conversation_unshare, name="unshare"),
    path("archived/", views.archived_list, name="archived"),
    path("shared/", views.shared_list, name="shared"),
    path("shared/<int:pk>/", views.shared_detail, name="shared-detail"),
    path("shared/<int:pk>/copy", views.shared_copy, name="shared-copy"),
    path("m/<int:pk>/stop", views.message_stop, name="message-stop"),
    path("m/<int:pk>/retry", views.message_retry, name="message-retry"),
    path("m/<int:pk>/edit", views.message_edit, name="message-edit"),
    path("a/<int:pk>", attachment_views.attachment_file, name="attachment"),
]
