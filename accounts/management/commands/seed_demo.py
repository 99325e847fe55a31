"""``manage.py seed_demo``: the demo data the local herd starts with. Idempotent."""

from django.core.management.base import BaseCommand

from accounts.models import User

DEMO_PASSWORD = "herd-demo-password"  # noqa: S105 (printed by `make up`: demo only)
DEMO_USERS = [
    {"username": "demo", "email": "demo@example.com"},
    {"username": "staff", "email": "staff@example.com", "is_staff": True, "is_superuser": True},
]


class Command(BaseCommand):
    help = "Create the demo users (and, as the apps grow, their demo data). Safe to rerun."

    def handle(self, *args, **options) -> None:
        for fields in DEMO_USERS:
            username = fields["username"]
            user, created = User.objects.get_or_create(username=username, defaults=fields)
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
            verb = "created" if created else "already present"
            self.stdout.write(f"demo user {username!r} {verb} (password {DEMO_PASSWORD!r})")
