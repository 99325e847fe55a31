"""Database routing: writes and migrations to the primary, reads where
``scaling.db.consistency`` says (docs/READS.md).
"""

from __future__ import annotations

from scaling.db import consistency
from scaling.db.replicas import PRIMARY


class PrimaryReplicaRouter:
    def db_for_read(self, model, **hints) -> str:
        return consistency.read_alias()

    def db_for_write(self, model, **hints) -> str:
        consistency.note_write()
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        # Every alias holds the same data: replicas are copies of the primary.
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return db == PRIMARY
