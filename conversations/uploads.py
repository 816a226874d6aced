"""Check what a member attaches to a message, and turn it into what is stored and sent.

Nothing the browser says about a file is believed: its kind is what it decodes as. An image
must decode with Pillow as PNG, JPEG, WebP or a single-frame GIF, within the pixel limit (a
larger one is refused from its header, before it is decoded: a decompression bomb never
expands); it is then re-encoded from its pixels alone -- EXIF (GPS position included), comments,
colour profiles and anything appended are left behind, so an image that is also HTML or script
comes out as a plain image -- at the size vision models use. A text file must be UTF-8 text
without NUL bytes; a PDF must parse and hold text (pypdf). Anything else, and anything whose
name claims one kind while its bytes are another, is refused with a message saying so.

The limits are settings (``CHATSITE_ATTACHMENT_*``), read here only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from . import text as text_rules

IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp",
                 "GIF": "image/png"}  # a GIF's one frame is stored as PNG
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "jpe", "webp", "gif", "svg", "svgz", "bmp", "tif",
                    "tiff", "heic", "heif", "avif", "ico"}
TEXT_EXTENSIONS = {
    "txt", "text", "md", "markdown", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml", "ini",
    "cfg", "conf", "log", "xml", "html", "htm", "css", "scss", "js", "mjs", "cjs", "ts", "tsx",
    "jsx", "vue", "py", "pyi", "rb", "go", "rs", "java", "kt", "kts", "c", "h", "cpp", "hpp",
    "cc", "cs", "php", "sh", "bash", "zsh", "ps1", "sql", "r", "swift", "scala", "lua", "pl",
    "tex", "rst", "diff", "patch", "dart", "ex", "exs", "hs", "clj", "el", "vim", "dockerfile",
    "makefile", "gradle", "properties", "env", "srt", "vtt",
}
TEXT_TYPES = {"csv": "text/csv", "tsv": "text/tab-separated-values", "md": "text/markdown",
              "markdown": "text/markdown"}


@dataclass(frozen=True)
class Prepared:
    """One attachment as it will be stored: checked, converted, named."""

    kind: str  # Attachment.Kind: "image" | "text"
    name: str
    content_type: str
    data: bytes
    width: int | None = None
    height: int | None = None
    text: str = ""


def check_count(count: int) -> None:
    """Refuse more files than a message may carry."""
    if count > settings.CHATSITE_ATTACHMENT_MAX_FILES:
        raise ValidationError(
            _("Attach at most %(limit)s files to a message.")
            % {"limit": settings.CHATSITE_ATTACHMENT_MAX_FILES}, code="too_many_files")


def clean_name(name: str) -> str:
    """Return the file's name as shown and sent: no path, no control characters, no quotes."""
    name = text_rules.clean(str(name or "")).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>')
    return name.strip()[:200] or _("file")


def _extension(name: str) -> str:
    base = name.lower()
    if "." not in base:
        return base  # Makefile, Dockerfile
    return base.rsplit(".", 1)[-1]


def prepare(upload) -> Prepared:
    """Return the stored form of ``upload`` (a Django ``UploadedFile``), or raise
    ``ValidationError`` saying what is wrong with it."""
    name = clean_name(upload.name)
    extension = _extension(name)
    claimed = (getattr(upload, "content_type", "") or "").lower()
    limit = max(settings.CHATSITE_ATTACHMENT_MAX_IMAGE_BYTES,
                settings.CHATSITE_ATTACHMENT_MAX_FILE_BYTES)
    if upload.size is not None and upload.size > limit:
        raise _too_big(name, limit)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise _too_big(name, limit)
    kind = _claimed_kind(extension, claimed, data)
    if kind == "image":
        if len(data) > settings.CHATSITE_ATTACHMENT_MAX_IMAGE_BYTES:
            raise _too_big(name, settings.CHATSITE_ATTACHMENT_MAX_IMAGE_BYTES)
        return prepare_image(name, data)
    if kind and len(data) > settings.CHATSITE_ATTACHMENT_MAX_FILE_BYTES:
        raise _too_big(name, settings.CHATSITE_ATTACHMENT_MAX_FILE_BYTES)
    if kind == "pdf":
        return _prepare_pdf(name, data)
    if kind == "text":
        return _prepare_text(name, extension, data)
    raise ValidationError(
        _("“%(name)s” cannot be attached: attach images (PNG, JPEG, WebP, GIF), text files "
          "(plain text, Markdown, CSV, source code) or PDFs.") % {"name": name},
        code="unsupported")


def _claimed_kind(extension: str, claimed: str, data: bytes) -> str:
    """Return what the file says it is -- its name first, then the type the browser sent, then
    (for a name that says nothing, a pasted screenshot) its first bytes: "image", "pdf", "text",
    or "" for nothing this site takes. The bytes must then prove it."""
    if extension in IMAGE_EXTENSIONS:
        return "image"
    if extension == "pdf":
        return "pdf"
    if extension in TEXT_EXTENSIONS:
        return "text"
    if claimed.startswith("image/"):
        return "image"
    if claimed == "application/pdf":
        return "pdf"
    if claimed.startswith("text/"):
        return "text"
    return "image" if _looks_like_image(data) else ""


