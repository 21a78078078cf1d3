"""Backend hosts added to or removed from a lab that is up (`pktlb lab backend add|remove`).

``create_backend`` plans the new backend from the same data as `lab up` (netns/lab.toml, the lab's
mode, decapsulation and capacity options): the next free name ``beN`` (address 198.18.0.(10+N)), its
namespace wired to the switch as `lab up` wires it, and its services (httpd with the lab's capacity,
iperf3, a decapsulator in tunnel mode) added to ``services.json``; the supervisor is told with SIGHUP
and starts them, and ``create_backend`` returns once they are ready.  ``destroy_backend`` undoes it:
the services leave ``services.json`` (the supervisor stops them), what still runs in the namespace
is stopped, the namespace goes (its veth and the switch port with it), and the lab's record forgets
the node.  Neither touches the engine (``pktlb.lab.scaling`` does).

The node is recorded in ``state.json`` *before* anything is created, so `lab down` removes it after a
crash as well; `lab status` lists it like any other node.  A lock file serializes concurrent calls.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pktlb.lab import state as st
from pktlb.lab.addressing import mac_for_ip
from pktlb.lab.builder import node_steps
from pktlb.lab.manage import READY_TIMEOUT, plan_lab, service_states
from pktlb.lab.netns import CommandError, Namespace
from pktlb.lab.paths import BadPrefix, LabPaths
from pktlb.lab.steps import StepError, apply_steps
from pktlb.lab.topology import MAX_BACKENDS, LabError, LabOptions

BACKEND_NAME = re.compile(r"^be([1-9][0-9]*)$")
LOCK_FILE = "backends.lock"
STOP_TIMEOUT = 10.0  # seconds the supervisor may take to stop a removed backend's services


@dataclass(frozen=True)
class BackendHost:
    name: str
    address: str
    mac: str  # the lab's convention (its eth0); the engine learns it from the LB's neighbour table
    namespace: str
    services: tuple[str, ...]


def running_lab(prefix: str) -> tuple[LabPaths, dict[str, Any]]:
    """The lab's paths and record; LabError unless a lab with this prefix is up."""
    try:
        paths = LabPaths(prefix)
    except BadPrefix as exc:
        raise LabError(str(exc)) from None
    recorded = st.read_json(paths.state_file)
    if recorded is None:
        raise LabError(f"no lab with prefix {prefix!r} is up: start one with `pktlb lab up --prefix {prefix} ...`")
    if recorded.get("status") != "up":
        raise LabError(f"the lab {prefix!r} is {recorded.get('status')!r}, not up; "
                       f"`pktlb lab down --prefix {prefix}` and build it again")
    if not st.is_same_process(recorded.get("supervisor")):
        raise LabError(f"the lab {prefix!r} has no running supervisor (its services cannot be started); "
                       f"`pktlb lab down --prefix {prefix}` and build it again")
    return paths, recorded


def lab_options(recorded: dict[str, Any]) -> LabOptions:
    """The options the lab was built with (keys a newer or older pktlb wrote are ignored)."""
    known = {f.name for f in fields(LabOptions)}
    return LabOptions(**{k: v for k, v in recorded["options"].items() if k in known})


def backend_names(recorded: dict[str, Any]) -> list[str]:
    return [n["name"] for n in recorded["nodes"] if n.get("role") == "backend"]


