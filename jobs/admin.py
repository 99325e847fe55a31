from django.contrib import admin

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs change state only through ``jobs.tasks``. Every value is escaped (no ``mark_safe``)."""

    list_display = ("id", "kind", "owner", "state", "progress", "attempts", "created_at", "finished_at")
    list_filter = ("state", "kind", "created_at")
    search_fields = ("=id", "owner__username", "owner__email", "error")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False
    fields = (
        "id",
        "owner",
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
