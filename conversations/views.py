"""Pages and htmx endpoints: parse, call a service or selector, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import (
    HttpResponseClientRedirect,
    HttpResponseClientRefresh,
    trigger_client_event,
)

from . import (
    archive,
    exports,
    fragments,
    imports,
    languages,
    preferences,
    replies,
    selectors,
    services,
)
from . import search as search_text
from .forms import ImportForm, MessageForm, PresetForm, RenameForm, SetupForm, ShareForm
from .middleware import users_exist
from .models import ApiKey, Conversation, Message, Share
from .replies.stream import release_connection, run_sync


def _sidebar(request: HttpRequest) -> selectors.Sidebar | HttpResponse:
    """Return the sidebar's page of conversations the request asks for (``?before=``), or, for
    htmx loading the next page as the member scrolls, the response holding just that page."""
    sidebar = selectors.conversation_list(user=request.user, before=request.GET.get("before"))
    if request.htmx and "before" in request.GET:
        return render(request, "conversations/chat.html#sidebar-items", {"sidebar": sidebar})
    return sidebar


def _chat_page(
    request: HttpRequest, conversation: Conversation | None, form: MessageForm | None = None,
    status: int = 200,
) -> HttpResponse:
    sidebar = _sidebar(request)
    if isinstance(sidebar, HttpResponse):
        return sidebar
    if form is not None:  # a refused message: the form already holds the member's choices
        groups, presets = form.groups, list(form.presets.values())
    else:
        groups = selectors.model_groups(user=request.user)
        presets = selectors.preset_list(user=request.user) if conversation is None else []
        initial = {"model": _initial_model(request.user, conversation, groups)}
        if conversation is not None:
            initial.update(instructions=conversation.system_prompt,
                           temperature=conversation.temperature,
                           max_length=conversation.max_output_tokens,
                           reasoning_effort=conversation.reasoning_effort)
        elif preset := selectors.default_preset(user=request.user, presets=presets):
            initial.update(preset=preset.pk, instructions=preset.instructions,
                           temperature=preset.temperature, max_length=preset.max_output_tokens,
                           reasoning_effort=preset.reasoning_effort)
            offered = {f"{group.key.pk}:{model}" for group in groups for model in group.models}
            if f"{preset.api_key_id}:{preset.model}" in offered:
                initial["model"] = f"{preset.api_key_id}:{preset.model}"
        form = MessageForm(groups=groups, presets=presets, initial=initial)
    chat_messages = selectors.message_rows(conversation=conversation) if conversation else []
    return render(request, "conversations/chat.html", {
        "conversation": conversation,
        "sidebar": sidebar,
        "shares": selectors.share_list(conversation=conversation) if conversation else [],
        "share_form": ShareForm(user=request.user) if conversation else None,
        "chat_messages": chat_messages,
        "messages_html": fragments.render_messages(request, chat_messages),
        "form": form,
        "has_keys": bool(groups),
        "keys_exist": not groups and ApiKey.objects.active().exists(),
        "presets": presets,
        "administrators": [] if groups else selectors.administrators(),
    }, status=status)


def _initial_model(user, conversation: Conversation | None, groups) -> str:
    """Return the model choice to preselect: the conversation's, the team's default, the key's
    (the team's is looked up only when the conversation's is not offered)."""
    offered = {f"{group.key.pk}:{model}" for group in groups for model in group.models}
    if conversation and conversation.api_key_id and conversation.model:
        if (choice := f"{conversation.api_key_id}:{conversation.model}") in offered:
            return choice
    wanted = []
    team_default = selectors.default_choice(user=user) if offered else None
    if team_default:
        wanted.append(f"{team_default[0]}:{team_default[1]}")
    wanted += [f"{group.key.pk}:{group.key.default_model}" for group in groups]
    wanted += [f"{group.key.pk}:{group.models[0]}" for group in groups if group.models]
    return next((choice for choice in wanted if choice in offered), "")


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    return _chat_page(request, None)


@require_GET
@login_required
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _chat_page(request, selectors.conversation_get(user=request.user, pk=pk))


def _render_message(request: HttpRequest, message: Message, *, offers_retry: bool | None = None,
                    readonly: bool = False) -> str:
    """Render one message; whether it offers Regenerate or Retry is the selector's answer unless
    the caller knows it (a reply just created does not, yet: it is unfinished). ``readonly``:
    for a recipient of a shared conversation, without the owner's controls."""
    message.offers_retry = (
        selectors.offers_retry(message) if offers_retry is None else offers_retry
    )
    return fragments.render_message(request, message, readonly=readonly)


