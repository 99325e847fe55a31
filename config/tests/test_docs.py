"""The docs name only files and tests that exist: a moved module or a renamed test fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
EXTENSIONS = "py|md|html|yaml|cfg|template|js|css|txt|toml|json"
# `path/to/file.ext` or `path/to/test_file.py::test_name`, in backticks.
PATH = re.compile(rf"`([\w.-]+(?:/[\w.-]+)+\.(?:{EXTENSIONS}))(?:::(\w+))?`")
# A test named alone (`test_x`, or `test_x_*` for several).
TEST = re.compile(r"`(test_\w+\*?)`")
# Named in the docs but outside this repository.
ELSEWHERE = {"seed/scalable-system.txt"}


def _tests_defined() -> str:
    files = [p for p in ROOT.rglob("test_*.py") if ".venv" not in p.parts]
    return "\n".join(p.read_text() for p in files)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_and_test_a_doc_names_exists(doc):
    text = doc.read_text()
    missing = []
    for path, test in PATH.findall(text):
        if path in ELSEWHERE:
            continue
        if not (ROOT / path).exists():
            missing.append(path)
        elif test and not re.search(rf"^(?:async )?def {test}\(", (ROOT / path).read_text(), re.M):
            missing.append(f"{path}::{test}")
    defined = _tests_defined()
    for name in TEST.findall(text):
        pattern = re.escape(name.rstrip("*")) + (r"\w*" if name.endswith("*") else "")
        if not re.search(rf"^\s*(?:async )?def {pattern}\(", defined, re.M):
            missing.append(name)
    assert not missing, f"{doc.name} names what does not exist: {missing}"
