"""The kernel fast path of a running engine (issue 15): loaded once, attached to every interface the
engine receives on, and shared by all its workers.

    one worker:   the Forwarder loads the object, attaches it, and keeps its maps (FastPathSync)
    --workers N:  the parent loads the object before it forks (``preload``); every worker inherits
                  the program and map fds, so they all read and write ONE set of maps.  Worker 0
                  attaches the program (a bpf_link per interface: it dies with worker 0, even by
                  SIGKILL) and writes the snapshot's maps; each worker pushes and reads back its own
                  flows (``FastPathSync.owns``).  Nothing is pinned: the maps live as long as a
                  process of the engine holds them.  Every worker runs the health checks; the
                  backend states in the kernel are worker 0's (a change another worker sees first
                  reaches the kernel when worker 0 sees it too).

Several interfaces: the program learns each interface's MAC (``pktlb_ifaces``) and, per backend and
per reply, the interface the engine's egress stage picks (``Interfaces``).  A frame whose next hop is
behind another interface leaves with XDP_REDIRECT (XDP) or bpf_redirect (tc).  XDP can send only to
an interface that runs the program itself (a veth's peer must run an XDP program too: the lab puts
xdp_pass there); a next hop behind any other interface gets no MAC, so its frames punt to Python
(``no_neighbour``).  tc can send anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pktlb.adapters.fastpath import FastPath, availability
from pktlb.adapters.libbpf import BpfError
from pktlb.core.config import Config
from pktlb.core.decision import FORWARD, INBOUND, OUTBOUND, Decision
from pktlb.core.fastpath.encode import UNRESOLVED_L2, Interfaces
from pktlb.core.snapshot import Snapshot
from pktlb.daemon.egress import Route
from pktlb.daemon.fastpath_sync import FastPathSync
from pktlb.daemon.readpoint import read_point

log = logging.getLogger("pktlb.fastpath")
OFF_REASON = "off (--fastpath xdp|tc or [lb] fastpath turns it on)"


@dataclass
class Preloaded:
    """The object a parent loaded for its workers, or why it could not."""

    fastpath: FastPath | None
    reason: str = ""


def preload(config: Config, hook: str | None) -> Preloaded | None:
    """Load the program and maps before the workers fork (None: the fast path is off)."""
    if hook in (None, "off"):
        return None
    why = availability()
    if why:
        return Preloaded(None, why)
    try:
        return Preloaded(FastPath(config.flows.max_entries, (str(hook),)))
    except BpfError as exc:
        return Preloaded(None, f"loading the eBPF object failed: {exc}")


def _ifindexes(engine: Any) -> dict[int, int]:
    """id(port) -> ifindex, for every port the engine has (receiving and send-only)."""
    ports = engine.portset
    return {id(port): ifindex for table in (ports.by_ifindex, ports.tx_only) for ifindex, port in table.items()}


def _where(engine: Any, hook: str, route: Route | str, index: dict[int, int]) -> tuple[bytes, int]:
    """(Ethernet addresses, ifindex) the program may send to, or unresolved (its frames punt)."""
    if type(route) is not Route:
        return UNRESOLVED_L2, 0
    if not read_point(hook).sends_anywhere and not any(route.port is port for port in engine.ports):
        return UNRESOLVED_L2, 0  # XDP cannot send where no program runs
    return route.l2, index.get(id(route.port), 0)


def engine_view(engine: Any, snap: Snapshot) -> tuple[Snapshot, Interfaces]:
    """The snapshot as the fast path must see it: the first interface's MAC as the LB's, each
    backend's and the replies' Ethernet addresses and interface as the egress stage resolves them."""
    hook = engine.fastpath_hook
    index = _ifindexes(engine)
    services, backends = {}, {}
    for key, svc in snap.services.items():
        views = []
        for be in svc.backends:
            route = engine.egress.target(bytearray(34), Decision(FORWARD, INBOUND, svc.name, be.name))
            l2, backends[(svc.name, be.name)] = _where(engine, hook, route, index)
            views.append(replace(be, l2=l2))
        services[key] = replace(svc, backends=tuple(views), by_name={b.name: b for b in views})
    reply_l2, replies = UNRESOLVED_L2, 0
    if snap.config.lb.gateway:  # replies have one next hop only when the config names the gateway
        reply_l2, replies = _where(engine, hook, engine.egress.target(bytearray(34), Decision(FORWARD, OUTBOUND)),
                                   index)
    lb_mac = engine.port_snaps[0].lb_mac if engine.port_snaps else snap.lb_mac
    macs = {index[id(port)]: ps.lb_mac for port, ps in zip(engine.ports, engine.port_snaps, strict=False)
            if id(port) in index}
    return (replace(snap, lb_mac=lb_mac, services=services, reply_l2=reply_l2),
            Interfaces(macs=macs, backends=backends, replies=replies))


def reply_resolver(engine: Any) -> Callable[[int], tuple[bytes, int]]:
    """client address -> the Ethernet addresses and interface the engine's egress stage would give a
    reply to it (zeros while the next hop is unresolved or where XDP cannot send: its replies punt)."""
    probe, outbound = bytearray(34), Decision(FORWARD, OUTBOUND)  # reused: target only reads them
    found: dict[Route | str, tuple[bytes, int]] = {}  # per route the egress stage memoises (a flush per new flow)

    def resolve(client: int) -> tuple[bytes, int]:
        probe[30:34] = client.to_bytes(4, "big")
        route = engine.egress.target(probe, outbound)
        if route not in found or found[route][0] is UNRESOLVED_L2:
            if len(found) >= 256:
                found.clear()
            found[route] = _where(engine, engine.fastpath_hook, route, _ifindexes(engine))
        return found[route]
    return resolve


def start_for_engine(engine: Any, hook: str, shared: Preloaded | None = None) -> tuple[FastPathSync | None, str]:
    """The fast path for a running ``Forwarder`` (its datapath, ports and egress stage), or None and why.
    ``shared``: the object the parent loaded for all workers."""
    if hook == "off":
        return None, OFF_REASON
    if any(port.protocol != read_point(hook).protocol for port in engine.ports):
        # An ETH_P_ALL socket sees every frame before tc ingress runs: Python would forward the kernel's
        # frames a second time.  The engine binds ETH_P_IP when it starts with the tc fast path.
        return None, f"{hook}: the engine's packet socket reads at the wrong point (see pktlb.daemon.readpoint)"
    loaded = shared or preload(engine.config, hook)
    if loaded is None or loaded.fastpath is None:
        return None, loaded.reason if loaded else OFF_REASON
    fp = loaded.fastpath
    writer = engine.worker == 0
    sync = FastPathSync(fp, engine.datapath, hook, reply_to=reply_resolver(engine), writer=writer,
                        worker=engine.worker, workers=engine.workers)
    sync.install(*engine_view(engine, engine.datapath.snapshot))
    if writer:
        for port in engine.ports:
            try:
                fp.attach(port.ifname, hook, engine.config.lb.xdp_mode)
            except (BpfError, OSError) as exc:
                fp.close()
                return None, f"attaching to {port.ifname} ({hook}) failed: {exc}"
    log.info("fast path on: %s on %s (worker %d of %d%s)", hook, ", ".join(p.ifname for p in engine.ports),
             engine.worker, engine.workers, ", writes the snapshot's maps" if writer else "")
    return sync, ""
