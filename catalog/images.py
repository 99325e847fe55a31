"""Product pictures: checked on upload, prepared in every size and format the pages use.

``check_upload`` refuses what profile pictures refuse (``accounts.pictures``: type by
content, bytes and pixels bounded before decoding, truncated files) with one clear
message. The original is public: ``public_original`` re-encodes it upright and without
metadata (EXIF, GPS, ICC, XMP), stored under the SHA-256 of those bytes
(``original_name``). ``prepare`` (run by the job ``catalog.tasks.prepare_image``) makes
each width of ``WIDTHS`` no wider than the original, in AVIF, WebP and JPEG, upright and
without metadata, each under the SHA-256 of its own bytes: a name never changes meaning,
so ``/media/`` serves it as immutable. ``Picture`` is what a page needs to draw one.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

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
# An original, re-encoded without its metadata: close to what was uploaded.
_ORIGINAL_ENCODE = {
    "jpg": {"format": "JPEG", "quality": 90},
    "png": {"format": "PNG"},
    "webp": {"format": "WEBP", "quality": 90},
}
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter
MAX_ARCHIVE_ENTRIES = 1000
MAX_ARCHIVE_BYTES = 50 * 1024 * 1024  # every file of a zip archive together, uncompressed
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    OSError,
    EOFError,
    zlib.error,
)


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


def public_original(checked: CheckedUpload) -> CheckedUpload:
    """The upload as anyone may see it: its pixels turned upright, whole, re-encoded in its own
    format from pixels alone (``accounts.pictures.pixels_only``), so no EXIF (a phone's GPS
    position, its make), ICC or XMP is kept. The same upload always gives the same bytes."""
    image = pictures.open_checked(checked.data)
    with pictures.decode_slot():
        try:
            image.load()
            image = pictures.pixels_only(pictures.upright(image))
        except pictures.DECODE_ERRORS as error:
            raise pictures.corrupt_error() from error
        buffer = io.BytesIO()
        image.save(buffer, **_ORIGINAL_ENCODE[checked.suffix])
    return CheckedUpload(data=buffer.getvalue(), suffix=checked.suffix, width=image.width, height=image.height)


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
            image = pictures.upright(image)
        except pictures.DECODE_ERRORS as error:
            raise pictures.corrupt_error() from error
        renditions: dict[str, list[list]] = {kind: [] for kind in FORMATS}
        for width in target_widths(image.width):
            height = max(1, round(image.height * width / image.width))
            resized = pictures.pixels_only(image.resize((width, height), Image.Resampling.LANCZOS))
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


# ----------------------------------------------------------------------------- zip archives


def is_archive(data: bytes) -> bool:
    return data.startswith(b"PK\x03\x04")


def read_archive(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """A catalog import's zip archive: (its one CSV file, {name: bytes} of the others).

    Sizes are bounded by what the archive declares and again while reading, so a zip bomb
    stops at the limit; raises ``ValidationError`` with one message naming the problem."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [
            info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")
        ]
        if len(entries) > MAX_ARCHIVE_ENTRIES:
            raise ValidationError(f"The zip archive holds {len(entries)} files; the limit is {MAX_ARCHIVE_ENTRIES}.")
        if sum(info.file_size for info in entries) > MAX_ARCHIVE_BYTES:
            raise ValidationError(f"The zip archive unpacks to more than {MAX_ARCHIVE_BYTES // 2**20} MB.")
        csv_files = [info for info in entries if info.filename.lower().endswith(".csv")]
        if len(csv_files) != 1:
            raise ValidationError(f"The zip archive must hold exactly one .csv file; it holds {len(csv_files)}.")
        found: dict[str, bytes] = {}
        for info in entries:
            limit = settings.HERD_UPLOAD_MAX_BYTES if info in csv_files else pictures.MAX_UPLOAD_BYTES
            content = b""
            if info.file_size <= limit:
                with archive.open(info) as member:
                    content = member.read(limit + 1)
            if info.file_size > limit or len(content) > limit:
                raise ValidationError(f"{info.filename} in the zip archive is larger than {limit // 2**20} MB.")
            found[info.filename] = content
    except _ZIP_ERRORS as error:
        raise ValidationError("The zip archive is damaged, encrypted or compressed in a way we cannot read.") from error
    return found.pop(csv_files[0].filename), found


def check_pictures(archived: dict[str, bytes]) -> dict[str, CheckedUpload]:
    """Each picture of an archive checked as an upload is; the first bad one is named."""
    checked = {}
    for name, data in archived.items():
        try:
            checked[name] = check_upload(ContentFile(data))
        except ValidationError as error:
            raise ValidationError(f"{name} in the zip archive: {' '.join(error.messages)}") from error
    return checked


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
