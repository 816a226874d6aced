from __future__ import annotations

from django import template
from django.template.defaultfilters import stringfilter
from django.utils.safestring import SafeString, mark_safe

from .. import text
from ..rendering import VERSION, render_markdown, split_blocks

register = template.Library()


@register.filter
def markdown(value: str) -> SafeString:
    """Render model output as sanitized HTML."""
    return render_markdown(value or "")


@register.filter
def message_html(message) -> SafeString:
    """Return a reply's HTML: as stored when it finished, or rendered now if it has none yet
    (still streaming, or stored under older rules)."""
    if message.content_html and message.html_version == VERSION:
        return mark_safe(message.content_html)  # sanitized when it was stored
    return render_markdown(message.content or "")


@register.filter
def streaming_parts(message) -> tuple[SafeString, str]:
    """Return a streaming reply as the page shows it: its finished blocks rendered, and the open
    tail as text (the stream goes on from there the same way)."""
    finished, tail = split_blocks(message.content or "")
    return render_markdown(finished), tail


@register.filter
def thinks(message) -> bool:
    """Return whether a reply still being written comes from a reasoning model (the page then
    says the model is thinking): one small query, for the unfinished reply alone."""
    if not message.model or message.api_key_id is None:
        return False
    from .. import catalog

    return catalog.spec_for(message.api_key_id, message.model).reasoning


@register.filter(is_safe=True)
@stringfilter
def isolate(value: str) -> str:
    """Return ``value`` as one bidirectional isolate, for places that cannot hold ``<bdi>``
    (the page's ``<title>``)."""
    return text.isolate(value)


@register.simple_tag
def budget_alerts_this_month() -> list:
    """The budget alerts of this month, for the admin index."""
    from .. import alerts

    return alerts.recent()


@register.simple_tag
def budget_notices(user) -> list:
    """This month's budget alerts about ``user`` and their teams, for the member's pages."""
    from .. import alerts

    if not getattr(user, "is_authenticated", False):
        return []
    return alerts.notices_for(user)
