"""Uploaded profile pictures are checked by content and bounded in size, and stored as clean WebP."""

import functools
import hashlib
import io
import os
import struct
import threading
import zlib

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import ExifTags, Image, ImageCms, ImageFile

from accounts import pictures
from accounts.pictures import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    PICTURE_SIZE,
    THUMBNAIL_SIZE,
    DecodersBusy,
    ProcessedPicture,
    process_picture,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)

# ---------------------------------------------------------------- building inputs


def encode(image: Image.Image, image_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def upload(data: bytes, name: str = "me.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def left_red_right_blue(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def phone_jpeg() -> bytes:
    """800x600 as stored by a phone held upright: Orientation 6 says "turn 90° clockwise to view"."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Example Phone Co."
    exif[ExifTags.Base.Model] = "Pocket 9"
    exif[ExifTags.Base.Orientation] = 6
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 30.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (4.0, 53.0, 12.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(left_red_right_blue(800, 600), "JPEG", quality=92, exif=exif, icc_profile=icc)
    # The input really carries what must not come out.
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif()[ExifTags.Base.Orientation] == 6
        assert image.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
        assert image.info["icc_profile"] == icc
    return data


def noise(width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of zeros: huge in pixels, tiny in bytes."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter type 0 (None), then the packed row
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, colour type 0 (greyscale)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(30000, 30000)


# ---------------------------------------------------------------- checking outputs


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    chunks, offset = [], 12
    while offset < len(data):
        kind, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks.append(kind)
        offset += 8 + size + (size & 1)
    return chunks


def assert_clean_webp(data: bytes, longest_side: int) -> Image.Image:
    # Only image data: no EXIF, ICCP or XMP chunk.
    assert set(webp_chunks(data)) <= {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    assert not image.getexif()
    assert not {"exif", "icc_profile", "xmp"} & image.info.keys()
    assert max(image.size) <= longest_side
    return image


def refusal(data: bytes, **upload_args) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        process_picture(upload(data, **upload_args))
    assert len(caught.value.messages) == 1
    return caught.value


def close_to(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(colour[:3], expected, strict=True))


# ---------------------------------------------------------------- accepted


def test_a_phone_jpeg_is_turned_upright_and_stripped_of_exif_gps_and_icc():
    result = process_picture(upload(phone_jpeg()))

    assert isinstance(result, ProcessedPicture)
    picture = assert_clean_webp(result.picture, PICTURE_SIZE)
    # 800x600 stored, 600x800 viewed, scaled to fit 512.
    assert picture.size == (384, 512)
    # The stored left (red) half is the top once turned clockwise.
    picture = picture.convert("RGB")
    assert close_to(picture.getpixel((192, 64)), RED)
    assert close_to(picture.getpixel((192, 448)), BLUE)

    thumbnail = assert_clean_webp(result.thumbnail, THUMBNAIL_SIZE)
    assert thumbnail.size == (72, 96)
    assert result.digest == hashlib.sha256(result.picture).hexdigest()


def test_the_same_picture_gets_the_same_digest():
    data = phone_jpeg()
    assert process_picture(upload(data)).digest == process_picture(upload(data)).digest


def test_a_png_with_alpha_keeps_its_transparency_and_is_not_enlarged():
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (100, 50, 200, 150))
    result = process_picture(upload(encode(image, "PNG"), name="me.png", content_type="image/png"))

    picture = assert_clean_webp(result.picture, PICTURE_SIZE)
    assert picture.size == (300, 200)
    assert picture.mode == "RGBA"
    assert picture.getpixel((10, 10))[3] == 0
    assert picture.getpixel((150, 100))[3] == 255
    assert assert_clean_webp(result.thumbnail, THUMBNAIL_SIZE).size == (96, 64)


def test_a_webp_is_accepted_and_scaled_down():
    data = encode(left_red_right_blue(1000, 1000), "WEBP", quality=90)
    result = process_picture(upload(data, name="me.webp", content_type="image/webp"))

    assert assert_clean_webp(result.picture, PICTURE_SIZE).size == (512, 512)
    assert assert_clean_webp(result.thumbnail, THUMBNAIL_SIZE).size == (96, 96)


@pytest.mark.parametrize(
    ("image", "image_format", "expected_mode"),
    [
        (Image.linear_gradient("L"), "PNG", "RGB"),
        (Image.merge("LA", [Image.linear_gradient("L")] * 2), "PNG", "RGBA"),
        (Image.linear_gradient("L").convert("P"), "PNG", "RGB"),
        (Image.linear_gradient("L").convert("1"), "PNG", "RGB"),
        (Image.linear_gradient("L").convert("I").point(lambda v: v * 256).convert("I;16"), "PNG", "RGB"),
        (Image.linear_gradient("L").convert("CMYK"), "JPEG", "RGB"),
        (Image.linear_gradient("L"), "JPEG", "RGB"),
    ],
    ids=["grey-png", "grey-alpha-png", "palette-png", "1-bit-png", "16-bit-png", "cmyk-jpeg", "grey-jpeg"],
)
def test_pictures_in_any_mode_come_out_as_rgb_or_rgba(image, image_format, expected_mode):
    result = process_picture(upload(encode(image, image_format)))
    assert assert_clean_webp(result.picture, PICTURE_SIZE).mode == expected_mode


def test_a_palette_png_with_a_transparent_colour_keeps_it_transparent():
    data = encode(Image.linear_gradient("L").convert("P"), "PNG", transparency=0)
    picture = assert_clean_webp(process_picture(upload(data)).picture, PICTURE_SIZE)
    assert picture.mode == "RGBA"
    assert picture.getextrema()[3] == (0, 255)


def test_the_file_name_and_content_type_do_not_matter_for_a_real_image():
    data = encode(left_red_right_blue(64, 64), "PNG")
    result = process_picture(upload(data, name="notes.txt", content_type="text/plain"))
    assert assert_clean_webp(result.picture, PICTURE_SIZE).size == (64, 64)


# ---------------------------------------------------------------- refused: not an accepted image


def test_a_text_file_renamed_png_is_refused():
    error = refusal(b"just some notes, honestly\n", name="me.png", content_type="image/png")
    assert error.code == "not_an_image"
    assert error.messages == ["This is not a JPEG, PNG or WebP image."]


def test_an_svg_is_refused():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
    assert refusal(svg, name="me.png", content_type="image/svg+xml").code == "not_an_image"


def test_a_gif_is_refused_although_it_is_a_valid_image():
    gif = encode(Image.new("P", (32, 32), 1), "GIF")
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF"
    assert refusal(gif, name="me.gif", content_type="image/gif").code == "not_an_image"


def test_garbage_is_refused():
    assert refusal(os.urandom(4096)).code == "not_an_image"


# ---------------------------------------------------------------- refused: size


def test_an_empty_upload_is_refused():
    error = refusal(b"")
    assert error.code == "empty"
    assert error.messages == ["The file is empty."]


def test_a_20_mb_picture_is_refused_with_its_size_in_the_message():
    data = encode(noise(2600, 2700), "PNG", compress_level=1)
    assert 20 * 1024 * 1024 <= len(data) < 21 * 1024 * 1024

    error = refusal(data, name="me.png", content_type="image/png")
    assert error.code == "too_large"
    (message,) = error.messages
    assert message.startswith("The picture is 20.")
    assert message.endswith(" MB; the limit is 5 MB.")


def test_the_reported_size_is_checked_before_anything_is_read():
    class KeptOnlyTheStart:
        """Like the upload handler: the true size, but only the first MAX_UPLOAD_BYTES + 1 bytes kept."""

        size = 20 * 1024 * 1024

        def read(self, size: int = -1) -> bytes:
            raise AssertionError("read before the size check")

        def seek(self, offset: int, whence: int = 0) -> int:
            raise AssertionError("seek before the size check")

    with pytest.raises(ValidationError) as caught:
        process_picture(KeptOnlyTheStart())
    assert caught.value.code == "too_large"
    assert caught.value.messages == ["The picture is 20.0 MB; the limit is 5 MB."]


def test_a_file_just_over_the_limit_does_not_read_as_within_it():
    error = refusal(bytes(MAX_UPLOAD_BYTES + 1))
    assert error.code == "too_large"
    assert error.messages == ["The picture is 5.1 MB; the limit is 5 MB."]


def test_a_file_of_exactly_the_limit_is_judged_by_its_content():
    # Zeros are no image: the size passed, the content check answered.
    assert refusal(bytes(MAX_UPLOAD_BYTES)).code == "not_an_image"


# ---------------------------------------------------------------- refused: too many pixels


def decoding_forbidden(self):
    raise AssertionError("pixels were decoded")


def test_the_bomb_is_a_small_valid_30000_by_30000_png(bomb, monkeypatch):
    assert len(bomb) < 200_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only to look at it
    with Image.open(io.BytesIO(bomb)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "1", (30000, 30000))
        image.verify()  # chunk CRCs


def test_a_30000_by_30000_png_bomb_is_refused_without_being_decoded(bomb, monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_forbidden)
    error = refusal(bomb, name="me.png", content_type="image/png")
    assert error.code == "too_many_pixels"
    assert "16 megapixels" in error.messages[0]


@functools.cache
def one_colour_png(width: int, height: int) -> bytes:
    """What a visitor can make in any editor: huge in pixels, a few KB of PNG."""
    return encode(Image.new("RGB", (width, height), RED), "PNG")


def test_a_6300_by_6300_one_colour_png_is_refused_without_being_decoded(monkeypatch):
    data = one_colour_png(6300, 6300)  # 40 MP: 160 MB once decoded
    assert len(data) < 200_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_forbidden)
    error = refusal(data, name="me.png", content_type="image/png")
    assert error.code == "too_many_pixels"
    assert "the limit is 16 megapixels" in error.messages[0]


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (4001, 4000),  # just over our limit, under Pillow's
        (5000, 4000),  # 20 MP: where Pillow only warns
        (8000, 6000),  # 48 MP: where Pillow refuses from the header itself
        (10000, 10000),
    ],
)
def test_a_picture_over_16_megapixels_is_refused_without_being_decoded(width, height, monkeypatch):
    data = png_bomb(width, height)
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_forbidden)
    error = refusal(data, name="me.png", content_type="image/png")
    assert error.code == "too_many_pixels"
    assert "the limit is 16 megapixels" in error.messages[0]


def test_a_picture_of_exactly_16_megapixels_is_accepted():
    processed = process_picture(upload(png_bomb(4000, 4000), name="me.png", content_type="image/png"))
    assert_clean_webp(processed.picture, PICTURE_SIZE)


def test_pillow_itself_refuses_images_over_twice_the_limit_anywhere_in_the_process():
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_bomb(8000, 6000)))


def test_the_refusal_names_the_dimensions_when_they_are_known(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_forbidden)
    error = refusal(png_bomb(5000, 4000), name="me.png", content_type="image/png")
    assert error.messages == ["The picture is 5000x4000 pixels; the limit is 16 megapixels."]


# ---------------------------------------------------------------- refused: every decode slot taken


def test_a_picture_is_refused_as_busy_while_every_decode_slot_is_taken(decode_slots_taken, monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_forbidden)
    with pytest.raises(DecodersBusy):
        process_picture(upload(encode(left_red_right_blue(64, 48), "JPEG")))


def test_a_picture_takes_a_slot_freed_during_its_wait(decode_slots_taken, settings):
    settings.HERD_PICTURE_DECODE_WAIT_SECONDS = 5
    threading.Timer(0.2, pictures._decode_slots.release).start()  # one of the other decodes ends
    assert process_picture(upload(encode(left_red_right_blue(64, 48), "JPEG"))).picture
    assert pictures._decode_slots.acquire(timeout=1)  # it gave its slot back; held again for the fixture


def test_a_refused_picture_gives_its_decode_slot_back(settings):
    settings.HERD_PICTURE_DECODE_WAIT_SECONDS = 0
    damaged = encode(noise(300, 300), "PNG")[:-2000]
    for _ in range(settings.HERD_PICTURE_DECODES + 1):
        assert refusal(damaged, name="me.png", content_type="image/png").code == "corrupt"
    assert process_picture(upload(encode(left_red_right_blue(64, 48), "JPEG"))).picture


# ---------------------------------------------------------------- refused: damaged


def test_a_jpeg_cut_in_half_is_refused():
    data = encode(noise(400, 300), "JPEG", quality=90)
    with Image.open(io.BytesIO(data[: len(data) // 2])) as image:
        assert image.size == (400, 300)  # the header survives; only decoding can tell

    error = refusal(data[: len(data) // 2])
    assert error.code == "corrupt"
    assert error.messages == ["The picture is damaged or incomplete."]


def test_a_png_cut_in_half_is_refused():
    data = encode(noise(300, 300), "PNG")
    assert refusal(data[: len(data) // 2], name="me.png", content_type="image/png").code == "corrupt"


def test_truncation_is_not_tolerated_globally():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
