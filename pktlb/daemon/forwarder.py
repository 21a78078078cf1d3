"""The engine daemon: raw-socket I/O around the pure data path, in one event loop.

    RawPort per interface (AF_PACKET, kernel BPF filter, virtio headers) --recv_batch--> engine.process
        --> Egress.target (the kernel's route and neighbour for the next destination: port and MACs)
        --> send on that port (with the received virtio header when a checksum is unfinished) --> counters

Around it: the routing cache (``NetlinkCache``, its socket in the same loop, so a moved route, a new
MAC or a link going down is followed at once), the control plane (snapshots), the control socket
(`pktlb stats/flows/backend`), the health monitor (checks -> snapshot rebuilds), timers (flow
expiry, rates, rate-limited drop logs), and signal flags (TERM/INT stop, HUP reload).  Set up fails
with ``StartupError`` and a clear message when privileges, an interface, a route or the config are
wrong.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from functools import partial
from typing import Any, cast

from pktlb.adapters.configfile import load_config
from pktlb.adapters.fanout import build_fanout_program, config_snat_ranges, fanout_program
from pktlb.adapters.ifinfo import InterfaceMissing
from pktlb.adapters.netlink import NetlinkCache, NetlinkUnavailable
from pktlb.adapters.nft import NftError
from pktlb.adapters.pcap import PcapWriter
from pktlb.adapters.rawio import NO_OFFLOAD, RawPort, VnetHeader
from pktlb.core.config import Config, ConfigError
from pktlb.core.datapath import DataPath
from pktlb.core.decision import DROP, drop
from pktlb.core.engine import process
from pktlb.core.l7.split import engine_part
from pktlb.core.packet.addr import bytes_to_mac
from pktlb.core.snapshot import Snapshot
from pktlb.daemon.control import ControlError, ControlPlane
from pktlb.daemon.ctlsock import ControlServer, SocketInUse
from pktlb.daemon.egress import Egress, Route, await_next_hops
from pktlb.daemon.filter import engine_filter
from pktlb.daemon.guard import Guard, GuardHook, owner_text, start_guard
from pktlb.daemon.ports import Ports
from pktlb.daemon.preflight import default_interfaces, startup_errors
from pktlb.daemon.reactor import Reactor
from pktlb.daemon.readpoint import read_point
from pktlb.daemon.report import Reporter

log = logging.getLogger("pktlb.engine")
START_RESOLVE_WAIT = 1.0  # seconds start-up waits for the backends' next hops to resolve (then drops count)


class StartupError(RuntimeError):
    """The engine cannot start: the message says why and what to do."""


class Forwarder:
    def __init__(self, config_path: str, *, workers: int = 1, worker: int = 0, capture_dir: str | None = None,
                 control_socket: str | None = None, health: bool = True, batch: int = 64,
                 fanout_group: int = 0x5B1, guard: bool = True, fastpath: str | None = None,
                 shared_fastpath: Any = None) -> None:
        if os.geteuid() != 0:
            raise StartupError("pktlb run needs root (CAP_NET_RAW for AF_PACKET sockets): run it with sudo")
        self.config_path = config_path
        self.config = self._load(config_path)
        self.worker, self.workers, self.batch = worker, workers, batch
        lb = self.config.lb
        self.netlink = self._open_netlink()
        self.interfaces = list(lb.interfaces) or default_interfaces(self.netlink)
        errors = startup_errors(self.config, self.interfaces, self.netlink)
        if errors:
            self.netlink.close()
            raise StartupError(f"{config_path}: " + "\n  ".join(errors))
        self.reactor = Reactor()
        self.egress = Egress(self.netlink, lambda ifindex, ifname: self.portset.port_for(ifindex, ifname))
        self.control = ControlPlane(self.config, on_snapshot=self._install)
        self.datapath = DataPath(self.config, self.control.snapshot, worker, workers)
        # Several workers: a "cbpf" fanout group per interface whose program sends full-NAT replies to
        # the worker owning the SNAT port (pktlb.adapters.fanout); the workers join in index order.
        try:
            steering = fanout_program(self.control.snapshot, workers) if workers > 1 else None
        except ValueError as exc:  # too many SNAT ranges for classic BPF's jumps
            raise StartupError(f"cannot steer full-NAT replies over {workers} workers: {exc}") from None
        # Where the engine reads (the socket's protocol) and where its guard hooks follow the fast path's hook:
        # with tc, after tc ingress, where only what the program punted arrives (pktlb.daemon.readpoint).
        self.fastpath_hook = hook = fastpath or lb.fastpath
        reads = read_point(hook)
        self.port_snaps: list[Snapshot] = []
        try:
            self.portset = Ports(self.interfaces, self.netlink, bpf=engine_filter(self.control.snapshot), batch=batch,
                                 workers=workers, fanout_group=fanout_group, steering=steering,
                                 protocol=reads.protocol, rx_buffer_bytes=reads.rx_buffer_bytes)
        except InterfaceMissing as exc:
            self.netlink.close()
            raise StartupError(f"lb.interface: no interface named {str(exc)!r} in this network namespace") from None
        self.ports, self.tx_only = self.portset.rx, self.portset.tx_only  # receiving ports; send-only by ifindex
        self.port = self.ports[0]  # the first interface's port (single-interface callers, the bench)
        self.guard = self._start_guard(guard, config_path, reads.guard)
        self.lb_mac = lb.mac or bytes_to_mac(self.netlink.link(self.interfaces[0]).mac)
        self._install(self.control.snapshot)
        self._await_next_hops()
        self.fastpath, self.fastpath_reason = self._start_fastpath(hook, shared_fastpath)
        self.started = time.time()
        self.last_tx = 0.0  # monotonic time just after the last send of frames (the end of a bench drain)
        self.capture_from_cli = capture_dir is not None
        self.captures = self._open_captures(capture_dir or lb.capture_dir)
        self.reporter = Reporter(self)
        try:
            self.server = ControlServer(control_socket or lb.control_socket, self.reporter.handle, self.reactor)
        except SocketInUse as exc:
            if self.guard is not None:
                self.guard.remove()
            self._close_ports()
            self.netlink.close()
            raise StartupError(str(exc)) from None
        self.health_enabled = health
        self.monitor = self._start_health() if health else None
        for index, port in enumerate(self.ports):
            self.reactor.add_reader(port, partial(self._on_frames, index))
        self.reactor.add_reader(self.netlink, self.netlink.drain)
        self.reactor.every(1.0, self._tick)
        for signum, name in ((15, "stop"), (2, "stop"), (1, "reload")):
            self.reactor.flag_on_signal(signum, name)
        log.info("engine up on %s (%d service(s)), control socket %s",
                 ", ".join(f"{p.ifname} {bytes_to_mac(m.lb_mac)}" for p, m in zip(self.ports, self.port_snaps, strict=True)),
                 len(self.config.services), self.server.path)

    # -- set-up helpers --------------------------------------------------------------------------
    @staticmethod
    def _load(path: str) -> Config:
        try:
            config = engine_services(load_config(path))
        except (ConfigError, ValueError) as exc:
            raise StartupError(f"{path}: {exc}") from None
        except OSError as exc:
            raise StartupError(f"{path}: {exc.strerror}") from None
        return config

    def _open_netlink(self) -> NetlinkCache:
        try:
            return NetlinkCache(on_change=self._on_routing_change)
        except NetlinkUnavailable as exc:
            raise StartupError(f"cannot read this namespace's routes and neighbours: {exc}") from None

    def _on_routing_change(self, kinds: set[str]) -> None:
        """The kernel's tables changed: forget memoised next hops; follow path MTUs toward the backends."""
        if not hasattr(self, "egress"):
            return
        self.egress.forget()
        log.debug("routing cache changed: %s", ", ".join(sorted(kinds)))
        if kinds & {"link", "route"}:
            try:
                self.control.set_path_mtus(self.egress.path_mtus(self.control.snapshot))
            except ControlError as exc:
                log.error("path MTU change not applied: %s", exc)

    def _await_next_hops(self) -> None:
        if not await_next_hops(self.netlink, self.control.snapshot, START_RESOLVE_WAIT):
            log.warning("some backends' next hops are not resolved yet: their frames are dropped (no_neighbour) "
                        "until the kernel answers")
        self.egress.forget()

    def _start_guard(self, wanted: bool, config_path: str, hook: GuardHook) -> Guard | None:
        if self.worker != 0:  # worker 0 owns the namespace's guard table
            return None
        try:
            return start_guard(self.config, self.interfaces, config_path, wanted, hook=hook)
        except (NftError, ValueError) as exc:
            self._close_ports()
            self.netlink.close()
            raise StartupError(f"cannot install the nftables guard: {exc} (or run with --no-guard and keep this "
                               "namespace's kernel from answering or forwarding VIP traffic yourself)") from None

    def _close_ports(self) -> None:
        if hasattr(self, "portset"):
            self.portset.close()

    def _open_captures(self, directory: str | None) -> dict[str, PcapWriter] | None:
        if not directory:
            return None
        os.makedirs(directory, exist_ok=True)
        suffix = f"-w{self.worker}" if self.workers > 1 else ""
        return {side: PcapWriter(os.path.join(directory, f"engine-{side}{suffix}.pcap")) for side in ("rx", "tx")}

    def _close_captures(self) -> None:
        for writer in (self.captures or {}).values():
            writer.close()
        self.captures = None

    def _start_fastpath(self, hook: str, shared: Any) -> tuple[Any, str]:
        """The kernel fast path (issue 15), or None and the reason it is off; the engine runs either way."""
        from pktlb.daemon import fastpath_engine

        sync, why = fastpath_engine.start_for_engine(self, hook, shared)
        if sync is None and hook != "off":
            log.warning("kernel fast path off: %s", why)
        return sync, why

    def fastpath_view(self, snapshot: Snapshot) -> Any:
        """(snapshot, interfaces) as the kernel fast path sees them (pktlb.daemon.fastpath_engine.engine_view)."""
        from pktlb.daemon.fastpath_engine import engine_view

        return engine_view(self, snapshot)

    def _start_health(self) -> Any:
        from pktlb.core.health import backend_health

        if not any(backend_health(svc, be).checks for svc in self.config.services for be in svc.backends):
            return None
        from pktlb.daemon.health.monitor import HealthMonitor

        monitor = HealthMonitor(self.config, now=self.reactor.clock(), on_event=self._on_health,
                                on_rtt=self._on_rtt)
        monitor.attach(self.reactor)
        return monitor

    def _on_health(self, event: Any) -> None:
        from pktlb.core.health import forwarding_state

        log.info("health: %s", event)
        # Every event, not only forwarding_changed ones: after a reload the new monitor starts at init
        # while the control plane may still hold "down"; its init -> up must bring the backend back.
        # set_health rebuilds the snapshot only when the forwarding state really changes.
        try:
            self.control.set_health(event.service, event.backend, forwarding_state(event.new), event.reason)
        except ControlError as exc:  # the snapshot could not be rebuilt: keep forwarding with the last one
            log.error("health change not applied: %s", exc)

    def _on_rtt(self, service: str, backend: str, seconds: float) -> None:
        self.datapath.flows.load(service, backend).observe_rtt(seconds)

    def _install(self, snapshot: Snapshot) -> None:
        """A new snapshot: one copy per receiving port with that interface's MAC as the LB's."""
        if not hasattr(self, "ports"):
            return
        self.egress.install(snapshot)
        macs = [self.netlink.link(port.ifname).mac for port in self.ports]
        self.port_snaps = [replace(snapshot, lb_mac=mac) for mac in macs]
        self.datapath.swap(snapshot)
        if getattr(self, "fastpath", None) is not None:
            self.fastpath.install(*self.fastpath_view(snapshot))

    # -- the packet path -------------------------------------------------------------------------
    def _on_frames(self, index: int) -> None:
        port, snap, now = self.ports[index], self.port_snaps[index], time.monotonic()
        flows, count, target = self.datapath.flows, self.datapath.stats.count, self.egress.target
        captures = self.captures
        sync = self.fastpath
        for _ in range(8):  # bounded work per wake-up so timers and the control socket stay responsive
            try:
                batch = port.recv_batch(self.batch)
            except OSError as exc:  # the socket reports a link going down (or away) once: routes follow it
                self._port_error(index, exc)
                return
            if not batch:
                return
            outs: dict[RawPort, tuple[list[bytearray], list[Any]]] = {}
            # The engine's ports copy each frame out of the receive ring (zero_copy off): bytearrays only.
            for data, vnet in cast("list[tuple[bytearray, VnetHeader]]", batch):
                if captures:
                    captures["rx"].write(data, time.time())
                nbytes = len(data)
                if sync is not None:
                    sync.adopt(data)
                if vnet is NO_OFFLOAD:  # the common case: a finished checksum, no GSO
                    frames, decision = process(data, snap, flows, now)
                else:
                    frames, decision = process(data, snap, flows, now, vnet.partial,
                                               vnet.gso_size if vnet.gso_type else 0)
                if frames:
                    where = target(frames[0], decision)
                    if type(where) is Route:
                        out_port, l2 = where
                        out, vnets = outs.get(out_port) or outs.setdefault(out_port, ([], []))
                        for frame in frames:
                            frame[0:12] = l2
                            out.append(frame)
                            vnets.append(vnet if frame is data and decision.partial_out else NO_OFFLOAD)
                    elif decision.verdict != DROP:  # no route, no neighbour, link down: counted, never guessed
                        decision = drop(where, "", decision.service, decision.mode)
                count(decision, nbytes)
                if sync is not None:
                    sync.note(decision)
            if sync is not None:  # a full batch: frames are waiting, half-open flows wait for the kernel
                sync.flush(backlog=len(batch) >= self.batch)
            for out_port, (out, vnets) in outs.items():
                out_port.send_batch(out, vnets)
                self.last_tx = time.monotonic()
                if captures:
                    stamp = time.time()
                    for frame in out:
                        captures["tx"].write(frame, stamp)

    def _port_error(self, index: int, exc: OSError) -> None:
        if Ports.gone(self.ports[index], exc):
            self.reactor.remove_reader(self.ports[index])

    def _tick(self) -> None:
        if self.fastpath is not None:  # the kernel's counters and last-seen times first, then expiry
            self.fastpath.refresh(*self.fastpath_view(self.datapath.snapshot))  # next hops resolved since
            self.fastpath.tick(time.monotonic())
        else:
            self.datapath.flows.expire(time.monotonic())
        for port in self.ports:
            port.kernel_stats()  # frames the kernel dropped for want of socket buffer, added to the counters
        self.reporter.tick()
        if self.captures:
            for writer in self.captures.values():
                writer.flush()

    # -- flags -----------------------------------------------------------------------------------
    def _on_flags(self) -> None:
        if self.reactor.take_flag("stop"):
            log.info("stopping (signal)")
            self.reactor.stop()
        if self.reactor.take_flag("reload"):
            self.reload()

    def reload(self) -> dict[str, object]:
        try:
            config = engine_services(load_config(self.config_path))
        except (ConfigError, ValueError, OSError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return {"reloaded": False, "error": str(exc)}
        if self.workers > 1:
            try:  # checked before anything changes: a refused reload leaves the engine as it was
                build_fanout_program(self.workers, config_snat_ranges(config))
            except ValueError as exc:
                log.error("reload refused, keeping the running config: %s", exc)
                return {"reloaded": False, "error": f"cannot steer full-NAT replies over {self.workers} workers: {exc}"}
        errors = startup_errors(config, self.interfaces, self.netlink)
        if errors:
            log.error("reload refused, keeping the running config: %s", "; ".join(errors))
            return {"reloaded": False, "error": "; ".join(errors)}
        if config.lb.capture_dir != self.config.lb.capture_dir and not self.capture_from_cli:
            self._close_captures()
            self.captures = self._open_captures(config.lb.capture_dir)
        change = self.control.reload(config)
        self.config = config
        self.datapath.config = config
        flows = self.datapath.flows.reconfigure(config.flows)
        if flows:
            log.info("flow table reconfigured: %s", flows)
        # the kernel's flow map keeps the size it was loaded with: a warning when the reload asks for another
        kernel_flows = self.fastpath.flows_reloaded(config.flows.max_entries) if self.fastpath is not None else None
        self.set_filter()
        if self.workers > 1:
            self.portset.set_fanout_program(fanout_program(self.control.snapshot, self.workers))
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = self._start_health() if self.health_enabled else None
        log.info("reloaded %s", self.config_path)
        return {"reloaded": True, **change.as_dict(), "flows": flows,
                **({"fastpath_flows": kernel_flows} if kernel_flows else {})}

    def set_filter(self) -> None:
        """The receive filter of every port and the guard, from the current snapshot and backends (new VIPs or
        backends: a NAT backend added at run time needs its replies kept from the kernel's forwarding too)."""
        self.portset.set_filter(engine_filter(self.control.snapshot))
        if self.guard is not None:
            self.guard.update(self.control.effective_config(), self.interfaces, owner_text(self.config_path))

    def run(self) -> None:
        try:
            self.reactor.run(self._on_flags)
        finally:
            self.close()

    def close(self) -> None:
        self.server.close()
        if self.guard is not None:
            self.guard.remove()
        self._close_ports()
        self.netlink.close()
        if self.fastpath is not None:  # detaches the program and frees its maps
            self.fastpath.fp.close()
            self.fastpath = None
        if self.monitor is not None and hasattr(self.monitor, "close"):
            self.monitor.close()
        self._close_captures()
        self.reactor.close()
        log.info("engine stopped: %s", self.datapath.stats.totals())


def engine_services(config: Config) -> Config:
    """The services the engine forwards; ``mode = "l7"`` ones belong to ``pktlb proxy`` (ValueError if none is left)."""
    config, l7 = engine_part(config)
    if l7:
        log.warning("service(s) %s have mode l7: `pktlb proxy -c CONFIG` serves them, the engine ignores them",
                    ", ".join(l7))
    if not config.services:
        raise ValueError(f"every service ({', '.join(l7)}) has mode l7: run `pktlb proxy -c CONFIG` instead "
                         "of the packet engine")
    return config
