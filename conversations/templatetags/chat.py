from __future__ import annotations

from django import template
from django.template.defaultfilters import stringfilter
from django.utils.safestring import SafeString

from .. import text
from ..rendering import render_markdown

register = template.Library()


@register.filter
def markdown(value: str) -> SafeString:
    """Render model output as sanitized HTML."""
    return render_markdown(value or "")


@register.filter(is_safe=True)
@stringfilter
def isolate(value: str) -> str:
    """Return ``value`` as one bidirectional isolate, for places that cannot hold ``<bdi>``
    (the page's ``<title>``)."""
    return text.isolate(value)
