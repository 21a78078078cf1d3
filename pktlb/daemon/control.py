"""The control plane: it computes, the data plane reads.

It keeps the runtime view of every backend — administrative state (up, drain, down, set by
`pktlb backend ...`), health state (from the checks), weight overrides, backends added or removed at
run time — and turns each change into a whole new ``Snapshot`` (schedulers and Maglev tables
included), built here, off the packet path, and swapped into the data path in one assignment.
Each rebuild logs what changed and, for Maglev, how many table slots moved (the ring delta).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from pktlb.core.config import BackendConfig, Config, ServiceConfig, check_services, parse_backend
from pktlb.core.config_reader import ConfigError
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.sched.base import ring_delta
from pktlb.core.snapshot import DOWN, DRAIN, UP, Snapshot, build_snapshot

log = logging.getLogger("pktlb.control")
ADMIN_STATES = (UP, DRAIN, DOWN)


class ControlError(ValueError):
    """A control request that cannot be applied (unknown service or backend, bad value)."""


@dataclass
class Change:
    generation: int
    why: str
    ring_moved: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {"generation": self.generation, "why": self.why, "ring_moved": self.ring_moved}


class ControlPlane:
    def __init__(self, config: Config, *, macs: dict[str, str] | None = None, lb_mac: str | None = None,
                 gateway_mac: str | None = None, on_snapshot: Callable[[Snapshot], None] | None = None) -> None:
        self.config = config
        self.macs = dict(macs or {})
        self.lb_mac, self.gateway_mac = lb_mac, gateway_mac
        self.admin: dict[tuple[str, str], str] = {}
        self.health: dict[tuple[str, str], str] = {}
        self.weights: dict[tuple[str, str], int] = {}
        self.extra: dict[str, tuple[BackendConfig, ...]] = {}
        self.removed: set[tuple[str, str]] = set()
        self.path_mtus: dict[str, int] = {}  # backend address -> path MTU (the engine's routing cache)
        self.on_snapshot = on_snapshot
        self.history: list[Change] = []
        self.snapshot = self._build(1)

    # -- queries ---------------------------------------------------------------------------------
    def service(self, name: str) -> ServiceConfig:
        for svc in self.config.services:
            if svc.name == name:
                return svc
        raise ControlError(f"unknown service {name!r}: expected one of {', '.join(s.name for s in self.config.services)}")

    def backends(self, service: str) -> list[BackendConfig]:
        svc = self.service(service)
        merged = {b.name: b for b in svc.backends}
        merged.update((b.name, b) for b in self.extra.get(service, ()))
        return [b for b in merged.values() if (service, b.name) not in self.removed]

    def backend(self, service: str, name: str) -> BackendConfig:
        for be in self.backends(service):
            if be.name == name:
                return be
        raise ControlError(f"unknown backend {name!r} in service {service!r}")

    def effective_state(self, service: str, backend: str) -> str:
        admin = self.admin.get((service, backend), UP)
        if admin == DOWN or self.health.get((service, backend)) == DOWN:
            return DOWN
        return admin

    # -- changes ---------------------------------------------------------------------------------
    def set_admin(self, service: str, backend: str, state: str) -> Change:
        if state not in ADMIN_STATES:
            raise ControlError(f"state {state!r}: expected one of {', '.join(ADMIN_STATES)}")
        self.backend(service, backend)
        with self._transaction():
            self.admin[(service, backend)] = state
            return self.rebuild(f"{service}/{backend} set {state} by operator")

    def set_health(self, service: str, backend: str, state: str, reason: str = "") -> Change | None:
        """Health checks say up or down; a rebuild only when the forwarding state changes."""
        key = (service, backend)
        before = self.effective_state(service, backend)
        with self._transaction():
            self.health[key] = DOWN if state == DOWN else UP
            if self.effective_state(service, backend) == before:
                return None
            return self.rebuild(f"{service}/{backend} health {state}" + (f" ({reason})" if reason else ""))

    def set_weight(self, service: str, backend: str, weight: int) -> Change:
        if not 0 <= weight <= 1000:
            raise ControlError(f"weight {weight}: expected an integer from 0 to 1000")
        self.backend(service, backend)
        with self._transaction():
            self.weights[(service, backend)] = weight
            return self.rebuild(f"{service}/{backend} weight {weight}")

    def add_backend(self, service: str, backend: BackendConfig) -> Change:
        svc = self.service(service)
        if any(b.name == backend.name for b in self.backends(service)):
            raise ControlError(f"backend {backend.name!r} already in service {service!r}")
        if traits_of(svc.mode).keeps_ports and backend.port != svc.port:
            raise ControlError(f"port {backend.port}: mode {svc.mode} needs the service port {svc.port}")
        with self._transaction():
            self.removed.discard((service, backend.name))
            self.extra[service] = tuple(b for b in self.extra.get(service, ()) if b.name != backend.name) + (backend,)
            self._check_effective_config()
            return self.rebuild(f"{service}/{backend.name} added ({backend.address}:{backend.port} "
                                f"weight {backend.weight})")

    def remove_backend(self, service: str, backend: str) -> Change:
        """Remove a backend and forget its runtime state (admin, health, weight override), so a
        backend added again under the same name starts fresh: up, unchecked, its own weight (a
        drained-then-removed backend must not come back still draining)."""
        self.backend(service, backend)
        key = (service, backend)
        with self._transaction():
            self.removed.add(key)
            for table in (self.admin, self.health, self.weights):
                table.pop(key, None)
            return self.rebuild(f"{service}/{backend} removed")

    def set_path_mtus(self, mtus: dict[str, int]) -> Change | None:
        """The MTUs of the paths toward the backends changed (a route or an interface): rebuild if they did."""
        if mtus == self.path_mtus:
            return None
        self.path_mtus = dict(mtus)
        return self.rebuild(f"path MTUs toward the backends: {mtus}")

    def reload(self, config: Config) -> Change:
        """Apply a new config: runtime overrides for backends that still exist are kept."""
        old = {(s.name, b.name): b for s in self.config.services for b in s.backends}
        new = {(s.name, b.name): b for s in config.services for b in s.backends}
        self.config = config
        names = {s.name for s in config.services}
        for table in (self.admin, self.health, self.weights):
            for key in [k for k in table if k[0] not in names]:
                del table[key]
        self.extra = {s: bes for s, bes in self.extra.items() if s in names}
        added = sorted(f"{s}/{b}" for s, b in new.keys() - old.keys())
        gone = sorted(f"{s}/{b}" for s, b in old.keys() - new.keys())
        changed = sorted(f"{s}/{b}" for s, b in new.keys() & old.keys() if new[(s, b)] != old[(s, b)])
        return self.rebuild(f"config reloaded: added {added or 'none'}, removed {gone or 'none'}, "
                            f"changed {changed or 'none'}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Apply a change whole or not at all: if the new snapshot cannot be built, the runtime state is
        restored and the caller gets a ControlError naming what was wrong."""
        saved = (dict(self.admin), dict(self.health), dict(self.weights), dict(self.extra), set(self.removed))
        try:
            yield
        except (ValueError, KeyError) as exc:
            self.admin, self.health, self.weights, self.extra, self.removed = saved
            raise ControlError(f"change refused, nothing applied: {exc}") from None

    def effective_config(self) -> Config:
        """The config with the backends in force now (run-time additions in, removals out)."""
        return replace(self.config, services=tuple(replace(svc, backends=tuple(self.backends(svc.name)))
                                                   for svc in self.config.services))

    def _check_effective_config(self) -> None:
        """The config's cross-service rules (address roles, NAT reply keys) for the backends in force now."""
        check_services(self.config.lb, self.effective_config().services)

    def rebuild(self, why: str) -> Change:
        old = self.snapshot
        new = self._build(old.generation + 1)
        moved = {}
        for key, svc in new.services.items():
            before = old.services.get(key)
            table_new = getattr(svc.scheduler, "table", None)
            if table_new is not None:
                moved[svc.name] = ring_delta(getattr(before.scheduler, "table", None) if before else None, table_new)
        self.snapshot = new
        change = Change(new.generation, why, moved)
        self.history = (self.history + [change])[-50:]
        log.info("snapshot %d: %s%s", new.generation, why,
                 "".join(f"; {name}: {n} maglev slots moved" for name, n in moved.items()))
        if self.on_snapshot:
            self.on_snapshot(new)
        return change

    def _build(self, generation: int) -> Snapshot:
        states = {}
        extra: dict[str, tuple[BackendConfig, ...]] = {}
        for svc in self.config.services:
            for be in self.backends(svc.name):
                states[(svc.name, be.name)] = self.effective_state(svc.name, be.name)
            extra[svc.name] = self.extra.get(svc.name, ())
        return build_snapshot(self.config, generation=generation, states=states, weights=self.weights,
                              extra_backends=extra, removed=frozenset(self.removed), macs=self.macs,
                              lb_mac=self.lb_mac, gateway_mac=self.gateway_mac, path_mtus=self.path_mtus)

    def describe_backends(self) -> list[dict[str, object]]:
        rows = []
        for svc in self.config.services:
            for be in self.backends(svc.name):
                key = (svc.name, be.name)
                rows.append({"service": svc.name, "backend": be.name, "address": be.address, "port": be.port,
                             "weight": self.weights.get(key, be.weight), "admin": self.admin.get(key, UP),
                             "health": self.health.get(key, "unchecked"), "state": self.effective_state(*key)})
        return rows


def backend_config(name: str, address: str, port: int, weight: int = 1, mac: str | None = None) -> BackendConfig:
    """Validate a backend given on the command line through the same rules as the config file."""
    try:
        return parse_backend({"name": name, "address": address, "port": port, "weight": weight,
                         **({"mac": mac} if mac else {})}, "backend", port)
    except ConfigError as exc:
        raise ControlError(str(exc)) from None


__all__ = ["ControlPlane", "ControlError", "Change", "backend_config"]
