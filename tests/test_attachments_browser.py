"""Attaching images in the browser: by the file picker, by drag and drop and by paste, each ending
in the exact content parts the fake upstream receives; a model without vision refuses before
anything is sent; another member gets a 404 for the image."""

from __future__ import annotations

import base64
import re

import pytest

from conftest import log_in, wait_for
from conversations.models import Attachment, Message
from devtools.fake_upstream import Scenario
from tests.helpers import image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PNG = image_bytes(40, 30)

# Builds a File in the page and hands it over as a drop or a paste would.
DROP = """([name, data]) => {
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  const target = document.querySelector("#composer textarea");
  target.dispatchEvent(new DragEvent("dragover", {bubbles: true, cancelable: true, dataTransfer: transfer}));
  target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: transfer}));
}"""
PASTE = """([name, data]) => {
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  const target = document.querySelector("#composer textarea");
  target.focus();
  target.dispatchEvent(new ClipboardEvent("paste", {bubbles: true, cancelable: true, clipboardData: transfer}));
}"""


def attach(page, way: str, name: str) -> None:
    if way == "picker":
        page.get_by_label("Attach", exact=True).set_input_files(
            [{"name": name, "mimeType": "image/png", "buffer": PNG}])
    else:
        page.evaluate(DROP if way == "drop" else PASTE, [name, base64.b64encode(PNG).decode()])


@pytest.mark.parametrize("way", ["picker", "drop", "paste"])
def test_an_image_attached_by_each_way_reaches_the_model_as_exact_content_parts(
        screen, way, user, api_key, fake_upstream):
    page = screen
    fake_upstream.queue(Scenario(tokens=["A ", "red ", "square."]))
    log_in(page, "alice")

    detail = page.get_by_label("Image detail")
    assert not detail.is_visible()  # no room taken until an image is attached
    attach(page, way, f"{way}.png")
    chip = page.locator(".composer__chip")
    chip.wait_for()
    assert chip.count() == 1 and f"{way}.png" in chip.inner_text()
    assert detail.is_visible()
    page.get_by_label("Message").fill("What is this?")
    page.get_by_label("Message").press("Enter")

    page.wait_for_url(re.compile(r"/c/\d+/$"))
    wait_for(lambda: Message.objects.filter(role="assistant", status="complete").exists())
    attachment = Attachment.objects.get()
    with attachment.file.storage.open(attachment.file.name, "rb") as stored:
        url = "data:image/png;base64," + base64.b64encode(stored.read()).decode()
    assert fake_upstream.chat_requests[-1].body["messages"][-1] == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
    ]}
    image = page.locator("article.message--user img.attachments__image")
    image.wait_for()
    assert image.get_attribute("alt") == f"{way}.png"
    # Served and decoded: wait until the browser has loaded it (or given up on it).
    page.wait_for_function("img => img.complete", arg=image.element_handle())
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 40


def test_a_model_without_vision_refuses_the_image_before_sending_and_keeps_everything(
        screen, user, api_key, fake_upstream):
    page = screen
    fake_upstream.default = Scenario(models=["gpt-4o-mini", "gpt-3.5-turbo"])
    from conversations import catalog

    catalog.refresh(api_key)
    log_in(page, "alice")
    page.get_by_label("Model").select_option(label="gpt-3.5-turbo")
    attach(page, "picker", "cat.png")
    warning = page.locator(".composer__no-vision")
    assert warning.is_visible()

    page.get_by_label("Message").fill("Describe it")
    page.get_by_label("Message").press("Enter")
    page.wait_for_timeout(500)

    assert fake_upstream.chat_requests == []
    assert not Message.objects.exists()
    assert page.get_by_label("Message").input_value() == "Describe it"
    assert page.locator(".composer__chip").count() == 1
    page.get_by_label("Model").select_option(label="gpt-4o-mini")
    assert not warning.is_visible()


def test_another_member_gets_a_404_for_the_image(browser, live_url, user, other_user, api_key,
                                                 fake_upstream):
    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    log_in(page, "alice")
    attach(page, "picker", "private.png")
    page.get_by_label("Message").fill("Mine")
    page.get_by_label("Message").press("Enter")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    attachment = wait_for(lambda: Attachment.objects.first())
    wait_for(lambda: Message.objects.filter(role="assistant", status="complete").exists())
    assert page.request.get(f"/a/{attachment.pk}").status == 200
    context.close()

    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    log_in(page, "mallory")
    assert page.request.get(f"/a/{attachment.pk}").status == 404
    assert page.goto(f"/a/{attachment.pk}").status == 404
    context.close()
