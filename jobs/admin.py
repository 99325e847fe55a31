from django.contrib import admin

from jobs.models import Job
from scaling.sharding.admin import ShardedModelAdmin


@admin.register(Job)
class JobAdmin(ShardedModelAdmin):
    """Read-only: jobs change state only through ``jobs.tasks``. Every value is escaped (no ``mark_safe``).

    The list fans out over the shard databases and joins owners in one query
    (``scaling.sharding.admin``).
    """

    list_columns = ("kind", "state", "progress", "attempts", "created_at", "finished_at")
    fields = (
        "id",
        "user_of",
        "kind",
        "state",
        "progress",
        "attempts",
        "params",
        "result",
        "error",
        "idempotency_key",
        "input_name",
        "output_name",
        "created_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
