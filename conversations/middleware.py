"""Site-wide request handling: the first-run redirect and the Content-Security-Policy."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.shortcuts import redirect
from django.urls import reverse

_has_users = False
# Open before the first administrator exists: files, the health check, the scripts'
# translations and the language chooser (the first-run page has them too).
OPEN_PREFIXES = ("/static/", "/healthz", "/jsi18n/", "/settings/language")


def users_exist() -> bool:
    """Return whether any user exists; once true, remembered for the life of the process."""
    global _has_users
    if not _has_users:
        _has_users = get_user_model().objects.exists()
    return _has_users


def forget_users() -> None:
    """Forget the remembered answer (tests that start from an empty database)."""
    global _has_users
    _has_users = False


def first_run_middleware(get_response):
    """Send every request of a new install to the page that creates the first administrator."""

    def middleware(request):
        setup_url = reverse("conversations:setup")
        if (
            request.path != setup_url
            and not request.path.startswith(OPEN_PREFIXES)
            and not users_exist()
        ):
            return redirect(setup_url)
        return get_response(request)

    return middleware


def content_security_policy_middleware(get_response):
    """Add ``settings.CHATSITE_CSP`` to every response that does not set its own."""
    from django.conf import settings

    policy = settings.CHATSITE_CSP

    def middleware(request):
        response = get_response(request)
        response.headers.setdefault("Content-Security-Policy", policy)
        return response

    return middleware
