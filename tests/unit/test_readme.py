"""The README stays true to the tree: its first commands, its Debian packages, its paths, its Layout.

Each check reads files only (no root, no lab): the Makefile's DEBS are all listed, every ``pktlb/...``
path the prose names exists, and every package directory of ``pktlb/`` has a line in the Layout.
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _prose(text: str) -> str:
    """The text outside fenced code blocks (recorded outputs may name files as they were then)."""
    return "".join(part for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)) if i % 2 == 0)


def _expand(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (brace groups, as the README writes them)."""
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in product(*choices)]


def test_the_readme_starts_with_make_demo_and_make_test():
    first_block = README.split("```")[1].splitlines()[1:]
    commands = [line.split("#")[0].strip() for line in first_block if line.strip()]
    assert commands[:2] == ["make demo", "make test"]


def test_every_debian_package_of_the_makefile_is_listed():
    debs = re.search(r"^DEBS\s*:=\s*(.*)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert debs
    paragraph = README[README.index("Debian packages the lab") :].split("\n\n")[0]
    missing = [p for p in debs.group(1).split() if not re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", paragraph)]
    assert not missing, f"README's Debian package paragraph lacks {missing} (Makefile DEBS)"


def test_every_path_the_readme_names_exists():
    named = set(re.findall(r"`(pktlb/[\w/{},.*-]+)`", _prose(README)))
    missing = [
        p for name in sorted(named) for p in _expand(name) if "*" not in p and not (REPO / p).exists()
    ]
    assert not missing, f"README names paths that do not exist: {missing}"


def test_the_layout_names_every_package():
    layout = README[README.index("## Layout") :].split("\n## ")[0]
    dirs = sorted(
        d
        for d in (REPO / "pktlb").rglob("*")
        if d.is_dir() and d.name != "__pycache__" and (any(d.glob("*.py")) or any(d.glob("*.c")))
    )
    missing = []
    for d in dirs:
        rel = d.relative_to(REPO / "pktlb")
        if not re.search(rf"(^|\s|pktlb/){re.escape(rel.name)}/", layout):
            missing.append(str(rel))
    assert not missing, f"README's Layout has no line for {missing}"
