"""What Django's form widget templates render through ``django/forms/widgets/attrs.html``, as a
filter: the same attributes, in the same order and escaping, without a template include per
widget and per option (a page's composer renders about ten widgets and every model option)."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def html_attrs(attrs: dict) -> SafeString:
    """`` name="value"`` for each attribute, `` name`` for True, nothing for False: as
    ``attrs.html`` writes them (values as ``stringformat:'s'`` makes them, escaped)."""
    parts = []
    for name, value in attrs.items():
        if value is True:
            parts.append(format_html(" {}", name))
        elif value is not False:  # str() as stringformat:"s" makes it (a safe string stays so)
            parts.append(format_html(' {}="{}"', name, str(value)))
    return mark_safe("".join(parts))