@contextmanager
def locked(paths: LabPaths) -> Iterator[None]:
    """One `lab backend add|remove` at a time per lab (an flock on the state directory's lock file)."""
    with open(paths.file(LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pick_index(recorded: dict[str, Any], name: str | None) -> int:
    """The new backend's N (beN): the one asked for, else the lowest free; LabError if taken or too many."""
    taken = {int(m.group(1)) for n in backend_names(recorded) if (m := BACKEND_NAME.match(n))}
    if name is None:
        index = next(i for i in range(1, MAX_BACKENDS + 2) if i not in taken)
    else:
        match = BACKEND_NAME.match(name)
        if not match:
            raise LabError(f"backend name {name!r}: expected be1 to be{MAX_BACKENDS}")
        index = int(match.group(1))
        if index in taken:
            raise LabError(f"the lab already has a backend {name!r}")
    if index > MAX_BACKENDS:
        raise LabError(f"the lab has {len(taken)} backends, the most it can have is {MAX_BACKENDS}")
    return index


def _signal_supervisor(recorded: dict[str, Any]) -> None:
    supervisor = recorded.get("supervisor") or {}
    if not st.is_same_process(supervisor):
        raise LabError("the lab's supervisor is not running")
    os.kill(int(supervisor["pid"]), signal.SIGHUP)


def _set_services(paths: LabPaths, recorded: dict[str, Any], specs: list[dict[str, Any]]) -> None:
    st.write_json(paths.services_file, specs)
    _signal_supervisor(recorded)


def create_backend(prefix: str, name: str | None = None) -> BackendHost:
    """A new backend host in the running lab, its services ready; LabError (nothing left behind) if not."""
    paths, _ = running_lab(prefix)
    with locked(paths):
        paths, recorded = running_lab(prefix)
        options = lab_options(recorded)
        if options.lbs != 1:
            raise LabError("lab backend add works on the single-LB lab, not on the LB tier (--lbs)")
        if recorded.get("layer", 4) != 4:
            raise LabError(f"lab backend add works on the L4 lab layouts, not mode {options.mode}")
        if options.engine == "kernel":
            raise LabError("lab backend add needs --engine pktlb or none: the kernel baseline's nftables "
                           "rules list the backends when the lab is built")
        index = pick_index(recorded, name)
        plan = plan_lab(replace(options, backends=max(index, 1)))
        node = plan.node(f"be{index}")
        services = [s for s in plan.services if s.node == node.name]
        host = BackendHost(node.name, node.address, mac_for_ip(node.address), node.namespace,
                           tuple(s.name for s in services))
        # Recorded first: whatever happens next, `lab down` (or the cleanup below) removes it.
        recorded["nodes"].append({"name": node.name, "role": node.role, "namespace": node.namespace,
                                  "address": node.address, "added": True})
        recorded["namespaces"].append(node.namespace)
        st.write_json(paths.state_file, recorded)
        try:
            for svc in services:
                if svc.ready_file:
                    Path(svc.ready_file).unlink(missing_ok=True)
            apply_steps(node_steps(plan, node))
            specs = st.read_json(paths.services_file) or []
            specs += [{"name": s.name, "node": s.node, "namespace": s.namespace, "argv": s.argv,
                       "ready_file": s.ready_file} for s in services]
            _set_services(paths, recorded, specs)
            _await_ready(paths, [s.name for s in services if s.ready_file],
                         [Path(s.ready_file) for s in services if s.ready_file])
            _resolve_from_lbs(recorded, node.address)
        except (LabError, StepError, CommandError, OSError) as exc:
            _teardown(paths, recorded, node.name)
            raise LabError(f"could not add backend {node.name} (nothing was left behind): {exc}") from None
        return host


def _await_ready(paths: LabPaths, names: list[str], files: list[Path]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if all(f.exists() for f in files):
            return
        failed = [n for n, s in service_states(paths).items() if n in names and s.get("state") == "failed"]
        if failed:
            raise LabError(f"services failed to start: {', '.join(failed)} (logs in {paths.logs})")
        time.sleep(0.02)
    raise LabError(f"services not ready after {READY_TIMEOUT:.0f} s: {', '.join(names)} (logs in {paths.logs})")


def _resolve_from_lbs(recorded: dict[str, Any], address: str) -> None:
    """One ping from each LB namespace, so its kernel has resolved the new backend's MAC before the
    engine sends it a flow (the engine drops frames to an unresolved next hop: ``no_neighbour``)."""
    for lb in (n for n in recorded["nodes"] if n.get("role") == "lb"):
        Namespace(lb["namespace"]).run(["ping", "-c", "1", "-W", "1", "-q", address], timeout=5, check=False)


def destroy_backend(prefix: str, name: str) -> dict[str, Any]:
    """Remove a backend host (services, namespace, record) from the running lab; what was removed."""
    paths, _ = running_lab(prefix)
    with locked(paths):
        paths, recorded = running_lab(prefix)
        if name not in backend_names(recorded):
            raise LabError(f"no backend {name!r} in the lab {prefix!r}; backends: "
                           f"{', '.join(backend_names(recorded)) or 'none'}")
        return _teardown(paths, recorded, name)


def _teardown(paths: LabPaths, recorded: dict[str, Any], name: str) -> dict[str, Any]:
    """Stop the node's services, kill what is left in its namespace, delete it, forget it."""
    node = next(n for n in recorded["nodes"] if n["name"] == name)
    namespace = node["namespace"]
    specs = st.read_json(paths.services_file) or []
    mine = [s["name"] for s in specs if s["node"] == name]
    report: dict[str, Any] = {"backend": name, "namespace": namespace, "services_stopped": mine, "pids_stopped": []}
    if mine:
        _set_services(paths, recorded, [s for s in specs if s["node"] != name])
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and set(mine) & set(service_states(paths)):
            time.sleep(0.02)  # the supervisor drops them from its record once they are stopped
    stragglers = st.pids_in_namespace(namespace)
    report["pids_stopped"] = st.stop_processes([st.proc_record(p) for p in stragglers], grace=1.0)
    if Namespace(namespace).exists():
        Namespace.current().run(["ip", "netns", "delete", namespace])
    for path in [*paths.ready.glob(f"{name}.*"), paths.decap_stats(name)]:
        with suppress(FileNotFoundError):
            path.unlink()
    recorded["nodes"] = [n for n in recorded["nodes"] if n["name"] != name]
    recorded["namespaces"] = [ns for ns in recorded["namespaces"] if ns != namespace]
    st.write_json(paths.state_file, recorded)
    return report


__all__ = ["BackendHost", "create_backend", "destroy_backend", "running_lab", "lab_options", "backend_names",
           "pick_index"]
