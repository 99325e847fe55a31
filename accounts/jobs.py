"""The accounts' kind of job (registered with ``jobs.kinds``): make a profile's thumbnail again.

Its ``apply`` is idempotent: the thumbnail is content-addressed, and a picture uploaded
while the job ran (with its own thumbnail) is kept. ``DecodersBusy`` (every decode slot
of the worker taken) is retried like a lost connection.
"""

from __future__ import annotations

import hashlib

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import Profile
from accounts.pictures import DecodersBusy, process_picture
from jobs.kinds import Apply, JobRefused, Kind, Outcome, register
from jobs.models import Job
from jobs.progress import Progress

PICTURE_THUMBNAIL = "picture_thumbnail"


def picture_thumbnail(job: Job, progress: Progress) -> Apply:
    """Rebuild the owner's thumbnail from their stored picture (the same code as an upload)."""
    profile = Profile.objects.filter(user_id=job.owner_id).first()
    if profile is None or not profile.picture:
        raise JobRefused("Your profile has no picture to make a thumbnail from.")
    picture_name = profile.picture.name
    try:
        with default_storage.open(picture_name) as stored:
            data = stored.read()
    except FileNotFoundError as error:
        raise JobRefused("Your picture's file is missing; upload your picture again.") from error
    progress(30)
    try:
        thumbnail = process_picture(ContentFile(data)).thumbnail
    except ValidationError as error:
        raise JobRefused(f"Your stored picture cannot be read: {' '.join(error.messages)}") from error
    progress(80)
    # Content-addressed like every picture: a name never changes meaning, so it is cached forever.
    name = f"avatars/thumbnails/{hashlib.sha256(thumbnail).hexdigest()}.webp"

    def apply() -> Outcome:
        locked = Profile.objects.select_for_update().get(pk=profile.pk)
        if locked.picture.name != picture_name:
            # A new upload came in meanwhile, with a thumbnail made from it: keep that one.
            return Outcome({"thumbnail": locked.thumbnail.name, "kept": "the picture changed while this job ran"})
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(thumbnail))
        locked.thumbnail.name = name
        locked.save(update_fields=["thumbnail", "updated_at"])
        return Outcome({"thumbnail": name, "bytes": len(thumbnail)})

    return apply


register(
    Kind(
        name=PICTURE_THUMBNAIL,
        label="Picture thumbnail",
        handler=picture_thumbnail,
        start_label="Make my thumbnail again",
        summary=lambda result: "Your thumbnail was made again from your picture.",
        transient=(DecodersBusy,),
    )
)
