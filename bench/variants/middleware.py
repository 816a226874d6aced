"""Sync-and-async versions of ``conversations.middleware``'s two middlewares (same behaviour)."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.decorators import sync_and_async_middleware

from conversations import middleware as original


def _must_set_up(request) -> bool:
    return request.path != reverse("conversations:setup") and not request.path.startswith(
        original.OPEN_PREFIXES
    )


@sync_and_async_middleware
def first_run_middleware(get_response):
    if iscoroutinefunction(get_response):

        async def middleware(request):
            if _must_set_up(request) and not (
                original._has_users or await sync_to_async(original.users_exist)()
            ):
                return redirect(reverse("conversations:setup"))
            return await get_response(request)

        return middleware
    return original.first_run_middleware(get_response)


@sync_and_async_middleware
def content_security_policy_middleware(get_response):
    if iscoroutinefunction(get_response):
        policy = settings.CHATSITE_CSP

        async def middleware(request):
            response = await get_response(request)
            response.headers.setdefault("Content-Security-Policy", policy)
            return response

        return middleware
    return original.content_security_policy_middleware(get_response)
