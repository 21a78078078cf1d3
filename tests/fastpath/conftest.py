"""Shared by the fast-path tests: skip, with the reason, where the program cannot be loaded here."""

from __future__ import annotations

import pytest

from pktlb.adapters.fastpath import availability


@pytest.fixture
def needs_fastpath() -> None:
    why = availability()
    if why:
        pytest.skip(f"fast path unavailable: {why}")
