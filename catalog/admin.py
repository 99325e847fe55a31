from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog import services
from catalog.models import Category, Product, Review

RATING_NOTE = "Maintained by the review write path (catalog.services); change reviews, not these numbers."


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


class InStockFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "in_stock"

    def lookups(self, request, model_admin):
        return [("yes", "In stock"), ("no", "Out of stock")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(stock__gt=0)
        if self.value() == "no":
            return queryset.filter(stock=0)
        return queryset


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "category", "price", "stock", "rating_count", "rating_average", "created_at")
    list_filter = ("category", InStockFilter)
    search_fields = ("name", "slug")
    list_select_related = ("category",)
    autocomplete_fields = ("category",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("rating_count", "rating_sum", "rating_average", "created_at", "updated_at")
    fieldsets = [
        (None, {"fields": ("category", "name", "slug", "description", "price", "stock")}),
        ("Rating summary", {"fields": ("rating_count", "rating_sum", "rating_average"), "description": RATING_NOTE}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    ]
    ordering = ("-id",)
    # A million products: skip the second, unfiltered COUNT(*) on every changelist.
    show_full_result_count = False

    @admin.display(description="Average rating")
    def rating_average(self, product: Product) -> float | None:
        return product.rating_average


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    """Saves and deletes go through ``catalog.services`` so the products' rating summaries stay right."""

    list_display = ("product", "user", "rating", "created_at")
    list_filter = ("rating", "created_at")
    search_fields = ("text", "user__username", "product__name", "product__slug")
    list_select_related = ("product", "user")
    raw_id_fields = ("user", "product")
    ordering = ("-id",)
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Review | None = None):
        # Moving a review to another product or author would be a delete plus a post.
        return ("product", "user", "created_at") if obj else ("created_at",)

    def save_model(self, request: HttpRequest, obj: Review, form, change: bool) -> None:
        if change:
            services.edit_review(obj, rating=obj.rating, text=obj.text)
            return
        saved = services.post_review(user=obj.user, product=obj.product, rating=obj.rating, text=obj.text)
        obj.pk, obj.created_at = saved.pk, saved.created_at

    def delete_model(self, request: HttpRequest, obj: Review) -> None:
        services.delete_review(obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        for review in queryset.order_by("product_id"):
            services.delete_review(review)
