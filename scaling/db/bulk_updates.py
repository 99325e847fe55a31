"""``QuerySet.update()`` sends no ``post_save``: ``SignallingQuerySet`` sends ``updating``
instead, so whatever caches what those rows show can flush it.

``updating`` is sent just before the ``UPDATE``, in one transaction with it, with the
queryset (its rows as they are before the update) and the names of the fields being set.
Receivers read what they need from the queryset and schedule their effects with
``transaction.on_commit``: these run only if the update commits, and after it, so a
reader cannot refill a cache from the rows before the update once it has been flushed.
"""

from __future__ import annotations

from django.db import models, router, transaction
from django.dispatch import Signal

# Sent with sender=model, queryset=the rows about to change, fields=frozenset of names.
updating = Signal()


class SignallingQuerySet(models.QuerySet):
    """A queryset whose ``update()`` (and so ``bulk_update()``) sends ``updating`` first."""

    def update(self, **kwargs) -> int:
        if not updating.has_listeners(self.model):
            return super().update(**kwargs)
        with transaction.atomic(using=self._db or router.db_for_write(self.model), savepoint=False):
            updating.send(sender=self.model, queryset=self, fields=frozenset(kwargs))
            return super().update(**kwargs)
