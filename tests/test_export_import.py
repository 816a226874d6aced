"""Export all of a member's conversations as one archive, and import them (or ChatGPT's).

The ChatGPT export here is built the way ChatGPT writes ``conversations.json``: a list of
conversations, each a ``mapping`` of nodes with a null-message root, a hidden system message,
an edited message (two user children of one node), a regenerated reply (two assistant children),
an image in a ``multimodal_text`` part, and a code call with its output.
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conftest import PASSWORD
from conversations.models import AuditEvent, Conversation, Message, UsageDaily
from conversations.rendering import VERSION
from tests.helpers import page as parse

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script> Look: <img src=x onerror=alert(1)> **bold**'
SECRET = "sk-test-export-must-never-hold-this-0123456789"


def body(response) -> bytes:
    """Read a streamed response the way a server would: piece by piece."""
    if response.is_async:
        async def read() -> bytes:
            return b"".join([part async for part in response.streaming_content])

        return async_to_sync(read)()
    return b"".join(response.streaming_content)


def upload(data, name: str = "conversations.json") -> SimpleUploadedFile:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return SimpleUploadedFile(name, raw, content_type="application/json")


def import_file(client: Client, data, name: str = "conversations.json"):
    return client.post("/import/", {"file": upload(data, name)})


def errors_of(response) -> str:
    return " ".join(element.text for element in parse(response).find_all(role="alert"))


# -- a ChatGPT export, as ChatGPT writes it ------------------------------------------------------


def node(node_id, parent, children, role=None, parts=None, *, time=None, content=None,
         hidden=False, model=None, recipient="all"):
    message = None
    if role is not None:
        metadata = {"is_visually_hidden_from_conversation": True} if hidden else {}
        if model:
            metadata["model_slug"] = model
        message = {
            "id": node_id, "author": {"role": role, "name": None, "metadata": {}},
            "create_time": time, "update_time": None,
            "content": content or {"content_type": "text", "parts": parts or [""]},
            "status": "finished_successfully", "end_turn": True, "weight": 1.0,
            "metadata": metadata, "recipient": recipient, "channel": None,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def chatgpt_export() -> list[dict]:
    t = 1_717_000_000.0
    trip = {
        "client-created-root": node("client-created-root", None, ["sys"]),
        "sys": node("sys", "client-created-root", ["u1", "u1b"], "system", [""], hidden=True),
        "u1": node("u1", "sys", ["a1"], "user", ["Where should I go?"], time=t + 1),
        "a1": node("a1", "u1", [], "assistant", ["Porto."], time=t + 2, model="gpt-4o"),
        # The member edited their first message: a second user child of the same node.
        "u1b": node("u1b", "sys", ["a2", "a3"], "user", ["Where should I go in Portugal?"],
                    time=t + 10),
        # ...and regenerated the reply to it: two assistant children.
        "a2": node("a2", "u1b", [], "assistant", ["Lisbon."], time=t + 11, model="gpt-4o"),
        "a3": node("a3", "u1b", ["u2"], "assistant", ["Lisbon, definitely."], time=t + 12,
                   model="gpt-4o"),
        "u2": node("u2", "a3", ["a4"], "user", time=t + 20, content={
            "content_type": "multimodal_text",
            "parts": [{"content_type": "image_asset_pointer",
                       "asset_pointer": "file-service://file-Abc123", "size_bytes": 123456,
                       "width": 1024, "height": 768, "fovea": None, "metadata": None},
                      "What is this building?"]}),
        "a4": node("a4", "u2", ["a5"], "assistant", [HOSTILE], time=t + 21, model="gpt-4o"),
        "a5": node("a5", "a4", ["t1"], "assistant", time=t + 22, recipient="python",
                   content={"content_type": "code", "language": "python",
                            "text": "print(1 + 1)"}),
        "t1": node("t1", "a5", ["a6"], "tool", time=t + 23, content={
            "content_type": "execution_output", "text": "2"}),
        "a6": node("a6", "t1", [], "assistant", ["The sum is 2."], time=t + 24,
                   model="gpt-4o"),
    }
    recipe = {
        "root": node("root", None, ["s1"]),
        "s1": node("s1", "root", ["q"], "system", [""], hidden=True),
        "q": node("q", "s1", ["r"], "user", ["Carrot cake recipe?"], time=t + 100),
        "r": node("r", "q", [], "assistant", ["Grate the carrots."], time=t + 101,
                  model="gpt-4o-mini"),
    }
    return [
        {"title": "Trip to Portugal", "create_time": t, "update_time": t + 24,
         "mapping": trip, "moderation_results": [], "current_node": "a6",
         "plugin_ids": None, "conversation_id": "6650a1b2-trip", "id": "6650a1b2-trip",
         "default_model_slug": "gpt-4o", "is_archived": False},
        {"title": "Cake", "create_time": t + 100, "update_time": t + 101, "mapping": recipe,
         "moderation_results": [], "current_node": "r", "plugin_ids": None,
         "conversation_id": "6650a1b2-cake", "id": "6650a1b2-cake", "is_archived": False},
    ]


def shown(conversation: Conversation) -> list[tuple[str, bool, str]]:
    return [(m.role, m.superseded, m.content)
            for m in Message.objects.for_conversation(conversation)]


# -- export --------------------------------------------------------------------------------------


@pytest.fixture
def history(user, api_key):
    """Alice's two conversations: one with a regenerated reply and chat settings."""
    first = Conversation.objects.create(owner=user, title="Trip plan", api_key=api_key,
                                        model="gpt-4o-mini", system_prompt="Be brief.",
                                        temperature="0.70", max_output_tokens=500)
    Message.objects.create(conversation=first, role="user", content="Where to?",
                           model="gpt-4o-mini")
    Message.objects.create(conversation=first, role="assistant", content="Porto.",
                           model="gpt-4o-mini", superseded=True, prompt_tokens=5,
                           completion_tokens=2, total_tokens=7)
    Message.objects.create(conversation=first, role="assistant", content=HOSTILE,
                           model="gpt-4o-mini", api_key=api_key, prompt_tokens=5,
                           completion_tokens=9, total_tokens=14, cached_tokens=3)
    second = Conversation.objects.create(owner=user, title="Cake", api_key=api_key,
                                         model="gpt-4o")
    Message.objects.create(conversation=second, role="user", content="Which cake?")
    Message.objects.create(conversation=second, role="assistant", content="Carrot cake.",
                           status="cancelled", model="gpt-4o")
    return [first, second]