def _without_retry(message_id: int | None) -> str:
    """An out-of-band swap that removes a message's Regenerate/Retry (no longer the last)."""
    if message_id is None:
        return ""
    return f'<div id="actions-{message_id}" hx-swap-oob="delete"></div>'


def _chat_settings(request: HttpRequest, form: MessageForm) -> services.ChatSettings | None:
    """The chat settings the composer sent, or None if it sent none (they stay as they are)."""
    if "instructions" not in request.POST:
        return None
    return services.ChatSettings(
        instructions=form.cleaned_data["instructions"],
        temperature=form.cleaned_data["temperature"],
        max_output_tokens=form.cleaned_data["max_length"],
        reasoning_effort=form.cleaned_data["reasoning_effort"],
    )


@require_POST
@login_required
def message_create(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk) if pk else None
    form = MessageForm(request.POST, request.FILES,
                       groups=selectors.model_groups(user=request.user),
                       presets=selectors.preset_list(user=request.user) if pk is None else ())
    if form.is_valid():
        api_key, model = form.cleaned_data["model"]
        try:
            question, reply = services.message_send(
                owner=request.user, conversation=conversation,
                content=form.cleaned_data["content"], api_key=api_key, model=model,
                settings=_chat_settings(request, form),
                files=form.cleaned_data["attachments"],
                image_detail=form.cleaned_data["image_detail"],
            )
        except ValidationError as error:
            about_files = getattr(error, "code", None) in ("no_vision", "too_many_files")
            form.add_error("attachments" if about_files else "content", error)
        except Conversation.DoesNotExist:
            raise Http404 from None
        else:
            url = reverse("conversations:detail", args=[reply.conversation_id])
            if not request.htmx:
                return redirect(f"{url}#message-{reply.pk}")
            if conversation is None:
                return HttpResponseClientRedirect(url)
            previous = selectors.last_reply_id(conversation_id=reply.conversation_id,
                                               before=question.pk)
            response = HttpResponse(
                _render_message(request, question, offers_retry=False)
                + _render_message(request, reply, offers_retry=False)
                + _without_retry(previous)
            )
            return trigger_client_event(response, "chat:sent")
    if request.htmx:
        response = HttpResponse(render_to_string(
            "conversations/chat.html#form-errors", {"form": form}, request=request
        ))
        response["HX-Retarget"] = "#form-errors"
        response["HX-Reswap"] = "outerHTML"
        return response
    return _chat_page(request, conversation, form=form, status=400)


@require_POST
@login_required
def preset_save(request: HttpRequest) -> HttpResponse:
    """Save the composer's model and chat settings as the member's own preset."""
    form = PresetForm(request.POST, groups=selectors.model_groups(user=request.user))
    if form.is_valid():
        api_key, model = form.cleaned_data["model"]
        try:
            preset = services.preset_save(
                owner=request.user, name=form.cleaned_data["preset_name"],
                settings=services.ChatSettings(
                    instructions=form.cleaned_data["instructions"],
                    temperature=form.cleaned_data["temperature"],
                    max_output_tokens=form.cleaned_data["max_length"],
                    reasoning_effort=form.cleaned_data["reasoning_effort"]),
                api_key=api_key, model=model,
            )
        except ValidationError as error:
            form.add_error("preset_name", error)
        else:
            messages.success(request, _("Preset “%(name)s” saved: pick it when you start a new "
                                        "chat.") % {"name": preset.name})
    for field in form:
        for error in field.errors:
            messages.warning(request, f"{field.label}: {error}")
    if request.htmx:
        return HttpResponseClientRefresh()
    return redirect("conversations:home")


