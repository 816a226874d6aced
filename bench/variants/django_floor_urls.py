"""The URLs of ``bench.variants.django_floor``: the two bare views, then chatsite's own."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.http import require_POST

from chatsite.urls import urlpatterns as chatsite_urlpatterns
from conversations.replies import sse


@require_POST
@login_required
def bare_post(request):
    """A member's POST (CSRF checked by the middleware), answered with no work at all."""
    return HttpResponse(status=204)


def bare_stream(request):
    """A member's event stream of one event, as the reply stream's view is built: the user
    checked, the body an async iterator."""
    if not request.user.is_authenticated:
        raise Http404

    async def events():
        yield sse.RETRY
        yield sse.done("", 0)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-store"
    return response


urlpatterns = [
    path("bench/floor/post", bare_post),
    path("bench/floor/stream", bare_stream),
    *chatsite_urlpatterns,
]
