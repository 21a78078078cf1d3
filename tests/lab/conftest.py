"""Fixtures for tests that build real labs in network namespaces (root only).

``lab_factory(mode, backends=3, engine="none", **opts)`` builds a lab with a unique prefix
(``pktlb-t<hex>-``) and returns a :class:`LabHandle`; every lab it made is torn down in a
finalizer, also when the test fails.  Without root the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pktlb.lab.manage import UpResult, lab_down, lab_up, service_states
from pktlb.lab.netns import DEFAULT_TIMEOUT, Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.status import lab_status
from pktlb.lab.topology import LabOptions

PKTLB = str(Path(sys.executable).parent / "pktlb")


def unique_prefix() -> str:
    return f"pktlb-t{secrets.token_hex(3)}-"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root to create network namespaces (run `make test` as root)")


class LabHandle:
    """A lab built for one test, with helpers to run things in its nodes."""

    def __init__(self, prefix: str, result: UpResult):
        self.prefix, self.result, self.plan = prefix, result, result.plan
        self.vip = self.plan.constants["vip"]
        self.paths = LabPaths.at(self.plan.statedir)
        self.statedir = self.paths.statedir

    def ns(self, node: str) -> str:
        return self.prefix + node

    def netns(self, node: str) -> Namespace:
        return Namespace(self.ns(node))

    def backends(self) -> list[Any]:
        return self.plan.by_role("backend")

    def run(self, node: str, argv: list[str], *, timeout: float = DEFAULT_TIMEOUT,
            check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv in a node (CommandError after the timeout, or for a non-zero exit with ``check``)."""
        return self.netns(node).run(argv, timeout=timeout, check=check, stdin=stdin)

    def popen(self, node: str, argv: list[str], **options: Any) -> subprocess.Popen[Any]:
        """Start argv in a node (``Namespace.popen``'s options: stdout, stderr, text ...)."""
        return self.netns(node).popen(argv, **options)

    def curl(self, node: str, url: str, *, interface: str | None = None, max_time: float = 5) -> subprocess.CompletedProcess[str]:
        argv = ["curl", "-sS", "--max-time", str(max_time)] + (["--interface", interface] if interface else []) + [url]
        return self.run(node, argv, timeout=max_time + 5)

    def curl_json(self, node: str, url: str, *, interface: str | None = None) -> dict[str, Any]:
        done = self.curl(node, url, interface=interface)
        assert done.returncode == 0, f"curl {url} from {node} failed ({done.returncode}): {done.stderr.strip()}"
        return json.loads(done.stdout)

    def services(self) -> dict[str, dict[str, Any]]:
        return service_states(self.paths)

    def await_service(self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """Wait (bounded) until the supervisor's record of a service satisfies predicate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.services().get(name)
            if record and predicate(record):
                return record
            time.sleep(0.05)
        raise AssertionError(f"service {name} never reached the expected state: {self.services().get(name)}")

    def status(self) -> dict[str, Any]:
        return lab_status(self.prefix)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PKTLB, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., LabHandle]]:
    """Build labs that are always torn down, whatever happens in the test."""
    prefixes: list[str] = []

    def make(mode: str, backends: int = 3, engine: str = "none", **opts: Any) -> LabHandle:
        need_root()
        prefix = opts.pop("prefix", None) or unique_prefix()
        prefixes.append(prefix)  # recorded first: a failure half-way through `up` is cleaned up too
        result = lab_up(LabOptions(mode=mode, backends=backends, engine=engine, prefix=prefix, **opts))
        return LabHandle(prefix, result)

    yield make
    for prefix in prefixes:
        lab_down(prefix)
