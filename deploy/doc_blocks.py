"""Generated blocks in hand-written docs: ``make bench`` and ``make drills`` replace what lies
between their two markers and keep the prose around it; ``provenance`` names the code measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replace_block(path: Path, begin: str, end: str, block: str) -> None:
    """Put ``block`` (markers included) where ``begin``..``end`` was, or at the end of ``path``."""
    text = path.read_text() if path.exists() else f"# {path.stem.title()}\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def provenance() -> str:
    """The commit the figures come from (``git rev-parse --short HEAD``), and whether the
    working tree differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} + uncommitted changes" if git("status", "--porcelain") else commit
