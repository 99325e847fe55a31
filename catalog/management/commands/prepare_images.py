"""``manage.py prepare_images``: send the prepare job (``catalog.tasks.prepare_image``) for
every uploaded picture whose sizes are not prepared yet (one whose job could not be sent
while the broker was down); ``--here`` prepares them in this process instead."""

from django.core.management.base import BaseCommand

from catalog.models import ImageFile
from catalog.tasks import prepare_image
from scaling.db.consistency import use_primary


class Command(BaseCommand):
    help = "Prepare the sizes of every product picture that has none yet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--here", action="store_true", help="prepare in this process, not in the worker")

    def handle(self, *args, here: bool, **options) -> None:
        with use_primary():
            waiting = list(ImageFile.objects.filter(prepared_at=None).order_by("id").values_list("id", flat=True))
        for image_file_id in waiting:
            if here:
                prepare_image.fn(image_file_id)
            else:
                prepare_image.send(image_file_id)
        self.stdout.write(f"{len(waiting)} pictures {'prepared' if here else 'sent to the worker'}")
