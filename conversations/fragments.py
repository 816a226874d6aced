"""A message's HTML as the chat page shows it, rendered once and then reused.

A long conversation's page used to spend most of its CPU in the template engine, rendering the
message partial once per message on every view (translations, ``{% url %}``, dates, forms). A
finished message does not change, so its fragment is kept in the ``fragments`` cache (this
process's memory by default) under a key made of everything the fragment shows: the message's
fields, the language, the time zone, whether it offers Regenerate and whether it is read-only
(a recipient of a shared conversation sees no Edit, Regenerate, Retry or Stop). Any change to those is a new
key, so nothing is ever invalidated by hand; a message still being written is rendered every time.

The forms in a fragment need the viewer's CSRF token, which differs per visitor. A fragment is
rendered with a placeholder no message can contain (derived from the secret key) and the page
puts the viewer's token in its place.
"""

from __future__ import annotations

import hashlib
import operator

from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.crypto import salted_hmac
from django.utils.functional import SimpleLazyObject
from django.utils.safestring import SafeString, mark_safe

from .cache import local as local_cache
from .models import Message
from .rendering import VERSION
from .selectors import MessageRow

TEMPLATE = "conversations/chat.html#message"

# Unguessable and the same in every process (a fragment may be stored by one and used by another).
_PLACEHOLDER = SimpleLazyObject(
    lambda: "csrf-" + salted_hmac("chatsite.fragments", "csrf-placeholder").hexdigest()
)


_SHOWN = ("role", "status", "superseded", "finish_reason", "error_message", "model",
          "html_version", "created_at", "content", "content_html", "context_omitted")
_shown_in_row = operator.itemgetter(*(MessageRow.INDEX[name] for name in _SHOWN))


def _viewing() -> str:
    """What every fragment's key shares for this request: the language and the time zone."""
    return f"{VERSION}:{translation.get_language() or ''}:{timezone.get_current_timezone_name()}"


def _key(row: MessageRow | Message, viewing: str, readonly: bool) -> str:
    """The cache key of a finished message's fragment: everything the fragment shows."""
    shown = (_shown_in_row(row.values) if isinstance(row, MessageRow)
             else tuple(getattr(row, name) for name in _SHOWN))
    digest = hashlib.blake2b(repr(shown).encode("utf-8", "surrogatepass"),
                             digest_size=16).hexdigest()
    controls = "o" if readonly else ("r" if row.offers_retry else "-")
    return f"message:{viewing}:{row.pk}:{controls}:{digest}"


def _render(message: Message, readonly: bool) -> str:
    return render_to_string(TEMPLATE, {"message": message, "readonly": readonly,
                                       "csrf_token": str(_PLACEHOLDER)})


def render_messages(request, rows: list[MessageRow | Message], *, readonly: bool = False
                    ) -> SafeString:
    """Return the HTML of ``rows`` — ``MessageRow``s, or messages marked with ``offers_retry`` —
    for ``request``'s viewer: finished ones from the cache where it has them, the rest rendered
    now. ``readonly``: without the owner's controls, for a recipient of a shared conversation."""
    cache = local_cache()
    viewing = _viewing()
    keys = {row.pk: _key(row, viewing, readonly) for row in rows
            if row.status not in Message.UNFINISHED}
    found = cache.get_many(keys.values()) if keys else {}
    parts, new = [], {}
    for row in rows:
        key = keys.get(row.pk)
        fragment = found.get(key) if key else None
        if fragment is None:
            fragment = _render(row.message() if isinstance(row, MessageRow) else row, readonly)
            if key:
                new[key] = fragment
        parts.append(fragment)
    if new:
        cache.set_many(new)
    html = "".join(parts)
    if not html:
        return mark_safe("")
    # The fragments were rendered by our template; the token is [A-Za-z0-9].
    return mark_safe(html.replace(str(_PLACEHOLDER), get_token(request)))


def render_message(request, message: Message, *, readonly: bool = False) -> SafeString:
    """Return one message's HTML (``message.offers_retry`` set) for ``request``'s viewer."""
    return render_messages(request, [message], readonly=readonly)
