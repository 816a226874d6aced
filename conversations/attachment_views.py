"""Hand out a stored attachment to those who may read its conversation, and only as what the
server decoded it to be: an image inline, anything else as a download, never as a page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from . import attachments

# Nothing in the response may run, load or frame anything, whatever a browser makes of it.
POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


@require_GET
@login_required
def attachment_file(request: HttpRequest, pk: int) -> FileResponse:
    attachment = attachments.attachment_get(user=request.user, pk=pk)
    if attachment is None:
        raise Http404
    try:
        stored = attachment.file.storage.open(attachment.file.name, "rb")
    except FileNotFoundError:
        raise Http404 from None
    response = FileResponse(stored, as_attachment=not attachment.is_image,
                            filename=attachment.name, content_type=attachment.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = POLICY
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Cache-Control"] = "private, max-age=3600"
    return response