def test_export_all_is_a_streamed_zip_with_json_and_markdown_per_conversation(
    alice, history
):
    response = alice.get("/export/")

    assert response.status_code == 200 and response.streaming and response.is_async
    assert response["Content-Type"] == "application/zip"
    assert re.match(r'attachment; filename="chatsite-alice-[\d-]+\.zip"',
                    response["Content-Disposition"])
    bundle = zipfile.ZipFile(io.BytesIO(body(response)))
    assert bundle.testzip() is None
    data = json.loads(bundle.read("conversations.json"))
    assert data["format"] == "chatsite" and data["version"] == 1
    trip = next(c for c in data["conversations"] if c["title"] == "Trip plan")
    assert trip["settings"] == {"instructions": "Be brief.", "temperature": "0.70",
                                "max_output_tokens": 500, "reasoning_effort": ""}
    assert [(m["role"], m["superseded"], m["content"]) for m in trip["messages"]] == [
        ("user", False, "Where to?"), ("assistant", True, "Porto."),
        ("assistant", False, HOSTILE)]
    assert trip["messages"][2]["usage"]["total_tokens"] == 14
    markdown = sorted(name for name in bundle.namelist() if name.endswith(".md"))
    assert markdown == sorted(f"markdown/{c.pk}-{slug}.md"
                              for c, slug in zip(history, ["trip-plan", "cake"], strict=True))
    cake = bundle.read(f"markdown/{history[1].pk}-cake.md").decode()
    assert "# Cake" in cake and "Carrot cake." in cake and "Stopped" in cake


def test_the_archive_holds_no_secret_and_of_the_key_only_its_name(alice, history, api_key):
    from conversations import crypto

    crypto.set_secret(api_key, SECRET)
    api_key.save()

    raw = body(alice.get("/export/"))
    bundle = zipfile.ZipFile(io.BytesIO(raw))
    everything = b"".join(bundle.read(name) for name in bundle.namelist()).decode()

    assert SECRET not in everything and SECRET[-4:] not in everything
    assert api_key.secret_encrypted not in everything
    assert json.loads(bundle.read("conversations.json"))["conversations"][0]["api_key"] == (
        api_key.name)


def test_export_all_holds_only_the_members_own_conversations(client, other_user, history):
    client.force_login(other_user)

    bundle = zipfile.ZipFile(io.BytesIO(body(client.get("/export/"))))

    assert json.loads(bundle.read("conversations.json"))["conversations"] == []
    assert bundle.namelist() == ["conversations.json"]


