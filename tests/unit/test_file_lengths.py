"""Every source file under pktlb/ stays short: about 400 lines at most, one job per module (issue 13).

A file that grows past the limit is split along a real seam (what it does in two jobs), not cut at
the line count; the limit leaves a small margin above 400 so that a one-line fix does not force a
split.  The check reads the files, so it covers Python, the fast path's C and the dashboard's page.
"""

from __future__ import annotations

from pathlib import Path

import pktlb

ROOT = Path(pktlb.__file__).parent
MAX_LINES = 420
SOURCE_SUFFIXES = {".py", ".c", ".h", ".js", ".css", ".html"}


def source_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*") if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts)


def test_the_walk_finds_the_tree():
    names = {p.relative_to(ROOT.parent).as_posix() for p in source_files()}
    assert "pktlb/core/engine/parse.py" in names and "pktlb/fastpath/fastpath.bpf.c" in names


def test_no_source_file_under_pktlb_is_longer_than_the_limit():
    too_long = {p.relative_to(ROOT.parent).as_posix(): n for p in source_files()
                if (n := len(p.read_text(errors="replace").splitlines())) > MAX_LINES}
    assert not too_long, (f"files over {MAX_LINES} lines: {too_long}; split each along a real seam "
                          "(one job per module) and list the new modules in the README's Layout")
