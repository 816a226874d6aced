"""What every page's template needs of the member beyond ``user``: their colour theme."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def theme(request: HttpRequest) -> dict:
    """The member's theme ("", "light" or "dark"): one small query, only on pages that show it
    (lazy), and never a write."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"theme": ""}
    from . import selectors

    return {"theme": SimpleLazyObject(lambda: selectors.theme_of(user=user))}
