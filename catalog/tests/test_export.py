"""Catalog export: every product, in keyset pages, to private storage; only its owner downloads it."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.files.storage import storages
from django.test import override_settings

from catalog import csv_format
from catalog import services as catalog_services
from catalog.models import Product
from jobs.models import Job
from jobs.services import start_job
from jobs.tests.conftest import run
from scaling.models import StoredFile
from scaling.web.storage import private_storage

pytestmark = pytest.mark.django_db


@pytest.fixture
def products():
    lamps = catalog_services.create_category(name="Lamps", slug="lamps")
    return [
        catalog_services.create_product(
            category=lamps,
            name=f'Lamp {n}, "quoted"',
            slug=f"lamp-{n}",
            price=Decimal(f"{n}.50"),
            stock=n,
            description="two\nlines\rand a carriage return" if n % 2 else "",
        )
        for n in range(7)
    ]


def exported(owner) -> Job:
    job = start_job(owner, "catalog_export")
    run(job)
    job.refresh_from_db()
    return job


def test_the_export_is_a_csv_of_every_product_in_private_storage(shopper, products):
    job = exported(shopper)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert StoredFile.objects.filter(name=f"private/{job.output_name}").exists()
    with private_storage().open(job.output_name) as stored:
        table = list(csv.DictReader(io.StringIO(stored.read().decode(), newline="")))
    assert [row["slug"] for row in table] == [product.slug for product in products]
    assert table[3] == {
        "name": 'Lamp 3, "quoted"',
        "slug": "lamp-3",
        "category": "lamps",
        "price": "3.50",
        "stock": "3",
        "description": "two\nlines\rand a carriage return",
    }
    assert job.result == {"products": 7, "bytes": len(private_storage().open(job.output_name).read())}


def test_an_exports_name_cannot_be_derived_from_its_job_id(shopper, products):
    first, second = exported(shopper), exported(shopper)
    for job in (first, second):
        assert job.output_name.startswith("exports/") and job.output_name.endswith(".csv")
        assert str(job.pk) not in job.output_name
        assert len(job.output_name) == len("exports/.csv") + 43  # 256 random bits, base64url
    assert first.output_name != second.output_name


def test_the_export_reads_products_in_keyset_pages_and_misses_none(products):
    reports = []
    data, count = csv_format.export_csv(lambda done, total: reports.append((done, total)), chunk=3)
    assert count == 7
    assert len(reports) == 3  # 3 + 3 + 1
    assert reports[-1][0] == reports[-1][1]
    assert [row.slug for row in csv_format.parse(data)] == [product.slug for product in products]


def test_an_export_imports_back_unchanged(staff, products):
    job = exported(staff)
    with private_storage().open(job.output_name) as stored:
        data = stored.read()
    before = list(Product.objects.order_by("id").values("name", "slug", "price", "stock", "description"))
    imported = start_job(staff, "catalog_import", input_bytes=data)
    run(imported)
    imported.refresh_from_db()
    assert imported.result["updated"] == 7
    assert list(Product.objects.order_by("id").values("name", "slug", "price", "stock", "description")) == before


def test_only_the_owner_can_download_the_export_and_only_from_the_jobs_page(shopper, make_user, products, client):
    job = exported(shopper)
    url = f"/jobs/{job.pk}/download/"
    # Every other path to the file, under its name now and under the name exports had before.
    media = [f"/media/private/{job.output_name}", f"/media/{job.output_name}", f"/media/exports/{job.pk}.csv"]

    client.force_login(shopper)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="herd-catalog-export-')
    assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert b"".join(response.streaming_content).startswith(b"name,slug,category,price,stock,description\r\n")

    assert [client.get(path).status_code for path in media] == [404, 404, 404]

    client.force_login(make_user("other"))
    assert client.get(url).status_code == 404
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert [client.get(path).status_code for path in media] == [404, 404, 404]

    client.logout()
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    assert [client.get(path).status_code for path in media] == [404, 404, 404]


class SignedURLStorage:
    """Stands in for S3Storage with ``querystring_auth``: S3 itself is outside the system."""

    SIGNED = "https://private.s3.example/private/{name}?X-Amz-Expires=300&X-Amz-Signature=sig"

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict | None]] = []

    def url(self, name: str, parameters: dict | None = None) -> str:
        self.asked.append((name, parameters))
        return self.SIGNED.format(name=name)


def test_with_object_storage_the_owner_is_redirected_to_a_signed_url_that_no_cache_keeps(
    shopper, make_user, products, client
):
    job = exported(shopper)
    url = f"/jobs/{job.pk}/download/"
    fake = {"BACKEND": f"{__name__}.SignedURLStorage"}
    with override_settings(STORAGES={**settings.STORAGES, "private": fake}):
        client.force_login(shopper)
        response = client.get(url)
        assert response.status_code == 302
        [(name, parameters)] = storages["private"].asked
        assert name == job.output_name
        assert response["Location"] == SignedURLStorage.SIGNED.format(name=name)
        assert parameters["ResponseCacheControl"] == "private, no-store"
        assert parameters["ResponseContentDisposition"].startswith('attachment; filename="herd-catalog-export-')
        assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]

        client.force_login(make_user("other"))
        assert client.get(url).status_code == 404


def test_a_job_without_a_file_has_nothing_to_download(shopper, client):
    job = start_job(shopper, "catalog_export")
    client.force_login(shopper)
    assert client.get(f"/jobs/{job.pk}/download/").status_code == 404


def test_a_running_jobs_page_reloads_itself_when_the_job_ends_and_then_offers_the_file(shopper, products, client):
    job = start_job(shopper, "catalog_export")
    client.force_login(shopper)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "data-reload-when-finished" in page and "/download/" not in page
    run(job)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "data-reload-when-finished" not in page
    assert f'href="/jobs/{job.pk}/download/"' in page
    assert "7 products exported" in page


FORMULA_LIKE = {
    '=HYPERLINK("http://evil.example","click")': '\'=HYPERLINK("http://evil.example","click")',
    "+1+cmd|' /C calc'!A0": "'+1+cmd|' /C calc'!A0",
    "-2+3": "'-2+3",
    "@SUM(A1:A9)": "'@SUM(A1:A9)",
    "'=already quoted": "''=already quoted",
    "'plain quote": "'plain quote",
    "plain = sign": "plain = sign",
}


def test_formula_like_text_is_exported_neutralised_and_quoted_and_imports_back_unchanged(staff):
    formulas = catalog_services.create_category(name="Formulas", slug="-formulas")
    for number, name in enumerate(FORMULA_LIKE):
        catalog_services.create_product(
            category=formulas, name=name, slug=f"-{number}", price=Decimal("1.00"), stock=1, description=name
        )
    job = exported(staff)
    with private_storage().open(job.output_name) as stored:
        data = stored.read()
    lines = data.decode().splitlines()
    for line, (name, written) in zip(lines[1:], FORMULA_LIKE.items(), strict=True):
        quoted = '"' + written.replace('"', '""') + '"'
        number = list(FORMULA_LIKE).index(name)
        assert line == f'{quoted},"\'-{number}","\'-formulas",1.00,1,{quoted}'

    before = list(Product.objects.order_by("id").values("name", "slug", "category__slug", "description"))
    imported = start_job(staff, "catalog_import", input_bytes=data)
    run(imported)
    imported.refresh_from_db()
    assert imported.result["updated"] == len(FORMULA_LIKE), imported.error
    assert list(Product.objects.order_by("id").values("name", "slug", "category__slug", "description")) == before


def test_cells_starting_with_a_tab_or_a_carriage_return_are_neutralised(products):
    lamp = Product.objects.get(slug="lamp-1")
    Product.objects.filter(pk=lamp.pk).update(name="\tTabbed", description="\r=1+1")
    data, _ = csv_format.export_csv()
    assert '"\'\tTabbed","lamp-1"' in data.decode()
    assert '"\'\r=1+1"\r\n' in data.decode()
    [row] = [row for row in csv_format.parse(data) if row.slug == "lamp-1"]
    # The quote is taken off again; as for every cell, the import then trims the blanks at its ends.
    assert (row.name, row.description) == ("Tabbed", "=1+1")
