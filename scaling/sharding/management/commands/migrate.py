"""``manage.py migrate``: the main database, then every shard database (docs/SHARDING.md).

With ``--database ALIAS`` only that one, as Django does (the test runner migrates each
test database so). ``scaling.sharding.shards.ShardRouter.allow_migrate`` decides which models a
database gets: the sharded models (those declaring ``SHARD_KEY``) and the ownership table
on shards, the rest on the main primary.
"""

from django.conf import settings
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS


class Command(DjangoMigrate):
    help = "Updates the main database and every shard database to the current set of models and migrations."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def execute(self, *args, **options) -> str | None:
        if options.get("database") is not None:
            return super().execute(*args, **options)
        for alias in [DEFAULT_DB_ALIAS, *settings.SHARD_DATABASES]:
            if options.get("verbosity", 1) >= 1:
                self.stdout.write(f"Database {alias}:")
            super().execute(*args, **{**options, "database": alias})
        return None
