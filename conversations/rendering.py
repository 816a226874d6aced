"""Turn model output (untrusted text) into safe HTML.

Markdown is rendered by markdown-it-py with raw HTML off, code is highlighted by Pygments, and the
result goes through nh3 (an allow-list sanitizer) all the same, so no tag, attribute or URL scheme
outside the list below can reach the page. Images are shown as links, never fetched: a remote
image would tell a third party who read the reply, and when.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
    "span", "div",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "ol": {"start"},
}
# The rules' version: HTML stored with an older one (``Message.content_html``) is rendered again.
VERSION = 1

# Column alignment of Markdown tables, as classes: style attributes would break the CSP.
ALIGNMENTS = {"align-left", "align-center", "align-right"}


def _highlight(code: str, language: str, _attrs: object) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""  # markdown-it escapes and wraps it itself
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f'<pre class="highlight"><code class="language-{escape(language)}">{body}</code></pre>'


def _alignment_as_class(state) -> None:
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and token.attrs.get("style"):
            style = str(token.attrs.pop("style"))
            token.attrSet("class", "align-" + style.partition(":")[2].strip(" ;"))


def _image_as_link(_renderer, tokens, index, _options, _env) -> str:
    token = tokens[index]
    src = token.attrGet("src") or ""
    alt = "".join(child.content for child in token.children or []) or src
    return f'<a href="{escape(src)}">{escape("🖼 " + alt)}</a>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_link)
    md.core.ruler.push("alignment_as_class", _alignment_as_class)
    return md


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        allowed_classes={"th": ALIGNMENTS, "td": ALIGNMENTS},
    )


def render_markdown(text: str) -> SafeString:
    """Return ``text`` (Markdown from a model) as sanitized HTML."""
    return mark_safe(sanitize(_markdown().render(text)))


_FENCE = ("```", "~~~")


class BlockSplitter:
    """Finds the finished Markdown blocks of a text that arrives in pieces (a streaming reply).

    A block is finished at a blank line outside a code fence. ``feed`` returns the blocks that
    finished with the new text (to be rendered once), and ``tail`` is the open rest, shown as
    plain text until it finishes. Linear: each line is looked at once, when it ends (a long line
    is kept as pieces until then), and the open tail is kept as pieces, joined only when a block
    finishes.
    """

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._length = 0  # of the open tail
        self._line: list[str] = []  # the open tail's last, unfinished line, in pieces
        self._fenced = False

    @property
    def tail(self) -> str:
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def feed(self, text: str) -> str:
        """Add ``text``; return the blocks it finished (empty if none)."""
        if not text:
            return ""
        self._pieces.append(text)
        self._length += len(text)
        if "\n" not in text:  # the line goes on: joined once, when it ends
            self._line.append(text)
            return ""
        *lines, last = ("".join(self._line) + text).split("\n")
        self._line = [last] if last else []
        end = 0
        position = self._length - len(last) - sum(len(line) + 1 for line in lines)
        for line in lines:
            start, position = position, position + len(line) + 1
            stripped = line.strip()
            if stripped.startswith(_FENCE):
                self._fenced = not self._fenced
            elif not stripped and not self._fenced and start > 0:
                end = position
        if not end:
            return ""
        tail = self.tail
        finished, rest = tail[:end], tail[end:]
        self._pieces, self._length = ([rest] if rest else []), len(rest)
        return finished


def split_blocks(text: str) -> tuple[str, str]:
    """Return ``text`` as (its finished blocks, its open tail)."""
    splitter = BlockSplitter()
    return splitter.feed(text), splitter.tail
