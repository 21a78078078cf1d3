"""Where a lab keeps its files: ``LabPaths(prefix)`` knows every path, and ``labs_present()`` lists the labs.

One directory per prefix, ``/run/pktlb/<prefix>/`` (the root can be moved with ``$PKTLB_STATE_ROOT``):

    state.json            what `lab up` created (options, namespaces, supervisor PID and start time)
    services.json         the services the supervisor starts; services-state.json: their PIDs and states
    pktlb.toml            the engine's config        pktlb.sock (+ .w1, .w2 ...)  its control socket(s)
    haproxy.cfg           mode l7 with --engine haproxy: HAProxy's config; haproxy.sock: its stats socket
    logs/                 one log per service (``lb.engine.log``), supervisor.log
    ready/                a file per service that is ready (``be1.httpd``)
    decap-<node>.json     a decapsulator's counters   captures/  the engine's pcaps when asked for
    tls/                  `lab up --tls`: ca.pem, vip.pem(.key), backend.pem(.key) (no CA key is ever written)

A prefix names namespaces and this directory: letters, digits, '-', '_' and '.', never a path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pktlb.daemon.ctlsock import worker_sockets

DEFAULT_ROOT = "/run/pktlb"
STATE_FILE = "state.json"
SERVICES_FILE = "services.json"
SERVICES_STATE_FILE = "services-state.json"
CONFIG_FILE = "pktlb.toml"
CONTROL_SOCKET = "pktlb.sock"
HAPROXY_CONFIG = "haproxy.cfg"
HAPROXY_SOCKET = "haproxy.sock"

PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class BadPrefix(ValueError):
    pass


def state_root() -> Path:
    return Path(os.environ.get("PKTLB_STATE_ROOT", DEFAULT_ROOT))


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.match(prefix) or ".." in prefix:
        raise BadPrefix(f"--prefix {prefix!r}: expected 1-32 letters, digits, '-', '_' or '.' (not a path)")
    return prefix


@dataclass(frozen=True, init=False)
class LabPaths:
    """Every file of the lab with this prefix.  BadPrefix for a prefix that could point outside the root."""

    prefix: str
    root: Path

    def __init__(self, prefix: str, root: Path | str | None = None) -> None:
        base = Path(root) if root is not None else state_root()
        path = base / check_prefix(prefix)
        if path.resolve().parent != base.resolve():
            raise BadPrefix(f"--prefix {prefix!r} resolves outside {base}")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "root", base)

    @classmethod
    def at(cls, statedir: Path | str) -> LabPaths:
        """The paths of the lab whose state directory is ``statedir`` (a plan's ``statedir``)."""
        path = Path(statedir)
        return cls(path.name, path.parent)

    @property
    def statedir(self) -> Path:
        return self.root / self.prefix

    @property
    def state_file(self) -> Path:
        return self.statedir / STATE_FILE

    @property
    def services_file(self) -> Path:
        return self.statedir / SERVICES_FILE

    @property
    def services_state_file(self) -> Path:
        return self.statedir / SERVICES_STATE_FILE

    @property
    def config(self) -> Path:
        """The engine's config (what `pktlb run -c` reads in the lab)."""
        return self.statedir / CONFIG_FILE

    @property
    def tls_dir(self) -> Path:
        """`lab up --tls`: the lab's throwaway CA (ca.pem) and certificates (vip.pem, backend.pem and keys)."""
        return self.statedir / "tls"

    @property
    def control_socket(self) -> Path:
        """The engine's control socket (worker 0's with ``--workers``; ``worker_sockets`` lists them all)."""
        return self.statedir / CONTROL_SOCKET

    @property
    def haproxy_config(self) -> Path:
        """HAProxy's config in an l7 lab with ``--engine haproxy`` (rendered from pktlb.toml)."""
        return self.statedir / HAPROXY_CONFIG

    @property
    def haproxy_socket(self) -> Path:
        """HAProxy's stats socket (``show stat``; ``pktlb stats --lab`` reads it)."""
        return self.statedir / HAPROXY_SOCKET

    def worker_sockets(self) -> list[str]:
        """The control sockets of the lab engine's workers present now (worker 0's first)."""
        return worker_sockets(str(self.control_socket))

    @property
    def logs(self) -> Path:
        return self.statedir / "logs"

    @property
    def ready(self) -> Path:
        return self.statedir / "ready"

    @property
    def captures(self) -> Path:
        return self.statedir / "captures"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    def log(self, name: str) -> Path:
        """A log file in ``logs/``: ``log("lb/engine")`` is ``logs/lb.engine.log``."""
        return self.logs / (name.replace("/", ".") + ".log")

    def ready_file(self, node: str, service: str) -> Path:
        return self.ready / f"{node}.{service}"

    def decap_stats(self, node: str) -> Path:
        return self.statedir / f"decap-{node}.json"

    def file(self, name: str) -> Path:
        """Another file of the lab's own (a bench's config, a profile), by name."""
        return self.statedir / name


def labs_present(root: Path | str | None = None) -> list[LabPaths]:
    """The labs with a state directory on this machine (built, or half-built and not yet taken down)."""
    base = Path(root) if root is not None else state_root()
    try:
        names = sorted(os.listdir(base))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    found = []
    for name in names:
        if PREFIX_PATTERN.match(name) and (base / name / STATE_FILE).exists():
            found.append(LabPaths(name, base))
    return found
