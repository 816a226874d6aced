"""What every page's template needs of the member beyond ``user``: their colour theme."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

THEME_SESSION_KEY = "chatsite_theme"


def theme(request: HttpRequest) -> dict:
    """The member's theme ("", "light" or "dark"), only on pages that show it (lazy). Read from
    the database once per session and kept in the session, as the chosen language is
    (``languages.py``): the pages after the first pay no query for it. Another device's switch
    shows here from the next login on."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"theme": ""}

    def chosen() -> str:
        value = request.session.get(THEME_SESSION_KEY)
        if value is None:
            from . import selectors

            value = request.session[THEME_SESSION_KEY] = selectors.theme_of(user=user)
        return value

    return {"theme": SimpleLazyObject(chosen)}


def remember_theme(request: HttpRequest, theme: str) -> None:
    """Keep ``theme`` as this session's, once the member switched to it."""
    request.session[THEME_SESSION_KEY] = theme
