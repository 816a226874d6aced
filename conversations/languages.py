"""The language a page speaks: the member's choice, else the browser's.

Django's ``LocaleMiddleware`` picks a language from the ``django_language`` cookie or the
browser's ``Accept-Language``. A member may choose one (``Preference.language``), remembered
across devices: ``member_language_middleware`` applies it once the member is known. The choice
is kept in the member's session (``preferences.py``), so a page pays no query for it. A visitor
who is not logged in (the login page) chooses by cookie.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.utils import translation

from . import preferences


def offered() -> list[str]:
    """The language codes a member may choose."""
    return [code for code, _name in settings.LANGUAGES]


def is_offered(language: str) -> bool:
    return language in offered()


def chosen(request: HttpRequest) -> str:
    """The language the visitor chose ("": none, the browser's is used): the member's
    preference, or for a visitor not logged in the language cookie."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        language = preferences.kept(request, preferences.LANGUAGE)
    else:
        language = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
    return language if is_offered(language) else ""


def remember(request: HttpRequest, language: str) -> None:
    """Keep ``language`` ("" for the browser's) as this session's choice."""
    preferences.keep(request, preferences.LANGUAGE, language)


def member_language_middleware(get_response):
    """Speak the member's chosen language (after ``LocaleMiddleware`` and authentication)."""

    def middleware(request):
        language = chosen(request)
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()
        return get_response(request)

    return middleware


def context(request: HttpRequest) -> dict:
    """The language chooser's state for templates: ``chosen_language`` ("" follows the
    browser)."""
    return {"chosen_language": chosen(request)}
