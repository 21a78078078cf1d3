"""Every module of pktlb says its role in a docstring, and every fast-path C file in a leading comment.

A reader opening any file first reads what it is for (issue 13 point 9). The check reads the files
(no import), so it also covers modules that only the lab or a rarely used command imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pktlb

ROOT = Path(pktlb.__file__).parent
PY_FILES = sorted(ROOT.rglob("*.py"))
C_FILES = sorted([*ROOT.rglob("*.c"), *ROOT.rglob("*.h")])


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent))


def test_the_walk_finds_the_tree():
    names = {_rel(p) for p in PY_FILES}
    assert "pktlb/core/engine/parse.py" in names and len(names) > 100
    assert any(p.name == "fastpath.bpf.c" for p in C_FILES)


@pytest.mark.parametrize("path", PY_FILES, ids=_rel)
def test_python_module_has_a_docstring(path: Path):
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    assert doc, f"{_rel(path)}: no module docstring; say the module's role in one to three lines"
    first = doc.splitlines()[0].strip()
    assert first, f"{_rel(path)}: the docstring's first line is empty; start with the module's role"


@pytest.mark.parametrize("path", C_FILES, ids=_rel)
def test_c_file_starts_with_a_comment(path: Path):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and lines[0].startswith("// SPDX-License-Identifier"):
        lines = lines[1:]
    assert lines and lines[0].lstrip().startswith(("/*", "//")), (
        f"{_rel(path)}: no leading comment; say the file's role in one to three lines"
    )
