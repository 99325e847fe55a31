"""Catalog import: every row checked first, all or nothing, upserted by slug."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections

from catalog import csv_format
from catalog import services as catalog_services
from catalog.models import Category, Product
from jobs.models import Job
from jobs.services import start_job
from jobs.tests.conftest import all_jobs, csv_bytes, run
from notifications.models import Notification
from scaling.sharding import shards

GOOD_ROWS = [
    ("Brass Desk Lamp", "brass-desk-lamp", "lamps", "49.90", "5", "Warm light, heavy base."),
    ("Oak Chair", "oak-chair", "chairs", "120", "", ""),
    ("Paper Shade", "paper-shade", "lamps", "9.5", "100", 'Says "hello", with a comma\nand a second line'),
]


def import_job(owner, data: bytes) -> Job:
    job = start_job(owner, "catalog_import", input_bytes=data)
    run(job)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_a_good_file_imports_every_row_and_creates_missing_categories(staff):
    catalog_services.create_category(name="Lamps", slug="lamps")
    job = import_job(staff, csv_bytes(GOOD_ROWS))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.progress == 100
    assert job.result == {"rows": 3, "created": 3, "updated": 0, "categories_created": 1}
    shade = Product.objects.get(slug="paper-shade")
    assert (shade.name, shade.category.slug, shade.price, shade.stock) == ("Paper Shade", "lamps", Decimal("9.50"), 100)
    assert shade.description == 'Says "hello", with a comma\nand a second line'
    assert Product.objects.get(slug="oak-chair").stock == 0
    assert Category.objects.get(slug="chairs").name == "Chairs"
    notification = Notification.objects.for_user(staff.pk).get(job=job)
    assert notification.user_id == staff.pk
    assert notification.title == "Catalog import finished"
    assert notification.body == "3 products imported: 3 new, 0 updated."


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_rows_commit_together_then_the_job_state_and_the_notification_together_on_its_shard(staff):
    rows = [(f"Thing {n}", f"thing-{n}", f"category-{n % 3}", "1.00", "1", "") for n in range(2500)]
    job = import_job(staff, csv_bytes(rows))
    assert job.state == Job.State.SUCCEEDED, job.error

    # xmin is the id of the transaction that wrote a row version: one id for all of them.
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT DISTINCT xmin::text FROM catalog_product WHERE slug LIKE 'thing-%%'")
        product_transactions = cursor.fetchall()
    with connections[shards.alias_of_user(staff.pk)].cursor() as cursor:
        cursor.execute(
            "SELECT xmin::text FROM jobs_job WHERE id = %s "
            "UNION SELECT xmin::text FROM notifications_notification WHERE job_id = %s",
            [job.pk, job.pk],
        )
        job_transactions = cursor.fetchall()
    assert len(product_transactions) == 1
    assert len(job_transactions) == 1
    assert Product.objects.using("default").filter(slug__startswith="thing-").count() == 2500


@pytest.mark.django_db
def test_importing_the_same_file_twice_leaves_one_product_per_slug_with_the_new_values(staff):
    import_job(staff, csv_bytes(GOOD_ROWS))
    changed = [(*GOOD_ROWS[0][:3], "39.90", "7", "Now cheaper."), *GOOD_ROWS[1:]]
    second = import_job(staff, csv_bytes(changed))

    assert second.result == {"rows": 3, "created": 0, "updated": 3, "categories_created": 0}
    assert Product.objects.count() == 3
    lamp = Product.objects.get(slug="brass-desk-lamp")
    assert (lamp.price, lamp.stock, lamp.description) == (Decimal("39.90"), 7, "Now cheaper.")


@pytest.mark.django_db
def test_an_import_keeps_the_rating_summary_of_products_it_updates(staff, make_user):
    job = import_job(staff, csv_bytes(GOOD_ROWS))
    lamp = Product.objects.get(slug="brass-desk-lamp")
    catalog_services.post_review(user=make_user(), product=lamp, rating=4, text="")
    import_job(staff, csv_bytes(GOOD_ROWS))
    lamp.refresh_from_db()
    assert (lamp.rating_count, lamp.rating_sum) == (1, 4)
    assert job.state == Job.State.SUCCEEDED


BAD_STOCK = "stock “1.5” is not a whole number"
BAD_FILES = {
    "missing column": (
        b"name,slug,category,price,stock\nLamp,lamp,lamps,1,1\n",
        "The file has no description column.",
        [],
    ),
    "extra column": (
        b"name,slug,category,price,stock,description,colour\nLamp,lamp,lamps,1,1,,red\n",
        "The file has unknown columns: colour.",
        [],
    ),
    "bad price": (
        csv_bytes([("Lamp", "lamp", "lamps", "cheap", "1", ""), ("Shade", "shade", "lamps", "1.999", "1", "")]),
        "2 rows are not valid, so nothing was imported.",
        [(2, "price “cheap” is not a number"), (3, "price has more than two decimal places")],
    ),
    "negative price and stock": (
        csv_bytes([("Lamp", "lamp", "lamps", "-1", "-2", "")]),
        "1 row is not valid",
        [(2, "price is negative; stock is negative")],
    ),
    "duplicate slug": (
        csv_bytes(
            [
                ("Lamp", "lamp", "lamps", "1", "1", ""),
                ("Other", "shade", "lamps", "1", "1", ""),
                ("Lamp again", "lamp", "lamps", "2", "1", ""),
            ]
        ),
        "1 row is not valid",
        [(4, "slug “lamp” is already used on line 2")],
    ),
    "empty and bad slugs": (
        csv_bytes([("", "", "lamps", "1", "1", ""), ("Lamp", "a lamp!", "lamps", "1", "1.5", "")]),
        "2 rows are not valid",
        [
            (2, "name is empty; slug is empty"),
            (3, "slug “a lamp!” may hold only letters, digits, hyphens and underscores; " + BAD_STOCK),
        ],
    ),
    "over-long fields": (
        csv_bytes([("N" * 201, "lamp", "lamps", "1", "1", "D" * 10_001)]),
        "1 row is not valid",
        [(2, "name is longer than 200 characters; description is longer than 10000 characters")],
    ),
    "wrong number of fields": (
        b"name,slug,category,price,stock,description\nLamp,lamp,lamps,1\n",
        "1 row is not valid",
        [(2, "has 4 fields; the header has 6")],
    ),
    "invalid UTF-8": (
        b"name,slug,category,price,stock,description\nLamp,lamp,lamps,1,1,\nCaf\xe9,cafe,lamps,1,1,\n",
        "The file is not UTF-8 text (line 3 has a byte UTF-8 does not allow).",
        [],
    ),
    "empty file": (b"", "The file is empty.", []),
    "header only": (b"name,slug,category,price,stock,description\n", "The file has a header but no products.", []),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_imports_nothing_and_says_why(staff, case, client):
    data, message, bad_rows = BAD_FILES[case]
    catalog_services.create_product(
        category=catalog_services.create_category(name="Lamps", slug="lamps"),
        name="Lamp",
        slug="lamp",
        price=Decimal("5.00"),
        stock=1,
    )
    job = import_job(staff, data)

    assert job.state == Job.State.FAILED
    assert message in job.error
    assert [(row["line"], row["reason"]) for row in job.result.get("bad_rows", [])] == bad_rows
    assert list(Product.objects.values_list("slug", "price")) == [("lamp", Decimal("5.00"))]
    assert list(Category.objects.values_list("slug", flat=True)) == ["lamps"]
    assert Notification.objects.for_user(job.owner_id).get(job=job).title == "Catalog import failed"

    client.force_login(staff)
    page = client.get(job.get_absolute_url()).content.decode()
    assert message.replace('"', "&quot;") in page
    for line, _ in bad_rows:
        assert f"<td>{line}</td>" in page


@pytest.mark.django_db
def test_a_staff_member_starts_an_import_by_uploading_a_file(staff, client):
    client.force_login(staff)
    upload = SimpleUploadedFile("products.csv", csv_bytes(GOOD_ROWS), content_type="text/csv")
    response = client.post("/jobs/start/catalog_import/", {"file": upload})
    job = Job.objects.for_user(staff.pk).get()
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert job.input_name.startswith("job-inputs/") and str(job.pk) not in job.input_name
    assert client.get(f"/media/private/{job.input_name}").status_code == 404
    assert client.get(f"/media/job-inputs/{job.pk}.csv").status_code == 404
    run(job)
    assert Product.objects.count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize(("extra_bytes", "shown"), [(100_000, r"10\.1"), (90 * 1024 * 1024, r"100\.\d")])
def test_a_file_over_10_mb_is_refused_by_the_form_with_a_clear_message(staff, client, settings, extra_bytes, shown):
    client.force_login(staff)
    data = csv_bytes([]) + b"x" * (settings.HERD_UPLOAD_MAX_BYTES + extra_bytes)
    response = client.post("/jobs/start/catalog_import/", {"file": SimpleUploadedFile("big.csv", data)})
    assert response.status_code == 400
    assert re.search(rf"The file is {shown} MB; the limit is 10 MB\.", response.content.decode())
    assert not all_jobs()


@pytest.mark.django_db
def test_an_empty_upload_is_refused_by_the_form(staff, client):
    client.force_login(staff)
    response = client.post("/jobs/start/catalog_import/", {"file": SimpleUploadedFile("empty.csv", b"")})
    assert response.status_code == 400
    assert "The submitted file is empty." in response.content.decode()


FILES_REFUSED_AT_UPLOAD = {
    "not UTF-8": ("name,slug\nCaf\xe9,cafe\n".encode("latin-1"), "The file is not UTF-8 text"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "The file is not UTF-8 text"),
    "no columns": (b"foo;bar\n1;2\n", "The file has no name, slug, category, price, stock, description columns."),
    "blank lines only": (b"\n\n\n", "The file has no lines with content."),
    "header with an unclosed quote": (b'"name,slug\n', "Line 1 is not valid CSV"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", FILES_REFUSED_AT_UPLOAD)
def test_a_malformed_file_is_refused_at_upload_with_a_400_and_starts_no_job(staff, client, case):
    data, message = FILES_REFUSED_AT_UPLOAD[case]
    client.force_login(staff)
    response = client.post("/jobs/start/catalog_import/", {"file": SimpleUploadedFile("bad.csv", data)})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not all_jobs()


@pytest.mark.django_db
def test_someone_who_is_not_staff_cannot_start_an_import(shopper, client):
    client.force_login(shopper)
    upload = SimpleUploadedFile("products.csv", csv_bytes(GOOD_ROWS))
    assert client.post("/jobs/start/catalog_import/", {"file": upload}).status_code == 403
    assert client.post("/jobs/start/cache_warm/", {"products": 5}).status_code == 403
    assert "Import products" not in client.get("/jobs/").content.decode()
    with pytest.raises(PermissionDenied):
        start_job(shopper, "catalog_import", input_bytes=csv_bytes(GOOD_ROWS))
    assert not all_jobs()


@pytest.mark.django_db
def test_an_import_whose_owner_lost_staff_rights_before_it_ran_fails(staff):
    job = start_job(staff, "catalog_import", input_bytes=csv_bytes(GOOD_ROWS))
    staff.is_staff = False
    staff.save(update_fields=["is_staff"])
    run(job)
    job.refresh_from_db()
    assert (job.state, job.error) == (Job.State.FAILED, "Only staff can run a catalog import.")
    assert not Product.objects.exists()


def test_a_file_with_many_bad_rows_lists_the_first_thousand_and_counts_all():
    data = csv_bytes([("Lamp", f"lamp-{n}", "lamps", "x", "1", "") for n in range(1500)])
    with pytest.raises(csv_format.FileRefused) as refused:
        csv_format.parse(data)
    assert refused.value.bad_row_count == 1500
    assert len(refused.value.bad_rows) == csv_format.MAX_LISTED_ERRORS
    assert refused.value.bad_rows[-1]["line"] == 1001
