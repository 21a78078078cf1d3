"""The engine daemon: raw-socket I/O around the pure data path, in one event loop.

    RawPort (AF_PACKET, kernel BPF filter, virtio headers) --recv_batch--> DataPath.handle
        --> send (with the received virtio header when a checksum is still unfinished) --> counters

Around it: the control plane (snapshots), the control socket (`pktlb stats/flows/backend`), the
health monitor (checks -> snapshot rebuilds), timers (flow expiry, rates, rate-limited drop logs),
and signal flags (TERM/INT stop, HUP reload).  Set up fails with ``StartupError`` and a clear
message when privileges, the interface or the config are wrong.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pktlb.adapters.configfile import load_config
from pktlb.adapters.fanout import build_fanout_program, config_snat_ranges, fanout_program
from pktlb.adapters.ifinfo import InterfaceMissing, interface_info
from pktlb.adapters.neigh import resolve
from pktlb.adapters.pcap import PcapWriter
from pktlb.adapters.rawio import NO_OFFLOAD, RawPort
from pktlb.core.config import Config, ConfigError
from pktlb.core.datapath import DataPath
from pktlb.core.l7.split import engine_part
from pktlb.core.packet.addr import bytes_to_mac
from pktlb.core.snapshot import Snapshot
from pktlb.daemon.control import ControlError, ControlPlane
from pktlb.daemon.ctlsock import ControlServer, SocketInUse
from pktlb.daemon.filter import engine_filter
from pktlb.daemon.reactor import Reactor
from pktlb.daemon.report import Reporter

log = logging.getLogger("pktlb.engine")


class StartupError(RuntimeError):
    """The engine cannot start: the message says why and what to do."""


class Forwarder:
    def __init__(self, config_path: str, *, workers: int = 1, worker: int = 0, capture_dir: str | None = None,
                 control_socket: str | None = None, health: bool = True, batch: int = 64,
                 fanout_group: int = 0x5B1, fastpath: str | None = None) -> None:
        if os.geteuid() != 0:
            raise StartupError("pktlb run needs root (CAP_NET_RAW for AF_PACKET sockets): run it with sudo")
        self.config_path = config_path
        self.config = self._load(config_path)
        self.worker, self.workers, self.batch = worker, workers, batch
        lb = self.config.lb
        try:
            self.ifinfo = interface_info(lb.interface)
        except InterfaceMissing:
            raise StartupError(f"interface {lb.interface!r} (lb.interface) does not exist in this namespace") from None
        self.lb_mac = lb.mac or self.ifinfo.mac
        self.gateway_mac = lb.gateway_mac or self._resolve(lb.gateway, "lb.gateway")
        self.reactor = Reactor()
        self.control = ControlPlane(self.config, macs=self._backend_macs(self.config), lb_mac=self.lb_mac,
                                    gateway_mac=self.gateway_mac, on_snapshot=self._install)
        self.datapath = DataPath(self.config, self.control.snapshot, worker, workers)
        # Several workers: a "cbpf" fanout group whose program sends full-NAT replies to the worker
        # owning the SNAT port (pktlb.adapters.fanout); the workers join in index order.
        try:
            steering = fanout_program(self.control.snapshot, workers) if workers > 1 else None
        except ValueError as exc:  # too many SNAT ranges for classic BPF's jumps
            raise StartupError(f"cannot steer full-NAT replies over {workers} workers: {exc}") from None
        self.port = RawPort(lb.interface, bpf=engine_filter(self.control.snapshot), batch=batch,
                            fanout_group=fanout_group if workers > 1 else None, fanout_mode="cbpf",
                            fanout_program=steering)
        self.started = time.time()
        self.last_tx = 0.0  # monotonic time just after the last send of frames (the end of a bench drain)
        self.capture_from_cli = capture_dir is not None
        self.captures = self._open_captures(capture_dir or lb.capture_dir)
        self.reporter = Reporter(self)
        try:
            self.server = ControlServer(control_socket or lb.control_socket, self.reporter.handle, self.reactor)
        except SocketInUse as exc:
            self.port.close()
            raise StartupError(str(exc)) from None
        self.fastpath, self.fastpath_reason = self._start_fastpath(fastpath or lb.fastpath)
        self.health_enabled = health
        self.monitor = self._start_health() if health else None
        self.reactor.add_reader(self.port, self._on_frames)
        self.reactor.every(1.0, self._tick)
        for signum, name in ((15, "stop"), (2, "stop"), (1, "reload")):
            self.reactor.flag_on_signal(signum, name)
        log.info("engine up on %s (mac %s, %d service(s)), control socket %s", lb.interface, self.lb_mac,
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

    def _resolve(self, address: str | None, key: str) -> str | None:
        if address is None:
            return None
        mac = resolve(self.config.lb.interface, address)
        if mac is None:
            log.warning("%s %s: no neighbour entry and no ARP reply; using the lab's derived MAC", key, address)
            return None
        return bytes_to_mac(mac)

    def _backend_macs(self, config: Config) -> dict[str, str]:
        macs = {}
        for svc in config.services:
            for be in svc.backends:
                if be.mac is None and be.address not in macs:
                    mac = self._resolve(be.address, f"backend {be.name}")
                    if mac:
                        macs[be.address] = mac
        return macs

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

    def _start_fastpath(self, hook: str) -> tuple[Any, str]:
        """The kernel fast path (issue 15), or None and the reason it is off; the engine runs either way."""
        if hook == "off":
            return None, "off (--fastpath xdp|tc or [lb] fastpath turns it on)"
        if self.workers > 1:
            why = "not available with --workers > 1 yet (one program per interface, one flow table per worker)"
        elif hook == "tc":
            # The tc program is proven equal to Python (tests/fastpath), but the engine's AF_PACKET socket sees
            # every frame before tc ingress runs, so Python would forward the kernel's frames a second time.
            why = ("tc: the engine's packet socket sees frames before tc ingress (they would be forwarded twice); "
                   "use --fastpath xdp")
        else:
            from pktlb.daemon import fastpath_sync

            sync, why = fastpath_sync.start(self.config, self.datapath, hook, self.config.lb.interface)
            if sync is not None:
                return sync, ""
        log.warning("kernel fast path off: %s", why)
        return None, why

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
        if hasattr(self, "datapath"):
            self.datapath.swap(snapshot)
        if getattr(self, "fastpath", None) is not None:
            self.fastpath.install(snapshot)

    # -- the packet path -------------------------------------------------------------------------
    def _on_frames(self) -> None:
        port, handle, now = self.port, self.datapath.handle, time.monotonic()
        captures = self.captures
        sync = self.fastpath
        for _ in range(8):  # bounded work per wake-up so timers and the control socket stay responsive
            batch = port.recv_batch(self.batch)
            if not batch:
                return
            out: list[bytearray] = []
            vnets: list[Any] = []
            for data, vnet in batch:
                if captures:
                    captures["rx"].write(data, time.time())
                if sync is not None:
                    sync.adopt(data)
                if vnet is NO_OFFLOAD:  # the common case: a finished checksum, no GSO
                    frames, decision = handle(data, now)
                else:
                    frames, decision = handle(data, now, vnet.partial, vnet.gso_size if vnet.gso_type else 0)
                for frame in frames:
                    out.append(frame)
                    vnets.append(vnet if frame is data and decision.partial_out else NO_OFFLOAD)
                if sync is not None:
                    sync.note(decision)
            if sync is not None:
                sync.flush()
            if out:
                port.send_batch(out, vnets)
                self.last_tx = time.monotonic()
                if captures:
                    stamp = time.time()
                    for frame in out:
                        captures["tx"].write(frame, stamp)

    def _tick(self) -> None:
        if self.fastpath is not None:  # the kernel's counters and last-seen times first, then expiry
            self.fastpath.tick(time.monotonic())
        else:
            self.datapath.flows.expire(time.monotonic())
        self.port.kernel_stats()  # frames the kernel dropped for want of socket buffer, added to the counters
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
        self.control.macs.update(self._backend_macs(config))
        if config.lb.capture_dir != self.config.lb.capture_dir and not self.capture_from_cli:
            self._close_captures()
            self.captures = self._open_captures(config.lb.capture_dir)
        change = self.control.reload(config)
        self.config = config
        self.datapath.config = config
        flows = self.datapath.flows.reconfigure(config.flows)
        if flows:
            log.info("flow table reconfigured: %s", flows)
        self.port.set_filter(engine_filter(self.control.snapshot))
        if self.workers > 1:
            self.port.set_fanout_program(fanout_program(self.control.snapshot, self.workers))
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = self._start_health() if self.health_enabled else None
        log.info("reloaded %s", self.config_path)
        return {"reloaded": True, **change.as_dict(), "flows": flows}

    def run(self) -> None:
        try:
            self.reactor.run(self._on_flags)
        finally:
            self.close()

    def close(self) -> None:
        self.server.close()
        self.port.close()
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
