"""Product pictures: checked on upload, prepared in every size and format the pages use.

``check_upload`` refuses what profile pictures refuse (``accounts.pictures``: type by
content, bytes and pixels bounded before decoding, truncated files) with one clear
message. The original is kept as uploaded, public, under the SHA-256 of its bytes
(``original_name``). ``prepare`` (run by the job ``catalog.tasks.prepare_image``) makes
each width of ``WIDTHS`` no wider than the original, in AVIF, WebP and JPEG, upright and
without metadata, each under the SHA-256 of its own bytes: a name never changes meaning,
so ``/media/`` serves it as immutable. ``Picture`` is what a page needs to draw one.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps

from accounts import pictures

WIDTHS = (320, 640, 1024)  # the widths the pages ask for, in px
FORMATS = ("avif", "webp", "jpeg")  # best first: the order of a <picture>'s sources
MIME_TYPES = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg"}
_SUFFIXES = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_ENCODE = {
    "avif": {"format": "AVIF", "quality": 60, "speed": 8},
    "webp": {"format": "WEBP", "quality": 80, "method": 4},
    "jpeg": {"format": "JPEG", "quality": 82, "optimize": True, "progressive": True},
}
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter


@dataclass(frozen=True)
class CheckedUpload:
    data: bytes
    suffix: str  # of the original's name, from its content
    width: int  # upright
    height: int


def check_upload(upload: pictures.Upload) -> CheckedUpload:
    """The upload's bytes if they are a whole JPEG, PNG or WebP within the limits;
    raises ``ValidationError`` (one message) otherwise, ``DecodersBusy`` when every
    decode slot of the process stays taken."""
    data = pictures.read_upload(upload)
    image = pictures.open_checked(data)
    width, height = image.size
    if image.getexif().get(0x0112) in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    suffix = _SUFFIXES[image.format]
    with pictures.decode_slot():
        # Decoded whole (at a reduced scale where JPEG allows): a truncated file fails here.
        image.draft(None, (max(WIDTHS), max(WIDTHS)))
        try:
            image.load()
        except pictures.DECODE_ERRORS as error:
            raise pictures.corrupt_error() from error
        del image
    return CheckedUpload(data=data, suffix=suffix, width=width, height=height)


def original_name(checked: CheckedUpload) -> str:
    return f"products/originals/{hashlib.sha256(checked.data).hexdigest()}.{checked.suffix}"


def save_if_absent(name: str, data: bytes) -> str:
    """Store content-addressed bytes once: the same name always holds the same bytes."""
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(data))
        if saved != name:
            raise RuntimeError(f"storage renamed {name} to {saved}")
    return name


def target_widths(width: int) -> list[int]:
    """The widths to prepare for an original this wide: never enlarged."""
    return sorted({min(target, width) for target in WIDTHS})


def prepare(data: bytes) -> dict[str, list[list]]:
    """Every rendition of the original ``data``, stored; the ``ImageFile.renditions`` value."""
    image = pictures.open_checked(data)
    with pictures.decode_slot():
        image.draft(None, (max(WIDTHS), max(WIDTHS)))
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        except pictures.DECODE_ERRORS as error:
            raise pictures.corrupt_error() from error
        transparent = image.has_transparency_data
        image = image.convert("RGBA" if transparent else "RGB")
        renditions: dict[str, list[list]] = {kind: [] for kind in FORMATS}
        for width in target_widths(image.width):
            height = max(1, round(image.height * width / image.width))
            # A new image from raw pixels: no EXIF, ICC or XMP reaches the output.
            resized = image.resize((width, height), Image.Resampling.LANCZOS)
            resized = Image.frombytes(resized.mode, resized.size, resized.tobytes())
            for kind in FORMATS:
                data_out = _encode(resized, kind)
                name = f"products/{hashlib.sha256(data_out).hexdigest()}.{'jpg' if kind == 'jpeg' else kind}"
                renditions[kind].append([width, height, save_if_absent(name, data_out)])
    return renditions


def _encode(image: Image.Image, kind: str) -> bytes:
    if kind == "jpeg" and image.mode == "RGBA":
        # JPEG has no transparency: on white, as a page's background.
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    buffer = io.BytesIO()
    image.save(buffer, **_ENCODE[kind])
    return buffer.getvalue()


# ----------------------------------------------------------------------------- for pages


@dataclass(frozen=True)
class Source:
    mime_type: str
    srcset: str


@dataclass(frozen=True)
class Picture:
    """One picture as a page draws it: ``sources`` empty until its sizes are prepared,
    then ``src`` is the original (never a broken image)."""

    alt: str
    width: int
    height: int
    src: str
    srcset: str
    sources: tuple[Source, ...]


def picture(*, alt: str, original: str, width: int, height: int, renditions: dict) -> Picture:
    """From the stored names (what selectors read) to URLs."""
    if not all(renditions.get(kind) for kind in FORMATS):
        return Picture(alt=alt, width=width, height=height, src=default_storage.url(original), srcset="", sources=())

    def srcset(kind: str) -> str:
        return ", ".join(f"{default_storage.url(name)} {w}w" for w, _, name in renditions[kind])

    widest_width, widest_height, widest = renditions["jpeg"][-1]
    return Picture(
        alt=alt,
        width=widest_width,
        height=widest_height,
        src=default_storage.url(widest),
        srcset=srcset("jpeg"),
        sources=tuple(Source(MIME_TYPES[kind], srcset(kind)) for kind in FORMATS if kind != "jpeg"),
    )
