"""Product pictures: added by staff in the admin, prepared by the job in every size and
format, drawn by the pages as ``<picture>`` (the original until prepared), served immutable."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from accounts.tests.test_pictures import BLUE, RED, close_to, phone_jpeg
from catalog import cache, csv_format, images, services
from catalog.jobs import CatalogImportForm
from catalog.models import ImageFile, ProductImage
from catalog.tasks import prepare_image
from jobs.models import Job
from jobs.services import start_job
from jobs.tests.conftest import csv_bytes, run
from scaling.db import consistency, positions

HEADER = (*csv_format.COLUMNS, *csv_format.PICTURE_COLUMNS)


def jpeg(width: int = 1600, height: int = 1200, colour: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def upload(data: bytes, name: str = "lamp.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def prepare(image_file: ImageFile) -> None:
    """Run the job as the worker does: reading at least what is committed now."""
    with consistency.at_least(positions.current()):
        prepare_image.fn(image_file.pk)


def add_picture(product, data: bytes, alt: str = "A brass lamp, lit", position: int = 0) -> ProductImage:
    return services.add_product_image(
        product=product, checked=images.check_upload(upload(data)), alt=alt, position=position
    )


@pytest.fixture
def admin_client(make_user, settings):
    # Admin pages link static files; tests run without collectstatic's manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    staff = make_user("staff", is_staff=True)
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    return client


def change_form(product, **image_fields) -> dict:
    """The product's change form as the admin posts it, with one new picture row."""
    return {
        "category": product.category_id,
        "name": product.name,
        "slug": product.slug,
        "description": product.description,
        "price": str(product.price),
        "stock": product.stock,
        "images-TOTAL_FORMS": "1",
        "images-INITIAL_FORMS": "0",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        "images-0-position": "0",
        **{f"images-0-{name}": value for name, value in image_fields.items()},
    }


@pytest.mark.django_db
def test_staff_add_a_picture_in_the_product_admin_and_see_its_thumbnail(admin_client, product):
    data = jpeg()
    response = admin_client.post(
        f"/admin/catalog/product/{product.pk}/change/", change_form(product, upload=upload(data), alt="A brass lamp")
    )
    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"]
    (added,) = ProductImage.objects.using("default").filter(product=product)
    assert added.alt == "A brass lamp"
    # Public, under the hash of its stored bytes (re-encoded whole, without metadata); sizes not prepared yet.
    stored = default_storage.open(added.image.original.name).read()
    assert added.image.original.name == f"products/originals/{hashlib.sha256(stored).hexdigest()}.jpg"
    assert Image.open(io.BytesIO(stored)).size == (1600, 1200)
    assert (added.image.width, added.image.height, added.image.renditions) == (1600, 1200, {})

    listing = admin_client.get("/admin/catalog/product/").content.decode()
    assert f'src="/media/{added.image.original.name}"' in listing
    prepare(added.image)
    listing = admin_client.get("/admin/catalog/product/").content.decode()
    smallest_webp = ImageFile.objects.using("default").get(pk=added.image_id).renditions["webp"][0][2]
    assert f'src="/media/{smallest_webp}"' in listing
    assert (
        f'src="/media/{smallest_webp}"'
        in admin_client.get(f"/admin/catalog/product/{product.pk}/change/").content.decode()
    )


