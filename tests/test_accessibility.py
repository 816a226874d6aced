"""axe-core on every page a member sees, light and dark, desktop and phone: nothing serious.

axe-core comes from npm, pinned in package.json/package-lock.json at the repository root and
installed into node_modules/ by scripts/test; only these tests use it, the site ships no npm code.

The site's Content-Security-Policy allows scripts from its own origin only, so axe cannot be added
as a <script> tag (Playwright's ``add_script_tag(path=...)`` inlines the file, which the policy
refuses). It is evaluated through the DevTools protocol instead (``page.evaluate``), which the
policy does not govern: the page keeps its real policy, and so looks and behaves as it does for a
member. (``bypass_csp=True`` would also work, but then a page that only renders right without its
policy would pass.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import log_in, watch
from devtools.fake_upstream import Scenario

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = {"serious", "critical"}
SIZES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
MARKDOWN_REPLY = [
    "Here is a function:\n\n",
    "```python\ndef greet(name: str) -> str:\n    # Say hello.\n    return f\"Hello, {name}!\"\n```\n\n",
    "| Model | Tokens |\n|:--|--:|\n| gpt-4o-mini | 42 |\n| gpt-4o | 7 |\n\n",
    "See [the documentation](https://example.com/docs) for more.",
]


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: scripts/test installs axe-core (npm ci)")
    return AXE.read_text()


def serious_violations(page, axe_source: str) -> list[dict]:
    """Run axe on the page as it is now; return its serious and critical violations."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in FAILING_IMPACTS]


def describe(where: str, violations: list[dict]) -> list[str]:
    """Return one line per violation: rule, impact, help, the first targets and what failed."""
    lines = []
    for violation in violations:
        targets = [" ".join(map(str, node["target"])) for node in violation["nodes"][:3]]
        more = len(violation["nodes"]) - len(targets)
        checks = violation["nodes"][0]["any"] or violation["nodes"][0]["all"]
        detail = f"\n    {checks[0]['message']}" if checks else ""
        lines.append(f"{where}: {violation['id']} ({violation['impact']}) {violation['help']}"
                     f" — {targets}{f' and {more} more' if more > 0 else ''}{detail}")
    return lines


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_member_pages_have_no_serious_or_critical_axe_violations(
    browser, live_url, user, api_key, fake_upstream, axe_source, scheme, size
):
    from conftest import PASSWORD
    from conversations.models import ApiKey, Preset, UserLimit

    Preset.objects.create(name="Translator", everyone=True, api_key=api_key, model="gpt-4o",
                          instructions="Translate into Korean.")
    fake_upstream.queue(Scenario(tokens=MARKDOWN_REPLY, send_usage=False),
                        Scenario(tokens=MARKDOWN_REPLY),
                        Scenario(tokens=["Too late"], hang_after=0),
                        Scenario(tokens=["Still", " writing", " this", "..."], hang_after=3))
    context = browser.new_context(base_url=live_url, color_scheme=scheme, **SIZES[size])
    page = context.new_page()
    errors = watch(page)
    found: list[str] = []

    def check(where: str, url: str | None = None, status: int = 200) -> None:
        if url is not None:
            response = page.goto(url)
            assert response.status == status, f"{url} answered {response.status}"
        found.extend(describe(f"{where} [{scheme}, {size}]", serious_violations(page, axe_source)))

    check("login page", "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").wait_for()
    check("login page with an error")
    log_in(page, "alice")
    check("new chat")
    if size == "phone":
        page.get_by_role("button", name="Menu").click()
        check("new chat, menu open")
        page.keyboard.press("Escape")
    settings = page.locator("details.chat-settings > summary")
    settings.click()
    check("new chat, chat settings open")
    settings.click()

    page.get_by_role("textbox", name="Message").fill("Show me Markdown")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    page.locator("article.message--assistant.message--complete").wait_for(timeout=10000)
    conversation = page.url
    page.get_by_role("button", name="Regenerate").click()
    page.get_by_text("Earlier version of the reply").wait_for(timeout=10000)
    page.locator("article.message--assistant.message--complete:not(.message--superseded)").wait_for(
        timeout=10000)
    check("finished reply after an earlier version", conversation)
    page.locator("details.earlier").first.locator("summary").click()
    check("finished reply, earlier version open")

    page.get_by_role("textbox", name="Message").fill("Think first")
    page.get_by_role("button", name="Send").click()
    page.locator(".message__waiting").wait_for(timeout=10000)
    check("waiting for the model")
    page.get_by_role("textbox", name="Message").fill("Meanwhile")
    page.get_by_role("textbox", name="Message").press("Enter")
    page.get_by_role("alert").get_by_text("Wait for the reply to finish").wait_for(timeout=5000)
    check("a second message refused while waiting")
    page.locator("#composer").get_by_role("button", name="Stop").click()
    page.locator("article.message--assistant").last.get_by_text(
        "Stopped: the reply is incomplete.").wait_for(timeout=5000)

    page.get_by_role("textbox", name="Message").fill("Keep writing")
    page.get_by_role("button", name="Send").click()
    streaming = page.locator("article.message--assistant .message__body--streaming")
    streaming.filter(has_text="Still writing this").wait_for(timeout=10000)
    check("streaming reply")
    page.locator("article.message--assistant").last.get_by_role("button", name="Stop").click()
    page.locator("article.message--assistant").last.get_by_text(
        "Stopped: the reply is incomplete.").wait_for(timeout=5000)
    check("stopped reply")

    check("delete page", f"{conversation}delete")
    UserLimit.objects.create(user=user, monthly_token_budget=10)  # used up: meter and notice
    check("usage page", "/usage/")
    page.get_by_text("Tokens by day as a table").click()
    check("usage page, days table open")
    check("import page", "/import/")
    check("search results", "/search/?q=Hello")
    check("search without results", "/search/?q=nothing-matches-this")
    check("archived conversations", "/archived/")
    check("conversations shared with me", "/shared/")
    check("password change page", "/accounts/password_change/")
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a new and longer passphrase")
    page.get_by_label("New password confirmation").fill("not the same passphrase")
    page.get_by_role("button", name="Change my password").click()
    page.get_by_role("alert").wait_for()
    check("password change page with an error")
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a new and longer passphrase")
    page.get_by_label("New password confirmation").fill("a new and longer passphrase")
    page.get_by_role("button", name="Change my password").click()
    page.get_by_role("heading", name="Your password was changed").wait_for()
    check("password changed page")
    check("404 page", "/c/999999/", status=404)
    # The member's own choice, against the system's: the palette's other copy in chat.css.
    page.goto(conversation)
    if size == "phone":
        page.get_by_role("button", name="Menu").click()
    page.get_by_role("switch", name="Dark mode").click()
    page.wait_for_load_state()
    flipped = "light" if scheme == "dark" else "dark"
    assert page.locator("html").get_attribute("data-theme") == flipped
    check(f"conversation after choosing {flipped}")
    ApiKey.objects.update(is_active=False)
    check(f"new chat without a model to use, {flipped}", "/")
    context.close()

    assert not found, "serious or critical axe violations:\n" + "\n".join(found)
    assert not errors, f"JavaScript errors or policy violations on the page: {errors}"