def _too_big(name: str, limit: int) -> ValidationError:
    from django.template.defaultfilters import filesizeformat

    return ValidationError(_("“%(name)s” is too large (at most %(limit)s).")
                           % {"name": name, "limit": filesizeformat(limit)}, code="too_big")


_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def prepare_image(name: str, data: bytes) -> Prepared:
    """Decode ``data`` as an image and re-encode it, metadata-free, at the size models use."""
    from PIL import Image, ImageOps

    not_an_image = ValidationError(
        _("“%(name)s” is not an image this site takes: attach a PNG, JPEG, WebP or GIF image.")
        % {"name": name}, code="not_an_image")
    # Pillow reads only the header here; the size is checked before any pixel is decoded.
    # (Its own bomb check is global state and far more lenient: it only backs this one up.)
    try:
        image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError:
        raise _too_many_pixels(name) from None
    except Exception:
        raise not_an_image from None
    if image.width * image.height > settings.CHATSITE_ATTACHMENT_MAX_PIXELS:
        raise _too_many_pixels(name)
    try:
        frames = getattr(image, "n_frames", 1)
    except Exception:
        raise not_an_image from None
    if frames > 1:
        raise ValidationError(
            _("“%(name)s” is animated: attach a still image.") % {"name": name},
            code="animated")
    source_format = image.format
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise _too_many_pixels(name) from None
    except Exception:
        raise not_an_image from None
    content_type = IMAGE_FORMATS[source_format]
    out = io.BytesIO()
    try:
        image = _fit(image)
        if content_type == "image/jpeg":
            image.convert("RGB").save(out, "JPEG", quality=88, optimize=True)
        elif content_type == "image/webp":
            mode = "RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB"
            image.convert(mode).save(out, "WEBP", quality=88)
        else:
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA")
            image.save(out, "PNG", optimize=True)
    except (OSError, ValueError):  # a mode Pillow cannot convert or encode
        raise not_an_image from None
    return Prepared(kind="image", name=name, content_type=content_type, data=out.getvalue(),
                    width=image.width, height=image.height)


def _too_many_pixels(name: str) -> ValidationError:
    return ValidationError(
        _("“%(name)s” has too many pixels (at most %(limit)s million).")
        % {"name": name, "limit": settings.CHATSITE_ATTACHMENT_MAX_PIXELS // 1_000_000},
        code="too_many_pixels")


def _fit(image):
    """Return ``image`` reduced as OpenAI's vision models reduce it: within a square of
    ``CHATSITE_ATTACHMENT_IMAGE_SIDE``, then the shorter side at most
    ``CHATSITE_ATTACHMENT_IMAGE_SHORT_SIDE``. Larger would cost upload and storage, not detail."""
    from PIL import Image

    width, height = image.size
    scale = min(1.0, settings.CHATSITE_ATTACHMENT_IMAGE_SIDE / max(width, height),
                settings.CHATSITE_ATTACHMENT_IMAGE_SHORT_SIDE / min(width, height))
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.resize(size, Image.Resampling.LANCZOS)


def _check_text_length(name: str, content: str) -> str:
    limit = settings.CHATSITE_ATTACHMENT_MAX_TEXT_CHARS
    if len(content) > limit:
        raise ValidationError(
            _("“%(name)s” holds too much text (at most %(limit)s characters).")
            % {"name": name, "limit": limit}, code="too_long")
    return content


def _prepare_text(name: str, extension: str, data: bytes) -> Prepared:
    not_text = ValidationError(
        _("“%(name)s” is not a text file (UTF-8), though its name says so.") % {"name": name},
        code="not_text")
    if b"\x00" in data or _looks_like_image(data) or data.startswith(b"%PDF-"):
        raise not_text
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise not_text from None
    content = _check_text_length(name, text_rules.clean(content))
    if not content.strip():
        raise ValidationError(_("“%(name)s” is empty.") % {"name": name}, code="empty")
    content_type = TEXT_TYPES.get(extension, "text/plain")
    return Prepared(kind="text", name=name, content_type=f"{content_type}; charset=utf-8",
                    data=data, text=content)


def _prepare_pdf(name: str, data: bytes) -> Prepared:
    from pypdf import PdfReader

    not_pdf = ValidationError(
        _("“%(name)s” is not a readable PDF.") % {"name": name}, code="not_pdf")
    if not data.startswith(b"%PDF-"):
        raise not_pdf
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValidationError(
                _("“%(name)s” is protected by a password.") % {"name": name}, code="encrypted")
        pages, total = [], 0
        for page in reader.pages:
            piece = page.extract_text() or ""
            pages.append(piece)
            total += len(piece)
            _check_text_length(name, " " * total)
    except ValidationError:
        raise
    except Exception:
        raise not_pdf from None
    content = _check_text_length(name, text_rules.clean("\n\n".join(pages)).strip())
    if not content:
        raise ValidationError(
            _("“%(name)s” has no text to read (a scanned PDF?). Attach its pages as images.")
            % {"name": name}, code="no_text")
    return Prepared(kind="text", name=name, content_type="application/pdf", data=data,
                    text=content)
