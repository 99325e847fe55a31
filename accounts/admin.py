from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.html import format_html

from accounts.models import Profile, User


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    fields = ("display_name", "bio", "picture", "thumbnail", "updated_at")
    readonly_fields = ("picture", "thumbnail", "updated_at")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = [ProfileInline]
    list_display = ("username", "email", "display_name", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "date_joined", "last_login")
    search_fields = ("username", "email", "first_name", "last_name", "profile__display_name")
    list_select_related = ("profile",)
    date_hierarchy = "date_joined"

    @admin.display(description="Display name", ordering="profile__display_name")
    def display_name(self, user: User) -> str:
        profile = getattr(user, "profile", None)
        return profile.display_name if profile else ""


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "display_name", "has_picture", "picture_preview", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("user__username", "user__email", "display_name", "bio")
    list_select_related = ("user",)
    readonly_fields = ("picture", "thumbnail", "picture_preview", "updated_at")
    autocomplete_fields = ("user",)

    @admin.display(boolean=True, description="Picture")
    def has_picture(self, profile: Profile) -> bool:
        return bool(profile.picture)

    @admin.display(description="Preview")
    def picture_preview(self, profile: Profile) -> str:
        if not profile.thumbnail:
            return ""
        return format_html('<img src="{}" width="48" height="48" alt="">', profile.thumbnail.url)
