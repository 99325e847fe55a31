"""``manage.py seed_demo``: the demo data the local herd starts with. Idempotent."""

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS

from accounts import services
from accounts.models import User
from catalog.models import Product

DEMO_PRODUCTS = 2_000

DEMO_PASSWORD = "herd-demo-password"  # noqa: S105 (printed by `make up`: demo only)
DEMO_USERS = [
    {"username": "demo", "email": "demo@example.com", "display_name": "Demo Shopper"},
    {"username": "staff", "email": "staff@example.com", "display_name": "Staff", "staff": True},
]


class Command(BaseCommand):
    help = "Create the demo users (and, as the apps grow, their demo data). Safe to rerun."

    def handle(self, *args, **options) -> None:
        for demo in DEMO_USERS:
            username = demo["username"]
            user = User.objects.filter(username=username).first()
            created = user is None
            if created:
                user = services.create_user(username=username, email=demo["email"], password=DEMO_PASSWORD)
                user.is_staff = user.is_superuser = demo.get("staff", False)
                user.save(update_fields=["is_staff", "is_superuser"])
                services.update_profile(user, display_name=demo["display_name"], bio="")
            verb = "created" if created else "already present"
            self.stdout.write(f"demo user {username!r} {verb} (password {DEMO_PASSWORD!r})")
        # Asked of the primary: a lagging replica must not make a rerun seed twice.
        if Product.objects.using(DEFAULT_DB_ALIAS).exists():
            self.stdout.write("demo catalog already present: not seeded again")
        else:
            self.stdout.write(f"seeding the demo catalog with {DEMO_PRODUCTS:,} products")
            call_command("seed_catalog", products=DEMO_PRODUCTS)
