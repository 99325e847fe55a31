"""Database routing: writes to the primary, reads to a healthy replica.

Guarantees today:

- every write goes to ``default``, the primary;
- a read inside a transaction on the primary (``atomic()``, ``select_for_update``)
  reads the primary, so it sees its own uncommitted rows;
- a read outside one goes to a healthy replica (``scaling.replicas``); with none
  healthy it goes to the primary, never to an error;
- migrations run on the primary only (replicas receive them by streaming).

Read-your-writes across requests (the writer's WAL position stored in Redis) grows
here next; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import random

from django.db import connections

from scaling.replicas import PRIMARY, replica_health


class PrimaryReplicaRouter:
    def db_for_read(self, model, **hints) -> str:
        if connections[PRIMARY].in_atomic_block:
            return PRIMARY
        healthy = replica_health.healthy_aliases()
        return random.choice(healthy) if healthy else PRIMARY  # noqa: S311 (load spreading)

    def db_for_write(self, model, **hints) -> str:
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        # Every alias holds the same data: replicas are copies of the primary.
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return db == PRIMARY
