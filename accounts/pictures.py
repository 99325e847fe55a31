"""Profile pictures: only freshly encoded pixels are kept.

``process_picture`` decides the type by content (JPEG, PNG, WebP), bounds bytes and
pixels before decoding and the decodes running at once (``DecodersBusy``), refuses
truncated files, and stores a new WebP without metadata under its SHA-256, all in
memory (docs/SECURITY.md).
"""

import hashlib
import io
import math
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 16_000_000  # width * height, checked from the header before decoding (4000x4000)
PICTURE_SIZE = 512  # longest side of the stored picture, in px
THUMBNAIL_SIZE = 96  # longest side of the thumbnail

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
WEBP_QUALITY = 85
_MB = 1024 * 1024

# What Pillow raises on data that identified as an image but cannot be decoded.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)

# Any other Image.open in this process is bounded too: Pillow refuses twice this, warns above it.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Per process: each replica (and worker) process decodes at most this many pictures at once.
_decode_slots = threading.BoundedSemaphore(settings.HERD_PICTURE_DECODES)


class DecodersBusy(Exception):
    """Every decode slot of this process stayed taken for the whole wait: try again shortly."""


class Upload(Protocol):
    """What we need of an upload; Django's UploadedFile has it."""

    size: int | None

    def read(self, size: int = ..., /) -> bytes: ...

    def seek(self, offset: int, whence: int = ..., /) -> int: ...


@dataclass(frozen=True)
class ProcessedPicture:
    picture: bytes  # WebP, longest side at most PICTURE_SIZE
    thumbnail: bytes  # WebP, longest side at most THUMBNAIL_SIZE
    digest: str  # sha256 hex of `picture` (used for content-addressed names)


def process_picture(upload: Upload) -> ProcessedPicture:
    """Validate an uploaded file (a Django UploadedFile, or any object with .size, .read(), .seek()) and re-encode it.

    Raises django.core.exceptions.ValidationError with one clear, user-facing message (and a `code`)
    when it is not acceptable.
    """
    data = _read(upload)
    image = _open(data)
    with _decode_slot():
        _decode(image)
        try:
            picture = _prepare(image, PICTURE_SIZE)
        except _DECODE_ERRORS as error:
            raise _corrupt() from error
        del image  # the full-size pixels go before the slot is given back
    picture_bytes = _encode_webp(picture)
    # The thumbnail comes from the already reduced picture: same result, a fraction of the work.
    thumbnail = _prepare(picture, THUMBNAIL_SIZE)
    return ProcessedPicture(
        picture=picture_bytes,
        thumbnail=_encode_webp(thumbnail),
        digest=hashlib.sha256(picture_bytes).hexdigest(),
    )


def _read(upload: Upload) -> bytes:
    # Check the reported size first: the upload handler keeps only MAX_UPLOAD_BYTES + 1 bytes, so
    # reading a larger file would give a cut-off copy, not the file.
    size = upload.size or 0
    if size > MAX_UPLOAD_BYTES:
        raise _too_large(size)
    upload.seek(0)
    # Bounded read, in case .size understated what is there.
    data = upload.read(MAX_UPLOAD_BYTES + 1)
    if not data:
        raise ValidationError("The file is empty.", code="empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise _too_large(len(data))
    return data


@contextmanager
def _decode_slot() -> Iterator[None]:
    if not _decode_slots.acquire(timeout=settings.HERD_PICTURE_DECODE_WAIT_SECONDS):
        raise DecodersBusy(f"all {settings.HERD_PICTURE_DECODES} picture decode slots of this process are busy")
    try:
        yield
    finally:
        _decode_slots.release()


def _open(data: bytes) -> Image.Image:
    """Read the header only, and refuse what is not wanted before a pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as error:
        raise ValidationError("This is not a JPEG, PNG or WebP image.", code="not_an_image") from error
    except Image.DecompressionBombError as error:
        # Over twice MAX_IMAGE_PIXELS Pillow refuses from the header itself (between, it only warns).
        raise ValidationError(
            "The picture has too many pixels; the limit is %(limit)s megapixels.",
            code="too_many_pixels",
            params={"limit": _megapixels(MAX_PIXELS)},
        ) from error
    except _DECODE_ERRORS as error:
        # Recognised by its signature, but the header itself is broken.
        raise _corrupt() from error

    # Image.open has read only the header; refuse big images before decoding a single pixel.
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValidationError(
            "The picture is %(width)dx%(height)d pixels; the limit is %(limit)s megapixels.",
            code="too_many_pixels",
            params={"width": width, "height": height, "limit": _megapixels(MAX_PIXELS)},
        )
    return image


def _decode(image: Image.Image) -> None:
    # A JPEG can be decoded at 1/2, 1/4 or 1/8 scale: no bigger than the stored picture needs.
    image.draft(None, (PICTURE_SIZE, PICTURE_SIZE))
    try:
        # Decode everything now, so truncation shows up here and not as a grey half picture.
        image.load()
    except _DECODE_ERRORS as error:
        raise _corrupt() from error


def _prepare(image: Image.Image, longest_side: int) -> Image.Image:
    """The pixels of ``image``, upright and at most ``longest_side``; ``image`` is reduced in place."""
    image = upright(image)
    # thumbnail() keeps the aspect ratio and never enlarges.
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    return pixels_only(image)


def upright(image: Image.Image) -> Image.Image:
    """A decoded ``image`` turned as its EXIF orientation says (in place when nothing turns), in RGB or RGBA."""
    # Orientation lives in EXIF, which is about to be dropped: turn it into real pixel order first.
    # In place: no copy of the full-size pixels unless there is something to turn.
    ImageOps.exif_transpose(image, in_place=True)
    mode = "RGBA" if image.has_transparency_data else "RGB"
    return image if image.mode == mode else image.convert(mode)


def pixels_only(image: Image.Image) -> Image.Image:
    """The same pixels as a new image without an info dict: no EXIF (GPS), ICC or XMP can
    reach what is encoded from it. Every picture we store is encoded from one of these."""
    return Image.frombytes(image.mode, image.size, image.tobytes())


def _encode_webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=WEBP_QUALITY)
    return buffer.getvalue()


def _too_large(size: int) -> ValidationError:
    # Round up so a file just over the limit never reads as "5.0 MB; the limit is 5 MB".
    return ValidationError(
        "The picture is %(size).1f MB; the limit is %(limit)s MB.",
        code="too_large",
        params={"size": math.ceil(size * 10 / _MB) / 10, "limit": f"{MAX_UPLOAD_BYTES / _MB:g}"},
    )


def _corrupt() -> ValidationError:
    return ValidationError("The picture is damaged or incomplete.", code="corrupt")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:g}"


# The same checks for other uploaded images (``catalog.images``: product pictures).
DECODE_ERRORS = _DECODE_ERRORS
read_upload = _read
open_checked = _open
decode_slot = _decode_slot
corrupt_error = _corrupt
