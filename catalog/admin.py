from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html

from accounts.pictures import DecodersBusy
from catalog import images, services
from catalog.models import Category, Product, ProductImage, Review

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


def thumbnail_html(original: str | None, renditions: dict | None, alt: str = "") -> str:
    """The smallest prepared WebP of a picture (its original until prepared), 64 px wide."""
    if not original:
        return ""
    smallest = (renditions or {}).get("webp") or [[0, 0, original]]
    return format_html(
        '<img src="{}" alt="{}" width="64" loading="lazy" decoding="async">',
        default_storage.url(smallest[0][2]),
        alt,
    )


class ProductImageForm(forms.ModelForm):
    """A picture: uploaded and checked like a profile picture; the sizes are prepared on commit."""

    upload = forms.FileField(
        label="Picture",
        required=False,
        help_text="JPEG, PNG or WebP, at most 5 MB and 16 megapixels. Leave empty to keep the current one.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
    )

    class Meta:
        model = ProductImage
        fields = ("upload", "alt", "position")

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        self.checked = None
        if upload:
            try:
                self.checked = images.check_upload(upload)
            except DecodersBusy as error:
                raise ValidationError("The server is busy with other pictures; please try again.") from error
        elif not self.instance.pk:
            raise ValidationError("Choose a picture to upload.", code="required")
        return upload

    def save(self, commit: bool = True) -> ProductImage:
        if self.checked is not None:
            self.instance.image = services.image_file_for(self.checked)
        return super().save(commit)


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    extra = 1
    fields = ("preview", "upload", "alt", "position")
    readonly_fields = ("preview",)
    ordering = ("position", "id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProductImage]:
        return super().get_queryset(request).select_related("image")

    @admin.display(description="Current")
    def preview(self, product_image: ProductImage) -> str:
        if not product_image.pk:
            return ""
        image = product_image.image
        return thumbnail_html(image.original.name, image.renditions, product_image.alt)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    inlines = (ProductImageInline,)
    list_display = ("thumbnail", "name", "category", "price", "stock", "rating_count", "rating_average", "created_at")
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        # Each row's first picture in the page's one query (two index probes a row), not a query a row.
        first = ProductImage.objects.filter(product=OuterRef("pk")).order_by("position", "id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                first_image=Subquery(first.values("image__original")[:1]),
                first_renditions=Subquery(first.values("image__renditions")[:1]),
            )
        )

    @admin.display(description="Picture")
    def thumbnail(self, product: Product) -> str:
        return thumbnail_html(product.first_image, product.first_renditions)


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
