"""``manage.py shards``: the shard map and row counts; ``shards move LOGICAL_SHARD TARGET_DB``.

See docs/SHARDING.md for the layout and ``scaling.sharding.moves`` for the move's steps.
"""

from __future__ import annotations

from itertools import groupby

from django.core.management.base import BaseCommand, CommandError

from scaling.sharding import moves as shard_moves
from scaling.sharding import shards


def _spans(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts = []
    for _key, run in groupby(enumerate(sorted(numbers)), key=lambda pair: pair[1] - pair[0]):
        values = [value for _index, value in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ", ".join(parts)


class Command(BaseCommand):
    help = "Show the shard map and row counts, or move one logical shard to another shard database online."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action")
        move = actions.add_parser("move", help="move a logical shard to another database while writes go on")
        move.add_argument("logical_shard", type=int)
        move.add_argument("target", help="a shard database alias: shard1, shard2, ...")
        move.add_argument("--grace", type=float, default=None, help="seconds before deleting the old copy")

    def handle(self, *args, **options) -> None:
        if options.get("action") == "move":
            try:
                report = shard_moves.move(
                    options["logical_shard"], options["target"], grace_seconds=options["grace"], say=self.stdout.write
                )
            except shard_moves.MoveRefused as refusal:
                raise CommandError(str(refusal)) from refusal
            self.stdout.write(
                f"moved logical shard {report.logical_shard} from {report.source} to {report.target}: "
                f"{report.rows} rows, writes held back {report.held_lock_ms:.0f} ms"
            )
            return
        shards.shard_map.refresh(force=True)
        placement = shards.shard_map.placement()
        counts = shard_moves.row_counts()
        tables = sorted({table for per_table in counts.values() for table in per_table})
        self.stdout.write(f"{shards.LOGICAL_SHARDS} logical shards, map version {shards.shard_map.version()}")
        header = "  ".join(f"{table:>28}" for table in tables)
        self.stdout.write(f"{'database':<10} {'shards':>6}  {header}  logical shards")
        for alias in shards.shard_aliases():
            mine = [shard for shard, where in placement.items() if where == alias]
            row = "  ".join(f"{counts[alias].get(t, 0):>28}" for t in tables)
            spans = _spans(mine) or "-"
            self.stdout.write(f"{alias:<10} {len(mine):>6}  {row}  {spans if len(spans) <= 60 else spans[:57] + '...'}")
