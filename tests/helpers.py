"""Helpers shared by the test files (which do not import each other).

``page`` reads a test-client response into a small element tree (stdlib ``html.parser``), so
that tests check elements and their attributes, not spelling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)
    children: list[Element] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Return the descendants with ``tag`` and these attribute values (``class_`` → class)."""
        wanted = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                child.attrs.get(name) == value for name, value in wanted.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID_TAGS:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        for element in self.stack[1:]:
            element.parts.append(data)


def page(response) -> Element:
    """Return the parsed HTML of a test-client response."""
    builder = _TreeBuilder()
    builder.feed(response.content.decode())
    builder.close()
    return builder.root


# -- Admin forms -----------------------------------------------------------------------------


def form_data(response, form_id: str = "group_form") -> dict[str, list[str]]:
    """Return what a browser would submit from the page's form ``form_id``, as shown (the
    inlines' empty templates left out)."""
    form = page(response).find("form", id=form_id)
    data: dict[str, list[str]] = {}
    for element in form.find_all():
        name = element.attrs.get("name")
        if not name or "__prefix__" in name:
            continue
        kind = element.attrs.get("type", "text")
        if element.tag == "input" and kind not in ("submit", "button", "image", "file"):
            if kind not in ("checkbox", "radio"):
                data.setdefault(name, []).append(element.attrs.get("value", ""))
            elif "checked" in element.attrs:
                data.setdefault(name, []).append(element.attrs.get("value") or "on")
        elif element.tag == "select":
            options = element.find_all("option")
            chosen = [option for option in options if "selected" in option.attrs]
            if not chosen and options and "multiple" not in element.attrs:
                chosen = options[:1]
            data[name] = [option.attrs.get("value", option.text) for option in chosen]
        elif element.tag == "textarea":
            data[name] = ["".join(element.parts).removeprefix("\n")]
    return data


# -- Browser screens -------------------------------------------------------------------------

PHONE = {"width": 390, "height": 844}
# Browser context options of the two screens a behaviour is checked on: together they cover
# both sizes and both colour schemes.
SCREENS = {
    "desktop, light": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "light"},
    "phone, dark": {"viewport": PHONE, "color_scheme": "dark", "is_mobile": True,
                    "has_touch": True},
}


# -- Replies -----------------------------------------------------------------------------------


def send_message(client, key, text: str = "Hello", model: str = "gpt-4o-mini",
                 conversation=None):
    """Post a message as a member's browser without htmx would; return the pending reply."""
    from conversations.models import Message

    url = f"/c/{conversation.pk}/messages" if conversation else "/c/new/messages"
    response = client.post(url, {"content": text, "model": f"{key.pk}:{model}"})
    assert response.status_code == 302, response.content[:500]
    return Message.objects.filter(role="assistant").latest("id")


def finished_reply(reply, timeout: float = 10):
    """Wait until ``reply`` is final; return it fresh from the database."""
    from conftest import wait_for
    from conversations.models import Message

    return wait_for(
        lambda: (m := Message.objects.get(pk=reply.pk)).status not in Message.UNFINISHED and m,
        timeout,
    )


# -- Child processes ---------------------------------------------------------------------------


def clean_env(tmp_path, **extra: str) -> dict[str, str]:
    """Return an environment for a child process with its own data directory and none of this
    process's chatsite settings."""
    import os

    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DJANGO_", "CHATSITE_")) and name != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="chatsite.settings", CHATSITE_DATA_DIR=str(tmp_path),
               PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


# -- The URLconf -------------------------------------------------------------------------------


def url_patterns() -> list:
    """Return (route, namespaced name, pattern) for every URL pattern, included ones too."""
    from django.urls import URLResolver, get_resolver

    def walk(patterns, prefix: str, namespace: str | None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = namespace
                if pattern.namespace:
                    inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            else:
                name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
                yield prefix + str(pattern.pattern), name, pattern

    return list(walk(get_resolver().url_patterns, "", None))


def is_admin(name: str | None, route: str) -> bool:
    """Return whether a pattern is one of the admin site's own (``admin:`` or unnamed there)."""
    return (name or "").startswith("admin:") or (name is None and route.startswith("admin/"))


# -- Attachments -------------------------------------------------------------------------------


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG", color=(200, 30, 30),
                **save) -> bytes:
    """Return an image of one colour, encoded as ``fmt`` (Pillow), with ``save`` options."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, fmt, **save)
    return out.getvalue()


def pdf_bytes(text: str = "Quarterly report: revenue grew") -> bytes:
    """Return a one-page PDF showing ``text`` (ASCII) in Helvetica."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


@contextmanager
def migrated_back_to(*targets: tuple[str, str]) -> Iterator:
    """Run the block on the test database migrated back to ``targets``; yield the models as they
    were then (an ``Apps``). Afterwards, whatever happened, migrate it forward to the latest."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    try:
        executor.migrate(list(targets))
        yield executor.loader.project_state(list(targets)).apps
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("conversations"))
