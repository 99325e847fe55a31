"""The worker pod's liveness probe: ``python -m scaling.heartbeat PATH MAX_AGE`` exits 0
while the heartbeat file ``PATH`` (touched by ``scaling.queue.WorkerHeartbeat``) is at
most ``MAX_AGE`` seconds old, 1 otherwise. Standard library only, no Django set-up: the
kubelet runs it every few seconds.
"""

from __future__ import annotations

import os
import sys
import time


def age(path: str) -> float:
    """Seconds since ``path`` was touched; infinite if it does not exist."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


def main(argv: list[str]) -> int:
    path, max_age = argv[0], float(argv[1])
    seconds = age(path)
    print(f"heartbeat {path}: {seconds:.0f}s old (at most {max_age:g}s)")
    return 0 if seconds <= max_age else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
