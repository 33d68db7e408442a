"""Checks and cleans files from reporters: allow-list by content, caps, EXIF-free re-encoding."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 10 * 1024 * 1024
#: About 40 megapixels: more than any phone camera, far less than a decompression bomb.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_IMAGE_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
}
_PDF_MAGIC = b"%PDF-"


class MediaRefused(ValueError):
    """A file we do not take; the reason is for tests and metrics, never shown with content."""


@dataclass(frozen=True, slots=True)
class CleanFile:
    """A file that passed the checks."""

    kind: str  # "image" or "pdf"
    mime: str
    clean: bytes | None  # re-encoded image without metadata; None for PDFs (lawyers only)


def _sniff(data: bytes) -> str | None:
    for magic, name in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(_PDF_MAGIC):
        return "PDF"
    return None


def inspect_file(data: bytes) -> CleanFile:
    """Accept JPEG, PNG, WebP (re-encoded as JPEG, metadata dropped) and PDF; refuse the rest."""
    if not data:
        raise MediaRefused("empty")
    if len(data) > MAX_FILE_BYTES:
        raise MediaRefused("too large")
    kind = _sniff(data)
    if kind is None:
        raise MediaRefused("type not allowed")
    if kind == "PDF":
        return CleanFile("pdf", "application/pdf", None)
    return CleanFile("image", "image/jpeg", _reencode(data, kind))


def _reencode(data: bytes, expected: str) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format != expected:
                    raise MediaRefused("content does not match its signature")
                width, height = image.size
                if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                    raise MediaRefused("too many pixels")
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                # A fresh image from the pixels alone: EXIF, GPS, XMP and comments stay behind.
                clean = Image.new("RGB", upright.size)
                clean.paste(upright.convert("RGB"))
        out = io.BytesIO()
        clean.save(out, format="JPEG", quality=90)
        return out.getvalue()
    except MediaRefused:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise MediaRefused("unreadable image") from exc
