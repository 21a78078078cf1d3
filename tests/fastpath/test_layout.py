"""The Python map layouts are the C structs: sizes from the object's BTF (bpftool), and the flow hash the
program computes is flowkey.flow_hash (checked through Maglev picks in the differential suite too)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pktlb.adapters.fastpath import object_path
from pktlb.core.fastpath import layout as L

pytestmark = pytest.mark.bpf


def test_struct_sizes_match_the_objects_btf():
    if not object_path().exists() or shutil.which("bpftool") is None:
        pytest.skip("needs `make fastpath` and bpftool")
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(object_path())], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"STRUCT '(\w+)' size=(\d+)", dump)}
    for name, size in L.SIZES.items():
        assert sizes.get(name) == size, (name, sizes.get(name), size)


def test_punt_reasons_follow_the_c_enum():
    header = (Path(__file__).resolve().parents[2] / "pktlb" / "fastpath" / "punt.h").read_text()
    body = header[header.index("enum punt_reason {"):header.index("PUNT_REASONS\n")]
    names = [n.lower() for n in re.findall(r"PUNT_(\w+)", body)]
    assert tuple(names) == L.PUNT_REASONS
