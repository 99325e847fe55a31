"""The registry of job kinds: each app registers the kinds it owns; the jobs app names none.

An app registers its kinds with ``register(Kind(...))`` in its ``jobs.py`` module, which
``JobsConfig.ready`` imports (``autodiscover_modules("jobs")``). A kind's name is what
``Job.kind`` stores and the start URL carries; registering one name twice is an error.

A handler ``handler(job, progress)`` does the slow part that changes nothing (reading,
checking, building) and returns ``apply``: the effect, which ``jobs.tasks`` runs in one
transaction on the main database, before the job is marked finished. ``apply`` may run
again for a redelivered message: it must be idempotent. A handler raises ``JobRefused``
when the job cannot be done as asked: it fails at once with that reason, not retried.
The retry policy and the staff check of ``staff_only`` kinds are the runner's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.forms import StartJobForm
    from jobs.models import Job
    from jobs.progress import Progress


class JobRefused(Exception):
    """The job cannot be done as asked: it fails with ``reason`` (shown to its owner), without retrying."""

    def __init__(self, reason: str, result: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result or {}


@dataclass(frozen=True)
class Outcome:
    result: dict = field(default_factory=dict)
    output_name: str = ""


Apply = Callable[[], Outcome]
Handler = Callable[["Job", "Progress"], Apply]


def _no_summary(result: dict) -> str:
    return ""


@dataclass(frozen=True)
class Kind:
    """One kind of job, as its owning app registers it."""

    name: str  # stored in Job.kind and carried by the start URL
    label: str  # "Catalog export": the job's title on its pages and in its notification
    handler: Handler
    start_label: str  # the text of its start button on the jobs page
    summary: Callable[[dict], str] = _no_summary  # a succeeded job's result in one sentence
    form: type[StartJobForm] | None = None  # None: jobs.forms.StartJobForm (no fields)
    heading: str = ""  # a heading above its start form
    staff_only: bool = False  # refused to others at the start, and checked again when it runs
    input_suffix: str = ""  # of the stored input file's name
    output_suffix: str = ""  # of the downloaded output file's name
    output_content_type: str = "application/octet-stream"
    # Errors of its handler that say "not now" (retried like a lost connection).
    transient: tuple[type[BaseException], ...] = ()


_kinds: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in _kinds and _kinds[kind.name] != kind:
        raise ValueError(f"the job kind {kind.name!r} is registered already, by {_kinds[kind.name].handler.__module__}")
    _kinds[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    """The registered kind ``name``; raises ``KeyError`` for another."""
    return _kinds[name]


def find(name: str) -> Kind | None:
    return _kinds.get(name)


def all_kinds() -> Iterable[Kind]:
    """Every registered kind, in the order of registration."""
    return tuple(_kinds.values())


def label_of(name: str) -> str:
    """The kind's label; the stored name itself for a kind no app registers (any more)."""
    registered = _kinds.get(name)
    return registered.label if registered else name


def transient_errors() -> tuple[type[BaseException], ...]:
    """The "not now" errors that registered kinds declare."""
    return tuple(error for registered in _kinds.values() for error in registered.transient)
