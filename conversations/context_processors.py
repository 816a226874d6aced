"""What every page's template needs of the member beyond ``user``: their colour theme."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def theme(request: HttpRequest) -> dict:
    """The member's theme ("", "light" or "dark"), only on pages that show it (lazy): kept in
    their session (``preferences.py``), so no query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"theme": ""}
    from . import preferences

    return {"theme": SimpleLazyObject(lambda: preferences.kept(request, preferences.THEME))}
