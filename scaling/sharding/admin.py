"""The Django admin for sharded models: read-only, staff only, and explicit about fanning out.

The change list cannot be one query (the rows are spread over the shard databases): it
asks every shard for its newest rows (``scaling.sharding.shards.merged``), merges them, and joins
their users from the main database in one batched query. A row's page finds it by its
id, which names its shard. Nothing is added, changed or deleted here.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from scaling.sharding import shards


def users_by_id(user_ids: set[int]) -> dict[int, object]:
    """The users with these ids, from the main database in one query (an application-side join)."""
    return get_user_model().objects.in_bulk(user_ids) if user_ids else {}


class ShardedModelAdmin(admin.ModelAdmin):
    list_limit = 100
    list_columns: tuple[str, ...] = ()
    list_order = ("-created_at", "-id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        # A missing row is a 404 (Django's admin redirects with a message; these pages are
        # read-only and reached by id, so the plain answer is clearer).
        try:
            row_id = int(object_id)
        except (TypeError, ValueError):
            raise Http404("Not a row id.") from None
        row = self.model.objects.for_id(row_id).first()
        if row is None:
            raise Http404("No such row.")
        return row

    @admin.display(description="user")
    def user_of(self, obj) -> str:
        user = users_by_id({getattr(obj, shards.shard_key(type(obj)))}).get(getattr(obj, shards.shard_key(type(obj))))
        return user.get_username() if user else f"deleted user {getattr(obj, shards.shard_key(type(obj)))}"

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        rows = shards.merged(self.model, self.list_order, self.list_limit)
        key = shards.shard_key(self.model)
        users = users_by_id({getattr(row, key) for row in rows})
        table = [
            {
                "id": row.pk,
                "shard": row._state.db,
                "user": users.get(getattr(row, key)),
                "values": [getattr(row, column) for column in self.list_columns],
            }
            for row in rows
        ]
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": f"Newest {opts.verbose_name_plural} on every shard",
            "columns": [opts.get_field(column).verbose_name for column in self.list_columns],
            "rows": table,
            "limit": self.list_limit,
            "shards": shards.shard_aliases(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/sharded_change_list.html", context)
