from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.cache import cache_page
from django.views.i18n import JavaScriptCatalog

from conversations.forms import LoginForm
from conversations.usage_views import usage_admin

urlpatterns = [
    # The chat site first: every pattern tried before the match is kept with the request (a
    # stream keeps its request open for hours), and these are the requests that come often.
    path("", include("conversations.urls")),
    # Under the admin's prefix, so listed before admin/, whose patterns would answer it first.
    path("admin/usage/", usage_admin, name="admin-usage"),
    path("admin/", admin.site.urls),
    # Log in and out, and change one's password. No password reset by email: this site sends
    # no mail; an administrator sets a new password in the admin.
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=LoginForm),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(),
         name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(),
         name="password_change_done"),
    # The translations of the scripts' strings, in the page's language (which the page puts in
    # the address, so that a browser's cached copy never answers for another language).
    path("jsi18n/", cache_page(3600)(JavaScriptCatalog.as_view()), name="javascript-catalog"),
]
