"""A member's preferences as every page needs them: the chosen language and the colour theme.

Both are stored with the member (``Preference``, the same on every device) and kept in their
session, so that a page pays no query for them: read once, at login, with one query. A session
from before a preference was kept reads it on its first page. A switch updates the database and
this session; the member's other sessions follow from their next login.
"""

from __future__ import annotations

from django.http import HttpRequest

from . import selectors

LANGUAGE = "chatsite_language"
THEME = "chatsite_theme"


def _remember(session, user) -> None:
    """Keep ``user``'s preferences in ``session`` (one query)."""
    session[LANGUAGE], session[THEME] = selectors.preferences_of(user=user)


def remember_at_login(sender, request, user, **kwargs) -> None:
    """Keep the member's preferences in their new session (a ``user_logged_in`` receiver)."""
    if request is not None and hasattr(request, "session"):
        _remember(request.session, user)


def kept(request: HttpRequest, name: str) -> str:
    """The preference ``name`` (``LANGUAGE`` or ``THEME``) of the request's member, who is
    logged in: from their session, read into it first if it lacks it."""
    if name not in request.session:
        _remember(request.session, request.user)
    return request.session[name]


def keep(request: HttpRequest, name: str, value: str) -> None:
    """Keep ``value`` as this session's preference ``name``, once the member switched to it."""
    request.session[name] = value
