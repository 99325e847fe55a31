from django.contrib import admin

from notifications.models import Notification
from scaling.sharding.admin import ShardedModelAdmin


@admin.register(Notification)
class NotificationAdmin(ShardedModelAdmin):
    """Read-only; the list fans out over the shard databases (``scaling.sharding.admin``)."""

    list_columns = ("title", "kind", "job_id", "created_at", "read_at")
    fields = ("id", "user_of", "kind", "title", "body", "link", "job", "product_id", "read_at", "created_at")
    readonly_fields = fields