@pytest.mark.django_db
def test_a_phone_photo_uploaded_by_staff_is_public_upright_and_without_its_gps_position(admin_client, product):
    data = phone_jpeg()  # 800x600 stored, Orientation 6, GPS position, camera make, ICC profile
    response = admin_client.post(
        f"/admin/catalog/product/{product.pk}/change/", change_form(product, upload=upload(data), alt="A brass lamp")
    )
    assert response.status_code == 302
    (added,) = ProductImage.objects.using("default").filter(product=product)
    # What anyone gets at the original's public URL (the pages' fallback until the sizes are ready).
    public = Client().get(f"/media/{added.image.original.name}")
    assert public.status_code == 200
    served = b"".join(public.streaming_content) if public.streaming else public.content
    original = Image.open(io.BytesIO(served))
    assert original.format == "JPEG"
    assert not original.getexif() and not {"exif", "icc_profile", "xmp"} & original.info.keys()
    assert b"Example Phone Co." not in served and b"Exif" not in served
    # Upright: 600x800 as viewed, the stored left (red) half now on top.
    assert original.size == (added.image.width, added.image.height) == (600, 800)
    assert close_to(original.convert("RGB").getpixel((300, 100)), RED)
    assert close_to(original.convert("RGB").getpixel((300, 700)), BLUE)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"upload": SimpleUploadedFile("lamp.jpg", b"not a picture at all"), "alt": "A lamp"},
            "This is not a JPEG, PNG or WebP image.",
        ),
        ({"upload": upload(jpeg()[:3000]), "alt": "A lamp"}, "The picture is damaged or incomplete."),
        ({"upload": upload(jpeg()), "alt": ""}, "This field is required."),
        ({"alt": "A lamp"}, "Choose a picture to upload."),
    ],
    ids=["not-an-image", "truncated", "no-alt-text", "no-file"],
)
def test_a_bad_picture_gets_a_clear_form_error_and_nothing_is_stored(admin_client, product, fields, message):
    response = admin_client.post(f"/admin/catalog/product/{product.pk}/change/", change_form(product, **fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ProductImage.objects.exists() and not ImageFile.objects.exists()


@pytest.mark.django_db
def test_the_prepare_job_writes_every_size_and_format_under_content_addressed_names(product):
    added = add_picture(product, jpeg(1600, 1200))
    prepare(added.image)
    renditions = ImageFile.objects.using("default").get(pk=added.image_id).renditions
    assert sorted(renditions) == ["avif", "jpeg", "webp"]
    pillow_formats = {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG"}
    for kind, sizes in renditions.items():
        assert [(width, height) for width, height, _ in sizes] == [(320, 240), (640, 480), (1024, 768)]
        for width, height, name in sizes:
            data = default_storage.open(name).read()
            suffix = "jpg" if kind == "jpeg" else kind
            assert name == f"products/{hashlib.sha256(data).hexdigest()}.{suffix}"
            decoded = Image.open(io.BytesIO(data))
            assert (decoded.format, decoded.size) == (pillow_formats[kind], (width, height))
            assert not decoded.getexif()

    # Never enlarged: a narrow original gets its own width as the widest size.
    narrow = add_picture(product, jpeg(500, 400), position=1)
    prepare(narrow.image)
    widths = [width for width, _, _ in ImageFile.objects.using("default").get(pk=narrow.image_id).renditions["webp"]]
    assert widths == [320, 500]


@pytest.mark.django_db
def test_the_job_is_idempotent_and_a_second_upload_of_the_same_bytes_shares_the_file(product, make_product):
    data = jpeg()
    first = add_picture(product, data)
    prepare(first.image)
    prepared = ImageFile.objects.using("default").get(pk=first.image_id)
    prepare(prepared)
    again_prepared = ImageFile.objects.using("default").get(pk=first.image_id)
    assert (again_prepared.renditions, again_prepared.prepared_at) == (prepared.renditions, prepared.prepared_at)
    again = add_picture(make_product(), data, alt="The same lamp")
    assert again.image_id == first.image_id and ImageFile.objects.count() == 1


def pictures_in(html: str) -> list[str]:
    return re.findall(r"<picture>.*?</picture>", html)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_page_shows_the_original_until_the_sizes_are_ready_then_a_picture_element(client, product, make_product):
    added = add_picture(product, jpeg(1600, 1200), alt="A brass lamp, lit")
    second = add_picture(product, jpeg(1200, 1600, "navy"), alt="The lamp from above", position=1)
    url = f"/p/{product.slug}/"
    (before, _) = pictures_in(client.get(url).content.decode())
    original = added.image.original.name
    # The original, at its own size: never a broken image, nothing moves when it loads.
    assert f'<img src="/media/{original}" width="1600" height="1200" alt="A brass lamp, lit"' in before
    assert "<source" not in before

    prepare(added.image)
    prepare(second.image)
    first_html, second_html = pictures_in(client.get(url).content.decode())
    renditions = ImageFile.objects.using("default").get(pk=added.image_id).renditions
    for kind, mime in (("avif", "image/avif"), ("webp", "image/webp")):
        srcset = ", ".join(f"/media/{name} {width}w" for width, _, name in renditions[kind])
        assert f'<source type="{mime}" srcset="{srcset}" sizes="' in first_html
    assert first_html.index("image/avif") < first_html.index("image/webp") < first_html.index("<img")
    jpeg_srcset = ", ".join(f"/media/{name} {width}w" for width, _, name in renditions["jpeg"])
    assert f'<img src="/media/{renditions["jpeg"][-1][2]}" srcset="{jpeg_srcset}" sizes="' in first_html
    assert 'width="1024" height="768" alt="A brass lamp, lit" decoding="async" fetchpriority="high">' in first_html
    assert 'width="1024" height="1365"' in second_html and 'loading="lazy"' in second_html

    # The list: each card its first picture, the first card eager, the others lazy.
    make_product("No picture yet")
    listing = client.get("/products/").content.decode()
    cards = pictures_in(listing)
    assert len(cards) == 1 and 'alt="A brass lamp, lit"' in cards[0] and "image/avif" in cards[0]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_removing_a_picture_flushes_the_cached_page(client, product):
    added = add_picture(product, jpeg())
    assert 'alt="A brass lamp, lit"' in client.get(f"/p/{product.slug}/").content.decode()
    added.delete()
    assert cache.product_page(product.slug).images == ()
    assert "<picture>" not in client.get(f"/p/{product.slug}/").content.decode()


@pytest.mark.django_db
def test_a_prepared_size_is_served_immutable_and_identical_for_everyone(client, product, alice):
    added = add_picture(product, jpeg())
    prepare(added.image)
    name = ImageFile.objects.using("default").get(pk=added.image_id).renditions["avif"][0][2]
    response = client.get(f"/media/{name}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/avif"
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    # What lets HAProxy's media cache keep it (deploy/haproxy.cfg.template): nothing per visitor.
    assert not response.has_header("Vary") and not response.cookies
    client.force_login(alice)
    logged_in = client.get(f"/media/{name}")
    assert logged_in.content == response.content and not logged_in.has_header("Vary") and not logged_in.cookies


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


PICTURED_ROWS = [
    ("Brass Desk Lamp", "brass-desk-lamp", "lamps", "49.90", "5", "", "photos/lamp.jpg", "A brass lamp, lit"),
    ("Oak Chair", "oak-chair", "chairs", "120", "1", "", "", ""),
]


@pytest.mark.django_db
def test_a_zip_archive_imports_its_csv_and_gives_products_their_pictures_once(staff):
    data = jpeg()
    archived = archive({"products.csv": csv_bytes(PICTURED_ROWS, HEADER), "photos/lamp.jpg": data})
    for _ in range(2):  # twice: the picture is added once
        job = start_job(staff, "catalog_import", input_bytes=archived)
        run(job)
        job.refresh_from_db()
        assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["pictures"] == 0
    (picture,) = ProductImage.objects.using("default").filter(product__slug="brass-desk-lamp")
    assert picture.alt == "A brass lamp, lit"
    stored = images.public_original(images.check_upload(upload(data))).data
    assert picture.image.original.name == f"products/originals/{hashlib.sha256(stored).hexdigest()}.jpg"
    assert not ProductImage.objects.using("default").filter(product__slug="oak-chair").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"products.csv": csv_bytes([], HEADER), "lamp.jpg": b"not"}, "lamp.jpg in the zip archive: This is not"),
        ({"lamp.jpg": jpeg()}, "must hold exactly one .csv file; it holds 0"),
        ({"products.csv": b"name,slug,category,price,stock,description,colour\n"}, "unknown columns: colour"),
    ],
    ids=["bad-picture", "no-csv", "bad-header"],
)
def test_a_bad_zip_archive_is_refused_by_the_import_form_with_a_clear_message(files, message):
    form = CatalogImportForm(files={"file": SimpleUploadedFile("import.zip", archive(files))}, data={})
    assert not form.is_valid()
    assert message in " ".join(form.errors["file"])


@pytest.mark.django_db
def test_a_row_naming_a_picture_not_in_the_archive_refuses_the_whole_import(staff):
    rows = [(*PICTURED_ROWS[0][:6], "photos/missing.jpg", "A lamp")]
    job = start_job(staff, "catalog_import", input_bytes=archive({"products.csv": csv_bytes(rows, HEADER)}))
    run(job)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "“photos/missing.jpg” is not in the zip archive" in job.result["bad_rows"][0]["reason"]
    assert not ProductImage.objects.exists()
