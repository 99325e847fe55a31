"""Writes of the accounts app. Each is one transaction: all of it happens or none."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from accounts.models import Profile, User
from accounts.pictures import ProcessedPicture


@transaction.atomic
def create_user(*, username: str, email: str, password: str) -> User:
    user = User.objects.create_user(username=username, email=email, password=password)
    Profile.objects.create(user=user)
    return user


def profile_of(user: User) -> Profile:
    """The user's profile, created on first use for users made outside ``create_user``.
    Read first (where reads go: a replica, even while the primary is away); only a
    missing one costs the primary a transaction."""
    profile = Profile.objects.filter(user=user).first()
    if profile is None:
        profile, _ = Profile.objects.get_or_create(user=user)
    return profile


def _store(name: str, data: bytes) -> str:
    # Content-addressed: an existing file of that name already holds these bytes.
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(data))
    return name


@transaction.atomic
def update_profile(user: User, *, display_name: str, bio: str, picture: ProcessedPicture | None = None) -> Profile:
    """Save the profile; a new picture (already validated) is stored under its hash."""
    profile = Profile.objects.select_for_update().get_or_create(user=user)[0]
    profile.display_name = display_name
    profile.bio = bio
    if picture is not None:
        profile.picture.name = _store(f"avatars/{picture.digest}.webp", picture.picture)
        profile.thumbnail.name = _store(f"avatars/{picture.digest}-thumb.webp", picture.thumbnail)
    profile.save()
    return profile
