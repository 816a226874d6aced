"""Text from outside (model output, upstream errors, members' input) made safe to store and show.

Two concerns, one module:

- ``clean``: what a database will not store. PostgreSQL refuses a NUL byte in text, and neither
  engine's driver can encode an unpaired UTF-16 surrogate (JSON's ``"\\ud800"`` decodes to one).
  In text from outside (model output, provider errors) both are dropped or replaced at the edge
  where it enters, the same on both engines, so what the browser showed is what is stored; a
  member's own NUL is refused with a form error instead (``has_unstorable`` tells).
- ``isolate``: bidirectional controls (right-to-left override and friends) inside a title, a
  username or model output must not reorder the text around it. HTML isolates with ``<bdi>`` or
  ``unicode-bidi: isolate``; plain-text places (a page title) use ``isolate``, which balances the
  controls inside and wraps the whole in FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE. Values
  that are also data (a CSV cell) use ``isolate_if_needed``, which leaves text without a control
  as it is.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
# NUL, and unpaired surrogates (a str holding one cannot be encoded as UTF-8).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")

# Embeddings and overrides end with PDF; isolates end with PDI.
LRE, RLE, PDF, LRO, RLO = "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"
LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"
_EMBEDDINGS = {LRE, RLE, LRO, RLO}
_ISOLATES = {LRI, RLI, FSI}
BIDI_CONTROLS = LRE + RLE + PDF + LRO + RLO + LRI + RLI + FSI + PDI
_BIDI_CONTROLS = re.compile(f"[{BIDI_CONTROLS}]")


def clean(text: str) -> str:
    """Return ``text`` without what a database cannot store: NUL bytes are dropped, unpaired
    surrogates become U+FFFD."""
    if not text or not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda match: "" if match.group() == "\x00" else REPLACEMENT, text)


def has_unstorable(text: str) -> bool:
    """Return whether ``text`` holds a character ``clean`` would change."""
    return bool(text) and bool(_UNSTORABLE.search(text))


def balance_bidi(text: str) -> str:
    """Return ``text`` with its bidirectional controls balanced: closers without an opener are
    dropped, openers left open are closed at the end, so nothing leaks past the text."""
    if not text or not _BIDI_CONTROLS.search(text):
        return text
    out: list[str] = []
    stack: list[str] = []  # "e" for an open embedding/override, "i" for an open isolate
    for char in text:
        if char in _EMBEDDINGS:
            stack.append("e")
        elif char in _ISOLATES:
            stack.append("i")
        elif char == PDF:
            # A PDF closes the innermost embedding, but never one outside an open isolate.
            if not stack or stack[-1] != "e":
                continue
            stack.pop()
        elif char == PDI:
            if "i" not in stack:
                continue
            while stack.pop() != "i":  # a PDI also closes the embeddings inside its isolate
                pass
        out.append(char)
    out.extend(PDF if kind == "e" else PDI for kind in reversed(stack))
    return "".join(out)


def isolate(text: str) -> str:
    """Return ``text`` balanced and wrapped in an isolate, for places that cannot hold
    ``<bdi>`` (a page title, plain text, CSV)."""
    if not text:
        return text
    return FSI + balance_bidi(text) + PDI


def isolate_if_needed(text: str) -> str:
    """Return ``text`` isolated if it holds a bidirectional control, else unchanged: for values
    read back as data (a CSV cell), which should change only when they could reorder others."""
    if not text or not _BIDI_CONTROLS.search(text):
        return text
    return isolate(text)
