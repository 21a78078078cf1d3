"""Which engine a command talks to when it is not told (``pktlb stats`` without ``-s``/``-c``).

The order: the default control socket (``lb.control_socket``'s default) if an engine answers
there; else the one lab on this machine whose engine answers on its socket (``LabPaths``); else
an error that lists what exists and how to choose (``--lab PREFIX``, ``-s SOCKET``, ``-c CONFIG``).
``find_lab`` does the same for commands that need a lab's files rather than its engine
(``pktlb explain --lab``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pktlb.core.config import LbConfig
from pktlb.daemon.ctlsock import answers
from pktlb.lab.paths import BadPrefix, LabPaths, labs_present

CHOOSE = "choose with --lab PREFIX, -s SOCKET or -c CONFIG"


class EngineNotFound(LookupError):
    """No engine, or several: the message lists them and says how to choose."""


@dataclass(frozen=True)
class Engine:
    socket: str
    lab: str | None = None  # the lab's prefix; None: an engine on the default socket

    def describe(self) -> str:
        return f"lab {self.lab!r} ({self.socket})" if self.lab is not None else f"the engine on {self.socket}"


def default_socket() -> str:
    return LbConfig.control_socket


def listening(path: str | Path) -> bool:
    """An engine answers on this socket (or one is there that only root may talk to: the request will say)."""
    path = str(path)
    if not os.path.exists(path):
        return False
    if not os.access(path, os.R_OK | os.W_OK):
        return True
    return answers(path)


def running_engines() -> list[Engine]:
    """Every engine that answers: on the default socket, and in each lab present."""
    found = [Engine(default_socket())] if listening(default_socket()) else []
    for lab in labs_present():
        if str(lab.control_socket) != default_socket() and listening(lab.control_socket):
            found.append(Engine(str(lab.control_socket), lab.prefix))
    return found


def lab_engine(prefix: str) -> Engine:
    """The engine of the lab with this prefix; EngineNotFound if there is no such lab."""
    lab = find_lab(prefix)
    return Engine(str(lab.control_socket), lab.prefix)


def find_engine() -> Engine:
    """The default socket's engine, else the only one running; EngineNotFound listing them otherwise."""
    if listening(default_socket()):
        return Engine(default_socket())
    engines = running_engines()
    if len(engines) == 1:
        return engines[0]
    if engines:
        raise EngineNotFound("several engines are running: " + ", ".join(e.describe() for e in engines)
                             + f"; {CHOOSE}")
    labs = labs_present()
    idle = "".join(f"; lab {lab.prefix!r} is there but no engine answers on {lab.control_socket}" for lab in labs)
    raise EngineNotFound(f"no engine is running: nothing answers on {default_socket()} and no lab's engine is up"
                         f"{idle} (start one with `pktlb lab up`, or `pktlb run -c CONFIG` in a namespace; "
                         f"an engine elsewhere: {CHOOSE})")


def find_lab(prefix: str | None = None) -> LabPaths:
    """The lab with this prefix, or (None) the only lab present; EngineNotFound naming the labs otherwise."""
    labs = labs_present()
    names = ", ".join(repr(lab.prefix) for lab in labs) or "none"
    if prefix is not None:
        try:
            lab = LabPaths(prefix)
        except BadPrefix as exc:
            raise EngineNotFound(str(exc)) from None
        if not lab.statedir.exists():
            raise EngineNotFound(f"no lab {prefix!r} is up (labs present: {names})")
        return lab
    if len(labs) == 1:
        return labs[0]
    if labs:
        raise EngineNotFound(f"several labs are up ({names}): choose one with --lab PREFIX")
    raise EngineNotFound("no lab is up (start one with `pktlb lab up`)")
