"""Images and files in a message: checked and converted on upload, sent upstream as OpenAI's
content parts (the fake upstream records exactly what it received), served only to those who
may read the conversation and never as a page, kept by edits and regenerations, gone with the
conversation."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from conversations import services
from conversations.models import Attachment, Conversation, Message, Share, UsageDaily
from devtools.fake_upstream import Scenario
from tests.helpers import finished_reply, image_bytes, page, pdf_bytes

IN_TRANSACTIONS = pytest.mark.django_db(transaction=True)


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def send(client, key, text="What is in this picture?", files=(), model="gpt-4o-mini",
         conversation=None, **extra):
    url = f"/c/{conversation.pk}/messages" if conversation else "/c/new/messages"
    return client.post(url, {"content": text, "model": f"{key.pk}:{model}",
                             "attachments": list(files), **extra})


def sent_messages(fake_upstream, index=-1) -> list[dict]:
    return fake_upstream.chat_requests[index].body["messages"]


def stored_bytes(attachment: Attachment) -> bytes:
    with attachment.file.storage.open(attachment.file.name, "rb") as stored:
        return stored.read()


def data_url(attachment: Attachment) -> str:
    return (f"data:{attachment.content_type};base64,"
            f"{base64.b64encode(stored_bytes(attachment)).decode()}")


@pytest.fixture
def vision_and_text_models(fake_upstream):
    """The fake lists a vision model and one without image input."""
    fake_upstream.default = Scenario(models=["gpt-4o-mini", "gpt-3.5-turbo"])


@IN_TRANSACTIONS
def test_image_is_sent_upstream_as_an_image_url_content_part_with_the_chosen_detail(
        alice, api_key, fake_upstream):
    response = send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")],
                    image_detail="low")

    assert response.status_code == 302
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert reply.status == "complete"
    attachment = Attachment.objects.get()
    assert (attachment.kind, attachment.content_type, attachment.name) == (
        "image", "image/png", "cat.png")
    assert sent_messages(fake_upstream)[-1] == {"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": data_url(attachment), "detail": "low"}},
    ]}


@IN_TRANSACTIONS
def test_an_image_alone_asks_its_question_and_names_the_conversation(alice, api_key, fake_upstream):
    response = send(alice, api_key, text="", files=[upload("receipt.png", image_bytes())])

    assert response.status_code == 302
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    attachment = Attachment.objects.get()
    assert sent_messages(fake_upstream)[-1] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(attachment), "detail": "auto"}},
    ]}
    assert Conversation.objects.get().title == "receipt.png"


@pytest.mark.django_db
def test_neither_text_nor_a_file_is_refused_with_a_message(alice, api_key, fake_upstream):
    response = send(alice, api_key, text="   ")

    assert "Write a message first." in response.content.decode()
    assert not Message.objects.exists() and not fake_upstream.chat_requests


@IN_TRANSACTIONS
def test_without_a_choice_the_detail_is_auto_and_a_message_without_files_stays_plain_text(
        alice, api_key, fake_upstream):
    send(alice, api_key, files=[upload("a.webp", image_bytes(fmt="WEBP"), "image/webp")])
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    conversation = Conversation.objects.get()
    send(alice, api_key, text="And now?", conversation=conversation)
    finished_reply(Message.objects.filter(role="assistant").latest("id"))

    first, second = fake_upstream.chat_requests
    image = first.body["messages"][-1]["content"][1]
    assert image["image_url"]["detail"] == "auto"
    assert image["image_url"]["url"].startswith("data:image/webp;base64,")
    assert second.body["messages"][-1] == {"role": "user", "content": "And now?"}
    assert second.body["messages"][0]["content"][1] == image  # the history keeps the image


@pytest.mark.django_db
def test_jpeg_loses_its_exif_location_and_is_reduced_to_what_the_model_uses():
    from conversations import uploads

    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {2: (48.0, 51.0, 24.0), 1: "N"}  # GPS latitude
    original = image_bytes(3000, 1000, "JPEG", exif=exif.tobytes())
    assert b"SpyCam" in original

    prepared = uploads.prepare(upload("holiday.jpg", original, "image/jpeg"))

    stored = Image.open(io.BytesIO(prepared.data))
    assert (prepared.content_type, stored.format) == ("image/jpeg", "JPEG")
    assert (prepared.width, prepared.height) == stored.size == (2048, 683)
    assert not stored.getexif()
    assert b"SpyCam" not in prepared.data and b"Exif" not in prepared.data


@IN_TRANSACTIONS
def test_text_files_and_a_pdfs_text_are_sent_as_text_parts_with_their_names(
        alice, api_key, fake_upstream):
    files = [upload("notes.md", b"# Plan\n- ship it\n", "text/markdown"),
             upload("data.csv", b"a,b\n1,2\n", "text/csv"),
             upload("report.pdf", pdf_bytes(), "application/pdf")]

    response = send(alice, api_key, text="Summarise these", files=files)

    assert response.status_code == 302
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert sent_messages(fake_upstream)[-1]["content"] == [
        {"type": "text", "text": "Summarise these"},
        {"type": "text", "text": '<file name="notes.md">\n# Plan\n- ship it\n\n</file>'},
        {"type": "text", "text": '<file name="data.csv">\na,b\n1,2\n\n</file>'},
        {"type": "text", "text": '<file name="report.pdf">\nQuarterly report: revenue grew\n</file>'},
    ]


@IN_TRANSACTIONS
def test_images_for_a_model_without_vision_are_refused_before_anything_is_sent(
        vision_and_text_models, alice, api_key, fake_upstream):
    response = send(alice, api_key, text="Describe this", model="gpt-3.5-turbo",
                    files=[upload("cat.png", image_bytes(), "image/png")])

    assert response.status_code == 400
    errors = page(response).find(id="form-errors").text
    assert "gpt-3.5-turbo does not take images" in errors
    assert page(response).find("textarea", name="content").text == "Describe this"
    assert not Message.objects.exists() and not Attachment.objects.exists()
    assert fake_upstream.chat_requests == []


@pytest.mark.django_db
def test_the_model_options_say_which_models_take_images(vision_and_text_models, alice, api_key):
    options = {option.attrs["value"]: option for option in
               page(alice.get("/")).find("select", name="model").find_all("option")}

    assert "data-vision" in options[f"{api_key.pk}:gpt-4o-mini"].attrs
    assert "data-vision" not in options[f"{api_key.pk}:gpt-3.5-turbo"].attrs
    attach = page(alice.get("/")).find("input", name="attachments")
    assert attach.attrs["type"] == "file" and "multiple" in attach.attrs


@IN_TRANSACTIONS
def test_only_readers_of_the_conversation_get_the_image_others_get_404(
        alice, api_key, fake_upstream, other_user):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")])
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    attachment = Attachment.objects.get()
    url = f"/a/{attachment.pk}"

    owner = alice.get(url)
    assert owner.status_code == 200
    assert b"".join(owner.streaming_content) == stored_bytes(attachment)

    from django.test import Client

    other = Client()
    other.force_login(other_user)
    assert other.get(url).status_code == 404
    Share.objects.create(conversation=attachment.message.conversation, user=other_user,
                         created_by=attachment.message.conversation.owner)
    assert other.get(url).status_code == 200
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


@IN_TRANSACTIONS
def test_attachments_are_served_with_the_decoded_type_nosniff_a_sandbox_and_files_as_downloads(
        alice, api_key, fake_upstream):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "text/html"),
                                upload("page.html", b"<script>alert(1)</script>", "text/html")])
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    image, html = Attachment.objects.order_by("id")

    served_image = alice.get(f"/a/{image.pk}")
    served_html = alice.get(f"/a/{html.pk}")

    assert served_image["Content-Type"] == "image/png"
    assert not served_image.get("Content-Disposition", "").startswith("attachment")
    assert served_html["Content-Type"] == "text/plain; charset=utf-8"
    assert served_html["Content-Disposition"].startswith("attachment;")
    for response in (served_image, served_html):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response["Content-Security-Policy"]
        assert "default-src 'none'" in response["Content-Security-Policy"]


@IN_TRANSACTIONS
def test_the_page_shows_the_image_and_the_file_of_a_message(alice, api_key, fake_upstream):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png"),
                                upload("notes.txt", b"hello", "text/plain")])
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    image, text = Attachment.objects.order_by("id")

    shown = page(alice.get(f"/c/{reply.conversation_id}/"))

    assert shown.find("img", src=f"/a/{image.pk}").attrs["alt"] == "cat.png"
    assert "notes.txt" in shown.find("a", href=f"/a/{text.pk}").text


@IN_TRANSACTIONS
def test_regenerate_and_edit_keep_the_attachments(alice, api_key, fake_upstream):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")])
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    question = Message.objects.get(role="user")
    parts = sent_messages(fake_upstream, 0)[-1]["content"]

    alice.post(f"/m/{reply.pk}/retry")
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert sent_messages(fake_upstream, 1)[-1]["content"] == parts

    alice.post(f"/m/{question.pk}/edit", {"content": "What is in this picture?"})
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert sent_messages(fake_upstream, 2)[-1]["content"] == parts
    edited = Message.objects.filter(role="user", superseded=False).get()
    assert edited.pk != question.pk and edited.attachments.count() == 1


def stored_files(storage, folder: str = "") -> set[str]:
    """Every file name in ``storage`` under ``folder``."""
    folders, files = storage.listdir(folder) if storage.exists(folder) else ([], [])
    found = {f"{folder}/{name}".lstrip("/") for name in files}
    for name in folders:
        found |= stored_files(storage, f"{folder}/{name}".lstrip("/"))
    return found


@pytest.mark.django_db
def test_a_message_whose_transaction_fails_leaves_no_file_in_storage(api_key, user,
                                                                    monkeypatch):
    """The file is stored before the rows commit: if they are rolled back (here the reply's
    insert fails), the file goes too, and nothing names a file that is not there."""
    from django.core.files.storage import storages
    from django.db import DatabaseError

    from conversations import uploads

    storage = storages["attachments"]
    before = stored_files(storage)
    image = uploads.prepare(upload("cat.png", image_bytes(), "image/png"))

    def fails(**kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(services, "_queue_reply", fails)
    with pytest.raises(DatabaseError):
        services.message_send(owner=user, conversation=None, content="What is this?",
                              api_key=api_key, model="gpt-4o-mini", files=[image])

    assert not Attachment.objects.exists() and not Message.objects.exists()
    assert stored_files(storage) == before


@IN_TRANSACTIONS
def test_files_leave_storage_with_the_conversation_once_no_message_names_them(
        alice, api_key, fake_upstream, user):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")])
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    question = Message.objects.get(role="user")
    alice.post(f"/m/{question.pk}/edit", {"content": "Again"})  # a second row, the same file
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    attachment = Attachment.objects.first()
    storage, name = attachment.file.storage, attachment.file.name
    assert Attachment.objects.filter(file=name).count() == 2 and storage.exists(name)

    response = alice.post(f"/c/{reply.conversation_id}/delete")

    assert response.status_code == 302
    assert not Attachment.objects.exists()
    assert not storage.exists(name)


@IN_TRANSACTIONS
def test_usage_records_the_image_tokens_the_provider_reports(alice, api_key, fake_upstream):
    fake_upstream.queue(Scenario(tokens=["A cat."], usage={
        "prompt_tokens": 800, "completion_tokens": 3, "total_tokens": 803,
        "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": 765}}))

    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")])

    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    assert (reply.prompt_tokens, reply.image_tokens) == (800, 765)
    assert UsageDaily.objects.get().image_tokens == 765  # in the day's totals too
    assert page(alice.get("/usage/")).find(id="total-image").text == "765"
    exported = alice.get(f"/c/{reply.conversation_id}/export", {"format": "json"}).json()
    assert exported["messages"][-1]["usage"]["image_tokens"] == 765  # and an import keeps it


@IN_TRANSACTIONS
def test_a_copy_of_a_shared_conversation_keeps_its_attachments(
        alice, api_key, fake_upstream, user, other_user):
    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png")])
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))

    copy = services.conversation_copy(conversation=reply.conversation, owner=other_user)

    copied = Attachment.objects.get(message__conversation=copy)
    assert copied.file.name == Attachment.objects.get(message__conversation=reply.conversation
                                                      ).file.name


@pytest.mark.django_db
def test_too_many_files_are_refused_with_a_message(alice, api_key, settings):
    settings.CHATSITE_ATTACHMENT_MAX_FILES = 2
    files = [upload(f"n{i}.txt", b"x", "text/plain") for i in range(3)]

    response = send(alice, api_key, files=files)

    assert response.status_code == 400
    assert "Attach: Attach at most 2 files" in page(response).find(id="form-errors").text
    assert not Message.objects.exists()


@IN_TRANSACTIONS
def test_export_all_and_import_carry_the_attachments(alice, api_key, fake_upstream, user,
                                                     other_user):
    import zipfile

    send(alice, api_key, files=[upload("cat.png", image_bytes(), "image/png"),
                                upload("notes.md", b"# Notes", "text/markdown")],
         image_detail="high")
    finished_reply(Message.objects.filter(role="assistant").latest("id"))
    image, notes = Attachment.objects.order_by("id")

    from asgiref.sync import async_to_sync

    async def read(response) -> bytes:
        return b"".join([part async for part in response.streaming_content])

    archive = async_to_sync(read)(alice.get("/export/"))

    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        assert bundle.read(f"attachments/{image.pk}/cat.png") == stored_bytes(image)
        assert bundle.read(f"attachments/{notes.pk}/notes.md") == b"# Notes"
    from django.test import Client

    other = Client()
    other.force_login(other_user)
    response = other.post("/import/", {"file": upload("export.zip", archive, "application/zip")})
    assert response.status_code == 302, response.content[:300]
    imported = Attachment.objects.filter(message__conversation__owner=other_user).order_by("id")
    assert [(a.name, a.kind, a.detail) for a in imported] == [
        ("cat.png", "image", "high"), ("notes.md", "text", "")]
    assert stored_bytes(imported[0]) == stored_bytes(image)
    assert imported[1].text == "# Notes"
    assert imported[0].file.name != image.file.name


@pytest.mark.django_db
def test_an_archive_with_a_hostile_attachment_imports_nothing(alice, user):
    import json
    import zipfile

    data = {"format": "chatsite", "version": 1, "conversations": [{
        "id": 1, "title": "Evil", "created_at": "2026-01-01T00:00:00+00:00", "messages": [
            {"role": "user", "content": "Look",
             "attachments": [{"name": "x.png", "file": "attachments/1/x.png"}]}]}]}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        bundle.writestr("conversations.json", json.dumps(data))
        bundle.writestr("attachments/1/x.png", b"<script>alert(1)</script>")

    response = alice.post("/import/", {"file": upload("evil.zip", out.getvalue())})

    assert response.status_code == 400
    assert "is not an image this site takes" in response.content.decode()
    assert not Conversation.objects.exists() and not Attachment.objects.exists()


@IN_TRANSACTIONS
def test_the_catalogs_image_detail_applies_unless_the_member_chooses(alice, api_key,
                                                                      fake_upstream):
    from conversations.models import CatalogModel

    CatalogModel.objects.filter(api_key=api_key, model="gpt-4o-mini").update(image_detail="low")
    send(alice, api_key, files=[upload("a.png", image_bytes(), "image/png")])
    reply = finished_reply(Message.objects.filter(role="assistant").latest("id"))
    send(alice, api_key, text="Closer", conversation=reply.conversation, image_detail="high",
         files=[upload("b.png", image_bytes(), "image/png")])
    finished_reply(Message.objects.filter(role="assistant").latest("id"))

    first, second = (request.body["messages"][-1]["content"][1]["image_url"]["detail"]
                     for request in fake_upstream.chat_requests)
    assert (first, second) == ("low", "high")


@pytest.mark.django_db
def test_an_animated_gif_is_refused_and_a_still_gif_is_stored_as_png():
    from django.core.exceptions import ValidationError

    from conversations import uploads

    frames = [Image.new("RGB", (20, 20), color) for color in ("red", "blue")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100)

    with pytest.raises(ValidationError, match="is animated"):
        uploads.prepare(upload("dance.gif", animated.getvalue(), "image/gif"))
    still = uploads.prepare(upload("still.gif", image_bytes(fmt="GIF"), "image/gif"))
    assert (still.content_type, Image.open(io.BytesIO(still.data)).format) == ("image/png", "PNG")