@require_POST
@login_required
def message_stop(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.message_get(user=request.user, pk=pk)
    services.reply_stop(message=message)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect("conversations:detail", pk=message.conversation_id)


@require_POST
@login_required
def message_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Retry a failed reply, or regenerate the last one; the earlier one stays as a version."""
    message = selectors.message_get(user=request.user, pk=pk)
    url = reverse("conversations:detail", args=[message.conversation_id])
    try:
        reply = services.reply_regenerate(message=message)
    except ValidationError as error:
        return _refused(request, url, error)
    if request.htmx:
        message.refresh_from_db()
        return HttpResponse(
            _render_message(request, message, offers_retry=False)
            + _render_message(request, reply, offers_retry=False)
        )
    return redirect(f"{url}#message-{reply.pk}")


@require_POST
@login_required
def message_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Resend an edited message; the original and what followed stay as earlier versions."""
    message = selectors.message_get(user=request.user, pk=pk)
    url = reverse("conversations:detail", args=[message.conversation_id])
    try:
        _question, reply = services.message_edit(
            message=message, content=request.POST.get("content", "")
        )
    except ValidationError as error:
        return _refused(request, url, error)
    if request.htmx:
        return HttpResponseClientRedirect(f"{url}#message-{reply.pk}")
    return redirect(f"{url}#message-{reply.pk}")


def _refused(request: HttpRequest, url: str, error: ValidationError) -> HttpResponse:
    """Go back to the conversation saying why nothing happened."""
    for text in error.messages:
        messages.warning(request, text)
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def message_stream(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """Tail one reply as server-sent events (GET, no side effects).

    The view only checks access; the events are an async iterator, sent by the event loop
    with no thread held while the reply is written."""
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    reader = _stream_reader(request, pk)
    if reader is None:
        raise Http404
    offset = _offset(request.headers.get("Last-Event-ID") or request.GET.get("offset"))
    readonly = reader == "recipient"

    def render_final(final: Message) -> str:
        try:
            return _render_message(request, selectors.as_shown(final), readonly=readonly)
        finally:
            release_connection()

    async def render_final_async(final: Message) -> str:
        return await run_sync(render_final, final)

    response = StreamingHttpResponse(
        replies.events(pk, offset, render_final_async),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return response


def _stream_reader(request: HttpRequest, pk: int) -> str | None:
    """Return how the user may read message ``pk`` (``selectors.message_reader``); then give
    the connection back: a stream may stay open for hours and must not hold one."""
    try:
        return selectors.message_reader(user=request.user, pk=pk)
    finally:
        release_connection()


def _offset(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


@require_POST
@login_required
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    url = reverse("conversations:detail", args=[conversation.pk])
    form = RenameForm(request.POST)
    if not form.is_valid():
        return _refused(request, url, ValidationError([
            f"{form.fields[name].label}: {error}" for name, errors in form.errors.items()
            for error in errors
        ]))
    services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
    return redirect(url)


@require_http_methods(["GET", "POST"])
@login_required
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    if request.method == "POST":
        services.conversation_delete(conversation=conversation)
        return redirect("conversations:home")
    return render(request, "conversations/delete.html", {"conversation": conversation})


@require_GET
@login_required
def conversation_export(request: HttpRequest, pk: int) -> HttpResponse:
    """Download the conversation as Markdown (default) or JSON."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    chat_messages = selectors.message_list(conversation=conversation)
    slug = slugify(conversation.title)[:50] or f"chat-{conversation.pk}"
    if request.GET.get("format") == "json":
        response = JsonResponse(exports.as_json(conversation, chat_messages),
                                json_dumps_params={"ensure_ascii": False, "indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{slug}.json"'
        return response
    response = HttpResponse(exports.as_markdown(conversation, chat_messages),
                            content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slug}.md"'
    return response


@require_GET
@login_required
def search(request: HttpRequest) -> HttpResponse:
    """The results of searching the member's conversations for ``q``; works without JavaScript."""
    query = search_text.normalize(request.GET.get("q", ""))
    before = request.GET.get("before", "")
    # A later page continues before a message; anything else there starts from the newest.
    before = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
    found = selectors.search(user=request.user, query=query, before=before)
    return render(request, "conversations/search.html", {
        "query": query, "results": found.hits, "older": found.older, "later_page": before,
    })


def _switch(request: HttpRequest, name: str) -> bool | None:
    """Return what a pin or archive form asks for: on ("1"), off ("0"), or None for anything
    else."""
    return {"1": True, "0": False}.get(request.POST.get(name, ""))


def _after_toggle(request: HttpRequest, conversation: Conversation, done: bool) -> HttpResponse:
    """Answer a pin or an archive: htmx gets the header's buttons and the sidebar (out of band),
    a plain form goes back to the conversation; a form that asked for neither is refused."""
    if not done:
        return _refused(request, reverse("conversations:detail", args=[conversation.pk]),
                        ValidationError(_("Nothing changed: the form was not understood.")))
    if not request.htmx:
        return redirect("conversations:detail", pk=conversation.pk)
    context = {"conversation": conversation, "oob": True,
               "sidebar": selectors.conversation_list(user=request.user),
               "page_path": reverse("conversations:detail", args=[conversation.pk])}
    return HttpResponse(
        render_to_string("conversations/chat.html#conversation-actions", context, request=request)
        + render_to_string("conversations/chat.html#sidebar-list", context, request=request)
    )


@require_POST
@login_required
def conversation_pin(request: HttpRequest, pk: int) -> HttpResponse:
    """Pin the conversation on top of the sidebar (``pin=1``), or unpin it."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    pinned = _switch(request, "pin")
    if pinned is not None:
        services.conversation_pin(conversation=conversation, pinned=pinned)
    return _after_toggle(request, conversation, pinned is not None)


@require_POST
@login_required
def conversation_archive(request: HttpRequest, pk: int) -> HttpResponse:
    """Archive the conversation (``archive=1``): out of the sidebar, not deleted; or bring it
    back."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    archived = _switch(request, "archive")
    if archived is not None:
        services.conversation_archive(conversation=conversation, archived=archived)
    return _after_toggle(request, conversation, archived is not None)


@require_GET
@login_required
def archived_list(request: HttpRequest) -> HttpResponse:
    """The member's archived conversations, page by page (``?before=``)."""
    sidebar = selectors.conversation_list(user=request.user, before=request.GET.get("before"),
                                          archived=True)
    return render(request, "conversations/list.html", {
        "heading": _("Archived chats"), "sidebar": sidebar,
        "empty": _("No archived chats. Archive a chat from its page to hide it here."),
    })


@require_GET
@login_required
def shared_list(request: HttpRequest) -> HttpResponse:
    """The conversations others share with the member or with one of their teams."""
    return render(request, "conversations/list.html", {
        "heading": _("Shared with me"), "shared": selectors.shared_with(user=request.user),
        "empty": _("Nobody has shared a chat with you yet."),
    })


@require_GET
@login_required
def shared_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A conversation shared with the member, read-only: the messages as its owner sees them,
    without the owner's controls. Its owner is sent to their own page of it."""
    conversation = selectors.shared_get(user=request.user, pk=pk)
    if conversation.owner_id == request.user.pk:
        return redirect("conversations:detail", pk=pk)
    sidebar = _sidebar(request)
    if isinstance(sidebar, HttpResponse):
        return sidebar
    chat_messages = selectors.message_rows(conversation=conversation)
    return render(request, "conversations/chat.html", {
        "conversation": conversation, "readonly": True, "sidebar": sidebar,
        "chat_messages": chat_messages,
        "messages_html": fragments.render_messages(request, chat_messages, readonly=True),
    })


@require_POST
@login_required
def shared_copy(request: HttpRequest, pk: int) -> HttpResponse:
    """Continue a conversation shared with the member as their own copy, and open it."""
    conversation = selectors.shared_get(user=request.user, pk=pk)
    copy = services.conversation_copy(conversation=conversation, owner=request.user)
    messages.success(request, _("This is your copy: continue the conversation here."))
    return redirect("conversations:detail", pk=copy.pk)


@require_POST
@login_required
def conversation_share(request: HttpRequest, pk: int) -> HttpResponse:
    """Share the conversation read-only with one of the member's teams and/or named members."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    url = reverse("conversations:detail", args=[conversation.pk]) + "#share"
    form = ShareForm(request.POST, user=request.user)
    if not form.is_valid():
        return _refused(request, url, ValidationError([
            f"{form.fields[name].label}: {error}" if name in form.fields else error
            for name, errors in form.errors.items() for error in errors
        ]))
    team = form.cleaned_data["team"]
    try:
        services.share_create(conversation=conversation, by=request.user,
                              teams=[team] if team else [], users=form.cleaned_data["usernames"])
    except ValidationError as error:
        return _refused(request, url, error)
    messages.success(request, _("Shared: they find it under “Shared with me”."))
    return redirect(url)


@require_POST
@login_required
def conversation_unshare(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop sharing the conversation with one team or member (``share``): at once."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    share_id = request.POST.get("share", "")
    share = (Share.objects.filter(pk=int(share_id), conversation=conversation)
             .select_related("team", "user", "conversation__owner").first()
             if share_id.isdigit() and len(share_id) < 19 else None)
    url = reverse("conversations:detail", args=[conversation.pk]) + "#share"
    if share is None:
        return _refused(request, url, ValidationError(_("It was not shared with them.")))
    services.share_revoke(share=share)
    messages.info(request, _("No longer shared with %(name)s.") % {"name": share})
    return redirect(url)


@require_GET
@login_required
def conversations_export_all(request: HttpRequest) -> StreamingHttpResponse:
    """Download all the member's conversations as one ZIP archive, streamed."""
    return archive.response(Conversation.objects.owned_by(request.user),
                            username=request.user.get_username())


@require_http_methods(["GET", "POST"])
@login_required
def conversations_import(request: HttpRequest) -> HttpResponse:
    """Import conversations from a file: chatsite's own export or ChatGPT's."""
    form = ImportForm(request.POST, request.FILES) if request.method == "POST" else ImportForm()
    if request.method == "POST" and form.is_valid():
        try:
            result = services.conversations_import(
                owner=request.user, conversations=imports.read(form.cleaned_data["file"]))
        except ValidationError as error:
            form.add_error("file", error)
        else:
            notice = ngettext("Imported %(count)s conversation.",
                              "Imported %(count)s conversations.", result.imported)
            if result.skipped:
                notice += " " + ngettext(
                    "%(skipped)s had been imported before and was left as it is.",
                    "%(skipped)s had been imported before and were left as they are.",
                    result.skipped)
            messages.success(request, notice % {"count": result.imported,
                                                "skipped": result.skipped})
            return redirect("conversations:home")
    return render(request, "conversations/import.html", {
        "form": form, "max_size": imports.max_bytes(),
    }, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """Create the first administrator; gone for good once any user exists."""
    if users_exist():
        raise Http404
    form = SetupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.administrator_create(
                username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
            )
        except ValidationError:
            raise Http404 from None
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("admin:conversations_apikey_add")
    return render(request, "conversations/setup.html", {"form": form})


@require_POST
@login_required
def theme_set(request: HttpRequest) -> HttpResponse:
    """Switch the member's colour theme, then go back to the page they were on."""
    theme = request.POST.get("theme", "")
    try:
        services.theme_set(user=request.user, theme=theme)
    except ValidationError as error:
        for text in error.messages:
            messages.warning(request, text)
    else:
        preferences.keep(request, preferences.THEME, theme)
        messages.info(request, {
            "dark": _("Dark mode is on."), "light": _("Dark mode is off."),
        }.get(theme, _("The colours follow your system's setting.")))
    return HttpResponseRedirect(_back(request))


@require_POST
def language_set(request: HttpRequest) -> HttpResponse:
    """Speak the chosen language ("" follows the browser's) from now on, then go back to the
    page the visitor was on: a member's choice is remembered with them, a visitor's (on the
    login page) in the language cookie."""
    language = request.POST.get("language", "")
    if language and not languages.is_offered(language):  # nothing changes, and it says why
        messages.warning(request, _("Choose one of the languages offered."))
        return HttpResponseRedirect(_back(request))
    if request.user.is_authenticated:
        services.language_set(user=request.user, language=language)
        languages.remember(request, language)
    response = HttpResponseRedirect(_back(request))
    if language:
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME, language, max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH, domain=settings.LANGUAGE_COOKIE_DOMAIN,
            secure=settings.LANGUAGE_COOKIE_SECURE, httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,
        )
    else:
        response.delete_cookie(settings.LANGUAGE_COOKIE_NAME, path=settings.LANGUAGE_COOKIE_PATH,
                               domain=settings.LANGUAGE_COOKIE_DOMAIN,
                               samesite=settings.LANGUAGE_COOKIE_SAMESITE)
    return response


def _back(request: HttpRequest) -> str:
    """The page to go back to after a setting changed: the form's ``next`` if it is a path on
    this site, else the home page (the login page for a visitor not logged in)."""
    back = request.POST.get("next", "")
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("conversations:home" if request.user.is_authenticated else "login")
    return back


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Say whether the site can serve: 503 without its database; 200 and "degraded", naming
    what is missing, while Redis is unreachable (pages, sending and streams still work)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "database unavailable"}, status=503)
    degraded = selectors.degraded_services()
    if degraded:
        return JsonResponse({"status": "degraded", "degraded": degraded})
    return JsonResponse({"status": "ok"})
