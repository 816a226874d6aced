"""The ASGI handler chatsite is served by: Django's, with each request's middleware and view
run in one step on the request's thread.

Django's own ASGI handler builds its middleware chain for the event loop. Every middleware of
chatsite's chain is synchronous (or both), so Django runs the chain on the request's thread, hops
back to the event loop for the innermost step, and then to the thread again for the (synchronous)
view: three crossings where one does. Built the way Django builds it under WSGI, the whole
chain and the view run in one call on the request's thread; the response, streaming ones
included, is still sent by the event loop. Django's ``request_started`` and ``request_finished``
signals, its per-request thread and its handling of a client that goes away are unchanged.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
