"""Catalog export: every product, in keyset pages, to shared storage; only its owner downloads it."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.core.files.storage import default_storage

from catalog import services as catalog_services
from catalog.models import Product
from jobs import catalog_csv
from jobs.models import Job
from jobs.services import start_job
from jobs.tests.conftest import run
from scaling.models import StoredFile

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
    job = start_job(owner, Job.Kind.CATALOG_EXPORT)
    run(job)
    job.refresh_from_db()
    return job


def test_the_export_is_a_csv_of_every_product_in_shared_storage(shopper, products):
    job = exported(shopper)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.output_name == f"exports/{job.pk}.csv"
    assert StoredFile.objects.filter(name=job.output_name).exists()
    with default_storage.open(job.output_name) as stored:
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
    assert job.result == {"products": 7, "bytes": len(default_storage.open(job.output_name).read())}


def test_the_export_reads_products_in_keyset_pages_and_misses_none(products):
    reports = []
    data, count = catalog_csv.export_csv(lambda done, total: reports.append((done, total)), chunk=3)
    assert count == 7
    assert len(reports) == 3  # 3 + 3 + 1
    assert reports[-1][0] == reports[-1][1]
    assert [row.slug for row in catalog_csv.parse(data)] == [product.slug for product in products]


def test_an_export_imports_back_unchanged(staff, products):
    job = exported(staff)
    with default_storage.open(job.output_name) as stored:
        data = stored.read()
    before = list(Product.objects.order_by("id").values("name", "slug", "price", "stock", "description"))
    imported = start_job(staff, Job.Kind.CATALOG_IMPORT, input_bytes=data)
    run(imported)
    imported.refresh_from_db()
    assert imported.result["updated"] == 7
    assert list(Product.objects.order_by("id").values("name", "slug", "price", "stock", "description")) == before


def test_only_the_owner_can_download_the_export(shopper, make_user, products, client):
    job = exported(shopper)
    url = f"/jobs/{job.pk}/download/"

    client.force_login(shopper)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="herd-catalog-export-')
    assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert b"".join(response.streaming_content).startswith(b"name,slug,category,price,stock,description\r\n")

    client.force_login(make_user("other"))
    assert client.get(url).status_code == 404
    assert client.get(f"/jobs/{job.pk}/").status_code == 404

    client.logout()
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")


def test_a_job_without_a_file_has_nothing_to_download(shopper, client):
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
    client.force_login(shopper)
    assert client.get(f"/jobs/{job.pk}/download/").status_code == 404


def test_a_running_jobs_page_reloads_itself_when_the_job_ends_and_then_offers_the_file(shopper, products, client):
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
    client.force_login(shopper)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "data-reload-when-finished" in page and "/download/" not in page
    run(job)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "data-reload-when-finished" not in page
    assert f'href="/jobs/{job.pk}/download/"' in page
    assert "7 products exported" in page