def test_export_reads_conversations_a_chunk_at_a_time(alice, user, monkeypatch):
    from conversations import archive

    monkeypatch.setattr(archive, "CHUNK_SIZE", 2)
    monkeypatch.setattr(archive, "FLUSH_BYTES", 1)
    for number in range(5):
        conversation = Conversation.objects.create(owner=user, title=f"Chat {number}")
        Message.objects.create(conversation=conversation, role="user", content="x" * 2000)
    response = alice.get("/export/")

    async def pieces() -> list[bytes]:
        return [part async for part in response.streaming_content]

    parts = async_to_sync(pieces)()
    assert len(parts) > 5  # sent as it was written, not in one piece at the end
    data = json.loads(zipfile.ZipFile(io.BytesIO(b"".join(parts))).read("conversations.json"))
    assert sorted(c["title"] for c in data["conversations"]) == [f"Chat {n}" for n in range(5)]


def test_an_export_imported_by_another_member_gives_the_same_conversations(
    alice, client, other_user, history
):
    archive = body(alice.get("/export/"))
    client.force_login(other_user)

    response = import_file(client, archive, "chatsite.zip")

    assert response.status_code == 302
    theirs = {c.title: c for c in Conversation.objects.filter(owner=other_user)}
    assert set(theirs) == {"Trip plan", "Cake"}
    for original in history:
        copy = theirs[original.title]
        assert shown(copy) == shown(original)
        assert [m.created_at for m in Message.objects.for_conversation(copy)] == [
            m.created_at for m in Message.objects.for_conversation(original)]
        assert copy.created_at == original.created_at and copy.api_key is None
    trip = theirs["Trip plan"]
    assert (trip.system_prompt, str(trip.temperature), trip.max_output_tokens) == (
        "Be brief.", "0.70", 500)
    assert Message.objects.filter(conversation=trip, prompt_tokens=5, completion_tokens=9,
                                  total_tokens=14, cached_tokens=3).exists()
    assert Message.objects.get(conversation=theirs["Cake"], role="assistant").status == (
        "cancelled")
    assert Conversation.objects.filter(owner=history[0].owner).count() == 2  # alice's alone


def test_the_json_of_the_archive_imports_alone_too(alice, client, other_user, history):
    data = zipfile.ZipFile(io.BytesIO(body(alice.get("/export/")))).read("conversations.json")
    client.force_login(other_user)

    assert import_file(client, data).status_code == 302
    assert Conversation.objects.filter(owner=other_user).count() == 2


# -- import of ChatGPT's export ------------------------------------------------------------------


def test_a_chatgpt_export_imports_the_current_path_with_branches_as_earlier_versions(
    alice, user
):
    response = import_file(alice, chatgpt_export())

    assert response.status_code == 302
    trip = Conversation.objects.get(owner=user, title="Trip to Portugal")
    assert shown(trip) == [
        ("user", True, "Where should I go?"),  # before the edit
        ("assistant", True, "Porto."),
        ("user", False, "Where should I go in Portugal?"),
        ("assistant", True, "Lisbon."),  # regenerated
        ("assistant", False, "Lisbon, definitely."),
        ("user", False, "[image not imported]\n\nWhat is this building?"),
        ("assistant", False, f"{HOSTILE}\n\n```python\nprint(1 + 1)\n```\n\n"
                             "[code output not imported]\n\nThe sum is 2."),
    ]
    assert not Message.objects.filter(conversation__owner=user, role="system").exists()
    assert trip.model == "gpt-4o" and trip.import_source == "chatgpt:6650a1b2-trip"
    assert trip.created_at.timestamp() == 1_717_000_000.0
    cake = Conversation.objects.get(owner=user, title="Cake")
    assert shown(cake) == [("user", False, "Carrot cake recipe?"),
                           ("assistant", False, "Grate the carrots.")]
    assert Message.objects.get(conversation=cake, role="assistant").model == "gpt-4o-mini"
    follow = alice.get("/")
    assert "Imported 2 conversations." in follow.content.decode()


def test_importing_the_same_file_twice_adds_nothing(alice, user):
    import_file(alice, chatgpt_export())
    before = list(Message.objects.order_by("pk").values_list("pk", flat=True))

    response = import_file(alice, chatgpt_export())

    assert response.status_code == 302
    assert Conversation.objects.filter(owner=user).count() == 2
    assert list(Message.objects.order_by("pk").values_list("pk", flat=True)) == before
    assert "Imported 0 conversations. 2 had been imported before and were left as they are." \
        in alice.get("/").content.decode()


