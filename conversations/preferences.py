"""A member's preferences as every page needs them: the chosen language and the colour theme.

Both are stored with the member (``Preference``, the same on every device) and kept in their
session, so that a page pays no query for them: read once, at login, with one query. A session
from before a preference was kept reads it on its first page. A switch updates the database and
this session; the member's other sessions follow from their next login.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from . import selectors

LANGUAGE = "chatsite_language"
THEME = "chatsite_theme"


def remember_at_login(sender, request, user, **kwargs) -> None:
    """Keep the member's preferences in their new session (a ``user_logged_in`` receiver)."""
    if request is not None and hasattr(request, "session"):
        language, theme = selectors.preferences_of(user=user)
        request.session[LANGUAGE] = language
        request.session[THEME] = theme


def kept(request: HttpRequest, name: str, read: Callable[[], str]) -> str:
    """The preference ``name`` of the request's member, from their session, else ``read()``
    (then kept)."""
    value = request.session.get(name)
    if value is None:
        value = request.session[name] = read()
    return value


def keep(request: HttpRequest, name: str, value: str) -> None:
    """Keep ``value`` as this session's preference ``name``, once the member switched to it."""
    request.session[name] = value
