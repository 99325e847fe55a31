"""Sharding on real databases: placement by user, ids, routing refusals, fan-out, and an
online move of a logical shard under a steady write load (scaling.sharding.shards, scaling.sharding.moves)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from accounts.tests.factories import make_user
from jobs.models import Job
from jobs.services import start_job
from notifications import services as notifications
from notifications.models import Notification
from scaling.sharding import moves as shard_moves
from scaling.sharding import shards


def users_on_every_shard_database(prefix: str) -> dict[str, object]:
    """One user per shard database: users are created until each database has one."""
    found: dict[str, object] = {}
    for number in range(64):
        user = make_user(f"{prefix}{number}")
        found.setdefault(shards.alias_of_user(user.pk), user)
        if len(found) == len(shards.shard_aliases()):
            return found
    raise AssertionError(f"no user landed on some shard database: {sorted(found)}")


def rows_everywhere(model, **filters) -> dict[str, int]:
    return {
        alias: count
        for alias, count in shards.fan_out(lambda alias: model.objects.using(alias).filter(**filters).count()).items()
        if count
    }


@pytest.mark.django_db
def test_rows_of_users_on_different_logical_shards_land_in_their_mapped_databases():
    users = users_on_every_shard_database("placed")
    assert len(users) == 2, "the test herd runs two shard databases"
    for alias, user in users.items():
        note = notifications.notify(user.pk, title="hello")
        job = start_job(user, "catalog_export")
        logical = shards.shard_of_user(user.pk)
        assert shards.shard_map.placement()[logical] == alias
        assert rows_everywhere(Notification, user_id=user.pk) == {alias: 1}
        assert rows_everywhere(Job, owner_id=user.pk) == {alias: 1}
        # The id alone says where the row lives.
        assert shards.shard_of_id(note.pk) == shards.shard_of_id(job.pk) == logical
        assert Notification.objects.for_id(note.pk).get().title == "hello"


def test_the_sharded_models_are_found_by_their_shard_key_and_moved_parents_first():
    declared = {model for model in apps.get_models() if getattr(model, "SHARD_KEY", None)}
    assert set(shards.sharded_models()) == declared == {Job, Notification}
    order = shard_moves.copy_order()
    assert set(order) == declared
    for model in order:
        for field in model._meta.concrete_fields:
            if field.is_relation and field.related_model in declared and field.related_model is not model:
                assert order.index(field.related_model) < order.index(model), (model, field.name)
    # Migrations: the sharded models' tables (and their apps' model-less operations) on the shards.
    for model in declared:
        assert shards.on_shards(model._meta.app_label, model._meta.model_name)
        assert shards.on_shards(model._meta.app_label, None)
    assert not shards.on_shards(get_user_model()._meta.app_label, get_user_model()._meta.model_name)


@pytest.mark.django_db
def test_a_query_without_a_shard_key_is_refused_naming_the_model():
    with pytest.raises(shards.ShardKeyMissing, match="Notification is sharded by user_id"):
        Notification.objects.filter(title="anything").count()
    with pytest.raises(shards.ShardKeyMissing, match="Job is sharded by owner_id"):
        list(Job.objects.all())
    with pytest.raises(shards.ShardKeyMissing):
        Notification.objects.create(user_id=1, title="where?")


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_ids_made_concurrently_on_every_shard_are_unique_and_ordered_by_time():
    made: list[tuple[float, float, list[int]]] = []
    lock = threading.Lock()

    def make(alias: str, logical_shards: list[int]) -> None:
        try:
            for _round in range(20):
                before = time.time() * 1000
                with connections[alias].cursor() as cursor:
                    cursor.execute(
                        "SELECT herd_next_id(s) FROM unnest(%s::int[]) AS s, generate_series(1, 25)", [logical_shards]
                    )
                    ids = [row[0] for row in cursor.fetchall()]
                after = time.time() * 1000
                with lock:
                    made.append((before, after, ids))
        finally:
            connections[alias].close()

    placement = shards.shard_map.placement()
    threads = [
        threading.Thread(target=make, args=(alias, [s for s, a in placement.items() if a == alias][:8]))
        for alias in shards.shard_aliases()
        for _writer in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every_id = [row_id for _before, _after, ids in made for row_id in ids]
    assert len(every_id) == 2 * 3 * 20 * 8 * 25
    assert len(set(every_id)) == len(every_id), "an id was made twice"
    for before, after, ids in made:
        # Each id carries the millisecond it was made in (the clock of the same machine).
        assert all(before - 1 <= shards.time_of_id(row_id) <= after + 1 for row_id in ids)
    # Sorting ids sorts them by time: batches made one after another never interleave.
    ordered = sorted(made)
    for (_b1, end, first), (start, _a2, second) in itertools.pairwise(ordered):
        if end + 2 < start:
            assert max(shards.time_of_id(i) for i in first) <= min(shards.time_of_id(i) for i in second)
            assert max(first) < min(second)


@pytest.mark.django_db
def test_deleting_a_user_deletes_their_rows_on_their_shard(django_capture_on_commit_callbacks):
    user = make_user("leaving")
    start_job(user, "catalog_export")
    notifications.notify(user.pk, title="bye")
    user_id = user.pk
    with django_capture_on_commit_callbacks(execute=True):  # the rows go once the deletion commits
        user.delete()
    assert rows_everywhere(Notification, user_id=user_id) == {}
    assert rows_everywhere(Job, owner_id=user_id) == {}


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_deletion_waits_for_the_users_commit_and_happens_once_it_commits():
    user = make_user("leaving-later")
    notifications.notify(user.pk, title="still here")
    from django.db import transaction

    with transaction.atomic():
        get_user_model().objects.filter(pk=user.pk).first().delete()
        assert rows_everywhere(Notification, user_id=user.pk) == {shards.alias_of_user(user.pk): 1}
    assert rows_everywhere(Notification, user_id=user.pk) == {}


@pytest.mark.django_db
def test_staff_see_every_shards_jobs_merged_in_the_admin_with_their_owners(client):
    users = users_on_every_shard_database("admin")
    jobs = [start_job(user, "catalog_export") for user in users.values()]
    staff = make_user("boss")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    assert Client().get("/admin/jobs/job/").status_code == 302  # anonymous: to the log-in page
    client.force_login(staff)
    page = client.get("/admin/jobs/job/").content.decode()
    for job, user in zip(jobs, users.values(), strict=True):
        assert f">{job.pk}</a>" in page and f"<td>{user.username}</td>" in page
    assert page.index(str(jobs[1].pk)) < page.index(str(jobs[0].pk))  # merged newest first
    detail = client.get(f"/admin/jobs/job/{jobs[0].pk}/change/")
    assert detail.status_code == 200 and users[shards.alias_of_user(jobs[0].owner_id)].username in detail.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_moving_a_logical_shard_under_writes_loses_and_duplicates_nothing(settings):
    settings.HERD_SHARD_MAP_SECONDS = 0.2
    movers = [make_user(f"moving{n}") for n in range(1)]
    user = movers[0]
    logical = shards.shard_of_user(user.pk)
    source = shards.alias_of_user(user.pk)
    target = next(alias for alias in shards.shard_aliases() if alias != source)
    bystander = next(u for u in (make_user(f"bystander{n}") for n in range(8)) if shards.alias_of_user(u.pk) == source)
    for number in range(50):
        notifications.notify(user.pk, title=f"before-{number}")
    start_job(user, "catalog_export")

    stop = threading.Event()
    committed: Counter[str] = Counter()
    marked: list[int] = []
    seen_counts: list[int] = []
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            number = 0
            while not stop.is_set():
                title = f"w{writer}-{number}"
                note = notifications.notify(user.pk, title=title)
                committed[title] += 1
                if number % 5 == 0:  # an update (read_at), which the move must carry too
                    notifications.mark_read(user, note.pk)
                    marked.append(note.pk)
                notifications.notify(bystander.pk, title=title)
                number += 1
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    def read() -> None:
        try:
            while not stop.is_set():
                seen_counts.append(Notification.objects.for_user(user.pk).count())
                time.sleep(0.005)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    report = shard_moves.move(logical, target, grace_seconds=0.5)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors

    assert (report.source, report.target) == (source, target)
    assert shards.alias_of_user(user.pk) == target
    titles = Counter(Notification.objects.using(target).filter(user_id=user.pk).values_list("title", flat=True))
    expected = Counter({f"before-{n}": 1 for n in range(50)}) + committed
    assert titles == expected, "a committed notification was lost or duplicated"
    assert sum(committed.values()) > report.rows["notifications_notification"] - 50 > 0, "no writes before the switch"
    assert Notification.objects.using(source).filter(user_id=user.pk).count() == 0
    assert Job.objects.using(target).filter(owner_id=user.pk).count() == 1
    unread_marked = Notification.objects.using(target).filter(pk__in=marked, read_at__isnull=True).count()
    assert marked and unread_marked == 0, "an update made before the switch was not carried"
    # The user saw their data throughout: the count never went down.
    assert seen_counts and seen_counts == sorted(seen_counts)
    # Their neighbour on the old database kept every write, on the old database.
    assert Notification.objects.using(source).filter(user_id=bystander.pk).count() == sum(committed.values())
