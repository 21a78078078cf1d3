"""Every module of pktlb imports: a name moved to another module (``from x import gone``) fails here.

ruff cannot see such a break (the import statement is well formed), and a module that only the lab
or a rarely used command imports would otherwise fail first in front of a user.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import pktlb

MODULES = sorted(info.name for info in pkgutil.walk_packages(pktlb.__path__, "pktlb."))


def test_the_package_has_its_modules():
    assert len(MODULES) > 100 and "pktlb.core.engine" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
