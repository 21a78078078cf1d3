"""A backend provider made of standby hosts: backends that already run but are not in the engine.

``pktlb autoscale --pool be4=198.18.1.14 --pool be5=198.18.1.15`` lends them out in the order given
and takes them back when they are removed (the hosts keep running).  It is the provider for any
set-up where the backends exist beforehand (e.g. a lab started with more backends than the engine
is given); a provider that creates lab namespaces on demand can replace it behind the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pktlb.daemon.autoscale.interfaces import AutoscaleError, NewBackend


def parse_pool_entry(text: str) -> NewBackend:
    """``NAME=ADDRESS`` or ``NAME=ADDRESS:PORT``; ValueError naming what is wrong."""
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise ValueError(f"{text!r}: expected NAME=ADDRESS or NAME=ADDRESS:PORT")
    address, _, port = where.partition(":")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{text!r}: port {port!r} is not a number from 1 to 65535")
    return NewBackend(name, address, int(port) if port else None)


class StandbyPool:
    def __init__(self, standby: Sequence[NewBackend], in_use: Iterable[str] = ()) -> None:
        names = [b.name for b in standby]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"standby backend names given twice: {', '.join(dupes)}")
        self.standby = list(standby)
        self.lent: set[str] = set(in_use) & set(names)  # already in the engine: not free

    def free(self) -> list[NewBackend]:
        return [b for b in self.standby if b.name not in self.lent]

    def create(self) -> NewBackend:
        free = self.free()
        if not free:
            raise AutoscaleError(f"no standby backend left: all {len(self.standby)} of the pool are in use")
        self.lent.add(free[0].name)
        return free[0]

    def destroy(self, name: str) -> None:
        self.lent.discard(name)


__all__ = ["StandbyPool", "parse_pool_entry"]
