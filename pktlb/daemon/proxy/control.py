"""The proxy's control plane: the engine's (``pktlb.daemon.control.ControlPlane``) building L7 snapshots.

Operator states (up, drain, down), health states, weight overrides and backends added or removed at
run time are kept and checked exactly as for the engine; what a change builds is a
``pktlb.core.l7.plan.ProxySnapshot`` (routes -> pools -> schedulers), swapped in whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pktlb.core.config import Config
from pktlb.core.l7.plan import ProxySnapshot, build_proxy_snapshot
from pktlb.core.sched.base import ring_delta
from pktlb.daemon.control import Change, ControlPlane

log = logging.getLogger("pktlb.proxy")


class ProxyControl(ControlPlane):
    snapshot: ProxySnapshot  # type: ignore[assignment]  # the L7 snapshot in place of the engine's

    def __init__(self, config: Config, on_snapshot: Callable[[ProxySnapshot], None] | None = None) -> None:
        super().__init__(config, on_snapshot=on_snapshot)  # type: ignore[arg-type]  # ProxySnapshot callback (ControlPlane is not generic)

    def _build(self, generation: int) -> ProxySnapshot:  # type: ignore[override]  # builds the L7 snapshot
        states, extra = {}, {}
        for svc in self.config.services:
            for be in self.backends(svc.name):
                states[(svc.name, be.name)] = self.effective_state(svc.name, be.name)
            extra[svc.name] = self.extra.get(svc.name, ())
        return build_proxy_snapshot(self.config, generation=generation, states=states, weights=self.weights,
                                    extra_backends=extra, removed=frozenset(self.removed))

    def rebuild(self, why: str) -> Change:
        old = self.snapshot
        new = self._build(old.generation + 1)
        moved = {}  # Maglev slots that changed backend, per route that uses maglev
        for name, plan in new.services.items():
            before = old.services.get(name)
            for i, route in enumerate(plan.routes):
                table = getattr(route.scheduler, "table", None)
                if table is not None:
                    old_route = before.routes[i] if before and i < len(before.routes) else None
                    old_table = getattr(old_route.scheduler, "table", None) if old_route else None
                    moved[f"{name}/{route.config.name}"] = ring_delta(old_table, table)
        self.snapshot = new
        change = Change(new.generation, why, moved)
        self.history = (self.history + [change])[-50:]
        log.info("snapshot %d: %s%s", new.generation, why,
                 "".join(f"; {name}: {n} maglev slots moved" for name, n in moved.items()))
        if self.on_snapshot:
            self.on_snapshot(new)  # type: ignore[arg-type]  # the callback given to __init__ takes a ProxySnapshot
        return change