def test_imported_conversations_belong_to_the_importer_alone_and_charge_nothing(
    alice, client, user, other_user
):
    import_file(alice, chatgpt_export())
    client.force_login(other_user)
    import_file(client, chatgpt_export())  # the same file: a member's own copy each

    assert Conversation.objects.filter(owner=user).count() == 2
    assert Conversation.objects.filter(owner=other_user).count() == 2
    assert not UsageDaily.objects.exists()
    trip = Conversation.objects.get(owner=user, title="Trip to Portugal")
    assert client.get(f"/c/{trip.pk}/").status_code == 404


def test_imported_model_output_stays_text_on_the_page(alice, user):
    import_file(alice, chatgpt_export())
    trip = Conversation.objects.get(owner=user, title="Trip to Portugal")
    reply = Message.objects.filter(conversation=trip, content__startswith="<script>").get()

    html = alice.get(f"/c/{trip.pk}/").content.decode()

    assert reply.html_version == VERSION and "<script>" not in reply.content_html
    assert "<script>alert" not in html and "<img src=x" not in html.replace("&lt;img", "")
    assert "onerror=alert(1)" not in re.sub(r"&lt;.*?&gt;", "", html)
    assert "&lt;script&gt;alert" in html and "<strong>bold</strong>" in html
    assert "Earlier version of the reply" in html and "Earlier version of your message" in html


# -- what an import refuses ----------------------------------------------------------------------


def refused(response, user, *words: str) -> str:
    assert response.status_code == 400
    text = errors_of(response)
    for word in words:
        assert word in text, text
    assert not Conversation.objects.filter(owner=user).exists()
    return text


def test_a_file_over_the_size_limit_is_refused(alice, user, settings):
    settings.CHATSITE_IMPORT_MAX_BYTES = 1000

    refused(import_file(alice, chatgpt_export()), user, "too large", "1000")


def test_malformed_json_is_refused_naming_where(alice, user):
    refused(import_file(alice, b'[{"title": "x", "mapping": {'), user, "not valid JSON",
            "line 1")


def test_a_file_that_is_not_text_is_refused(alice, user):
    refused(import_file(alice, b"\xff\xfe\x00garbage"), user, "not text in UTF-8")


def test_a_damaged_zip_is_refused(alice, user):
    refused(import_file(alice, b"PK\x03\x04" + b"\x00" * 40, "x.zip"), user, "ZIP")


def test_a_zip_without_conversations_is_refused(alice, user):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("notes.txt", "hello")

    refused(import_file(alice, buffer.getvalue(), "x.zip"), user, "no conversations.json")


@pytest.mark.parametrize(("data", "words"), [
    ({"hello": "world"}, ["neither a chatsite export nor ChatGPT"]),
    ([], ["no conversations"]),
    ("just a string", ["neither a chatsite export"]),
])
def test_a_file_of_the_wrong_shape_is_refused(alice, user, data, words):
    refused(import_file(alice, data), user, *words)


def test_one_broken_conversation_imports_nothing_and_names_it(alice, user):
    export = chatgpt_export()
    export[1]["mapping"]["q"]["message"]["create_time"] = "yesterday"

    text = refused(import_file(alice, export), user, "Conversation 2", "Cake", "create_time")
    assert "not a time" in text


def test_a_chatgpt_conversation_whose_current_node_is_missing_is_refused(alice, user):
    export = chatgpt_export()
    export[0]["current_node"] = "nowhere"

    refused(import_file(alice, export), user, "Conversation 1", "current_node")


def test_a_chatsite_message_with_an_unknown_role_is_refused(alice, user):
    data = {"conversations": [{"title": "T", "messages": [{"role": "wizard", "content": "x"}]}]}

    refused(import_file(alice, data), user, "Conversation 1", "message 1", "role")


def odd(change) -> list[dict]:
    export = chatgpt_export()
    change(export[0])
    return export


