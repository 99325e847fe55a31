from django.contrib import admin

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "kind", "job", "created_at", "read_at")
    list_filter = ("kind", ("read_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("title", "body", "user__username", "user__email")
    list_select_related = ("user", "job")
    raw_id_fields = ("user", "job")
    readonly_fields = ("created_at",)
    date_hierarchy = "created_at"
    show_full_result_count = False
