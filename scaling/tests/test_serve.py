"""``manage.py serve`` raises its own open-file limit: each WebSocket a replica holds is a
file, and a soft limit of 1,024 (a common default) would cap it at about that many."""

from __future__ import annotations

import resource

from scaling.management.commands.serve import raise_file_limit


def test_a_replica_raises_its_soft_open_file_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
