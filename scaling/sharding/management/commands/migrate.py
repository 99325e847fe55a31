"""``manage.py migrate``: the main database, then every shard database (docs/SHARDING.md),
one run at a time.

With ``--database ALIAS`` only that one, as Django does (the test runner migrates each
test database so). ``scaling.sharding.shards.ShardRouter.allow_migrate`` decides which models a
database gets: the sharded models (those declaring ``SHARD_KEY``) and the ownership table
on shards, the rest on the main primary.

Runs are serialised: each holds a session advisory lock (``MIGRATION_LOCK``) on every
database it migrates, taken in one order (the main database, then the shards) on a
connection of its own, before it reads what is applied, and released when it ends or
its connection drops. So any number of pods may run it at once (the web and worker
pods' init container does, docs/DEPLOY.md): the first migrates, the others wait, then
find nothing to apply. ``--check`` and ``--plan`` read without the lock. The lock's
sessions are named ``herd-migrate <hostname>`` (``application_name``), so an operator sees
which pod holds it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import psycopg
from django.conf import settings
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS, connections

# pg_advisory_lock's key for "a migrate runs on this database": any fixed bigint.
MIGRATION_LOCK = 0x48455244_4D494752  # "HERDMIGR"


def lock_holder_name() -> str:
    """The ``application_name`` of the sessions that hold the lock: ``herd-migrate <host>``,
    the host being the pod's name in the cluster (docs/DEPLOY.md, "A stuck migration")."""
    return f"herd-migrate {socket.gethostname()}"[:63]


@contextlib.contextmanager
def migration_lock(aliases: list[str], say=lambda line: None) -> Iterator[None]:
    """Hold ``MIGRATION_LOCK`` on each database of ``aliases``, in that order, until the end."""
    with contextlib.ExitStack() as held:
        for alias in aliases:
            params = {**connections[alias].get_connection_params(), "autocommit": True}
            # Who holds the lock, in pg_stat_activity: the pod (its hostname) that runs this.
            params["application_name"] = lock_holder_name()
            with connections[alias].wrap_database_errors:  # Django's errors, as migrate's own
                session = held.enter_context(psycopg.connect(**params))
            if not session.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone()[0]:
                say(f"Another migrate runs on {alias}: waiting for it to finish.")
                session.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        yield


class Command(DjangoMigrate):
    help = "Updates the main database and every shard database to the current set of models and migrations."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def execute(self, *args, **options) -> str | None:
        aliases = [options["database"]] if options.get("database") else [DEFAULT_DB_ALIAS, *settings.SHARD_DATABASES]
        read_only = options.get("check_unapplied") or options.get("plan")
        lock = contextlib.nullcontext() if read_only else migration_lock(aliases, self.stdout.write)
        with lock:
            if options.get("database") is not None:
                return super().execute(*args, **options)
            for alias in aliases:
                if options.get("verbosity", 1) >= 1:
                    self.stdout.write(f"Database {alias}:")
                super().execute(*args, **{**options, "database": alias})
        return None
