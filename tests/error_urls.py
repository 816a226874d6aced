"""The site's URLs plus views that fail, for tests/test_error_pages.py (ROOT_URLCONF override).

Each failure carries ``DETAIL``, which must never reach the page.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.urls import path

from chatsite.urls import urlpatterns as site_urlpatterns

DETAIL = "internal detail: /srv/chatsite/var/db.sqlite3 row 42"


def fails_with_error(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(DETAIL)


def fails_as_suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation(DETAIL)


def fails_as_forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied(DETAIL)


urlpatterns = [
    path("failing/error", fails_with_error),
    path("failing/suspicious", fails_as_suspicious),
    path("failing/forbidden", fails_as_forbidden),
    *site_urlpatterns,
]