@pytest.mark.parametrize("data", [
    pytest.param(odd(lambda c: c.update(mapping=[1, 2])), id="mapping a list"),
    pytest.param(odd(lambda c: c["mapping"]["a6"].update(parent=["x"])), id="parent a list"),
    pytest.param(odd(lambda c: c["mapping"]["a6"].update(parent="a6")), id="a loop"),
    pytest.param(odd(lambda c: c["mapping"]["u1b"].update(children="a2")),
                 id="children a string"),
    pytest.param(odd(lambda c: c["mapping"]["a3"]["message"].update(content=[1])),
                 id="content a list"),
    pytest.param(odd(lambda c: c["mapping"]["a3"]["message"]["content"].update(parts=[{}, 7])),
                 id="odd parts"),
    pytest.param(odd(lambda c: c["mapping"]["a3"]["message"].update(author="me")),
                 id="author a string"),
    pytest.param(odd(lambda c: c["mapping"]["a3"]["message"].update(create_time=1e300)),
                 id="time beyond any calendar"),
    pytest.param(odd(lambda c: c.update(current_node=None)), id="no current node"),
    pytest.param(odd(lambda c: c.update(title={"x": 1})), id="title an object"),
    pytest.param(odd(lambda c: c.update(id="x" * 5000, conversation_id=None)), id="long id"),
    pytest.param(b'[{"mapping": {}, "create_time": NaN}]', id="NaN"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep nesting"),
    pytest.param({"conversations": [{"title": "T", "created_at": "9999-12-31T23:59:59-05:00",
                                     "messages": []}]}, id="past year 9999 in UTC"),
    pytest.param({"conversations": [{"settings": {"temperature": "NaN"}, "messages": []}]},
                 id="temperature NaN"),
    pytest.param({"conversations": [{"messages": [{"role": "user", "content": "a\x00b\ud800",
                                                   "usage": {"total_tokens": -1}}]}]},
                 id="negative tokens"),
    pytest.param({"conversations": [{"messages": [{"role": "user", "content": "a\x00b\ud800"}]}]},
                 id="unstorable text"),
])
def test_odd_files_are_imported_or_refused_never_a_server_error(alice, user, data):
    response = import_file(alice, data)

    assert response.status_code in (302, 400)
    if response.status_code == 400:
        assert errors_of(response)
        assert not Conversation.objects.filter(owner=user).exists()
    for content in Message.objects.values_list("content", flat=True):
        assert "\x00" not in content and "\ud800" not in content


def test_an_import_without_a_file_says_so(alice, user):
    response = alice.post("/import/", {"file": "not a file"})

    refused(response, user, "Choose a file to import.")
    refused(import_file(alice, b""), user, "The file is empty.")


# -- the admin -----------------------------------------------------------------------------------


@pytest.fixture
def auditor(django_user_model):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("audrey", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_user", "view_conversation"]))
    client = Client()
    client.force_login(staff)
    return client


def export_action(client: Client, *users):
    return client.post("/admin/auth/user/", {
        "action": "export_conversations", "_selected_action": [u.pk for u in users]})


def test_an_admin_exports_a_departing_members_conversations_recorded_in_the_audit_log(
    auditor, user, history
):
    response = export_action(auditor, user)

    assert response.status_code == 200 and response.streaming
    data = json.loads(zipfile.ZipFile(io.BytesIO(body(response))).read("conversations.json"))
    assert sorted(c["title"] for c in data["conversations"]) == ["Cake", "Trip plan"]
    event = AuditEvent.objects.get(action="conversations exported")
    assert (event.actor_name, event.target) == ("audrey", "user 'alice'")
    assert "2 conversation(s)" in event.details


def test_the_admin_export_needs_permission_to_view_conversations(
    django_user_model, user, history
):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("stan", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    client = Client()
    client.force_login(staff)

    changelist = client.get("/admin/auth/user/").content.decode()
    response = export_action(client, user)

    assert "export_conversations" not in changelist
    assert not response.streaming
    assert not AuditEvent.objects.filter(action="conversations exported").exists()


def test_the_admin_export_takes_one_member_at_a_time(auditor, user, other_user, history):
    response = export_action(auditor, user, other_user)

    assert response.status_code == 302 and not response.streaming
    assert not AuditEvent.objects.filter(action="conversations exported").exists()


# -- in the browser ------------------------------------------------------------------------------



@pytest.mark.browser
def test_a_member_imports_a_chatgpt_export_and_exports_everything(screen, user, tmp_path):
    from conftest import log_in

    page = screen
    export = tmp_path / "conversations.json"
    export.write_text(json.dumps(chatgpt_export()))
    log_in(page, "alice")

    menu = page.get_by_role("button", name="Menu")
    if menu.is_visible():
        menu.click()
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("Import conversations").set_input_files(str(export))
    page.get_by_role("button", name="Import", exact=True).click()

    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*/$"))
    assert "Imported 2 conversations." in page.locator(".flash").inner_text()
    if menu.is_visible():
        menu.click()
    page.get_by_role("link", name="Trip to Portugal").click()
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    assert page.get_by_text("Lisbon, definitely.").is_visible()
    assert page.get_by_text('<script>alert("x")</script>', exact=False).count() == 1
    assert page.locator(".message__body script, .message__body img").count() == 0

    if menu.is_visible():
        menu.click()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export all").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".zip")
    saved = tmp_path / "export.zip"
    download.save_as(saved)
    data = json.loads(zipfile.ZipFile(saved).read("conversations.json"))
    assert sorted(c["title"] for c in data["conversations"]) == ["Cake", "Trip to Portugal"]
