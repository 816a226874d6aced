"""What every page's template needs of the member beyond ``user``: their colour theme."""

from __future__ import annotations

from django.http import HttpRequest

SESSION_KEY = "chatsite_theme"


def theme(request: HttpRequest) -> dict[str, str]:
    """The member's theme ("", "light" or "dark"), read once per session, not per page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"theme": ""}
    chosen = request.session.get(SESSION_KEY)
    if chosen is None:
        from . import selectors

        chosen = request.session[SESSION_KEY] = selectors.theme_of(user=user)
    return {"theme": chosen}
