"""Keeps the kernel fast path's maps equal to the engine's snapshot and flow table, and its counters
in the engine's state (issue 15).

Python stays the control plane: every new snapshot (backend down/drain/remove, health, reload)
rewrites the service, backend, table and reverse-NAT maps; a flow Python decides (a punted first
packet, a reschedule, a FIN) is pushed after the batch that decided it.  Once a second the flow map
is read back: packets and bytes the kernel forwarded go into the flow entries and the stats, its
last-seen times refresh Python's idle timers, flows the program scheduled itself (maglev, hash, sh)
enter Python's table (so ``pktlb flows`` lists them), then entries Python expired or evicted are
deleted from the map.  Map errors are logged and counted; the engine keeps forwarding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pktlb.adapters.fastpath import FastPath
from pktlb.adapters.libbpf import BpfError
from pktlb.adapters.rawio import ETH_P_IP
from pktlb.core.datapath import DataPath
from pktlb.core.decision import FORWARD, INBOUND, OUTBOUND, Decision
from pktlb.core.fastpath import encode
from pktlb.core.fastpath import layout as L
from pktlb.core.fastpath.encode import UNRESOLVED_L2
from pktlb.core.flowtable import FlowEntry
from pktlb.core.snapshot import Snapshot
from pktlb.daemon.egress import Route

log = logging.getLogger("pktlb.fastpath")
ETH = 14  # the engine's byte counters include the Ethernet header, the kernel's do not
SCAN_BUDGET = 8192  # flow-map entries read back per tick (a bigger map is read a slice per second)
IMPORT_BUDGET = 4096  # flows the program scheduled taken into Python's table per tick (a SYN flood waits)
EXPIRY_BUDGET = 4096  # Python's oldest entries checked against the kernel before they may expire


class FastPathSync:
    def __init__(self, fastpath: FastPath, datapath: DataPath, hook: str,
                 reply_l2: Callable[[int], bytes] | None = None) -> None:
        self.fp, self.dp, self.hook = fastpath, datapath, hook
        # a client address -> the Ethernet addresses of replies toward it (the egress stage's answer);
        # without one, the snapshot's reply_l2 (the configured gateway) for every client
        self.reply_l2 = reply_l2 or (lambda _client: self.dp.snapshot.reply_l2)
        self.ids = encode.Ids()
        self.seen: dict[bytes, tuple[int, int, int, int]] = {}  # counters already added, per kernel key
        self.pending: set[tuple[int, int, int, int, int]] = set()
        self.errors = 0
        self.imported = 0
        self.l2_seen: tuple[bytes, ...] = ()
        self.cursor: bytes | None = None

    # -- the control plane's changes -----------------------------------------------------------------
    def refresh(self, view: Snapshot) -> None:
        """Install ``view`` again if a next hop's MAC changed since the last install."""
        if _l2s(view) != self.l2_seen:
            self.install(view)

    def install(self, snap: Snapshot) -> None:
        self.l2_seen = _l2s(snap)
        try:
            for bid in self.ids.forget_missing(snap):
                self.fp.apply({"pktlb_backends": {L.U32.pack(bid): L.BACKEND.pack(
                    bytes(12), bytes(4), bytes(2), L.BE_ABSENT, 0, 0, 0, 0, 0, 0, 0, 0)}}, replace=False)
            self.fp.apply(encode.encode_snapshot(snap, self.dp.flows.config, self.ids))
        except (BpfError, ValueError) as exc:
            self._error("snapshot", exc)

    def adopt(self, frame: bytearray) -> None:
        """Before Python handles a punted frame: if its flow was scheduled by the program and Python
        does not know it yet (a SYN-ACK, a FIN), take the kernel's entry first, so the frame is
        counted and tracked on the same flow as without the fast path."""
        if len(frame) < 38 or frame[12:14] != b"\x08\x00" or frame[14] != 0x45 or frame[23] not in (6, 17):
            return
        proto = frame[23]
        src, dst = int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big")
        sport, dport = int.from_bytes(frame[34:36], "big"), int.from_bytes(frame[36:38], "big")
        snap, flows = self.dp.snapshot, self.dp.flows
        hit = snap.nat_reverse.get((proto, src, sport))
        key = (proto, dst, hit[0].vip, dport, hit[0].port) if hit else (proto, src, dst, sport, dport)
        if key in flows.entries:
            if hit:  # a reply Python handles: push its flow again (the reply's next hop may be resolved now)
                self.pending.add(key)
            return
        if not hit and dst not in snap.vips:
            return
        raw_key = encode.flow_key(key)
        try:
            raw = self.fp.lookup("pktlb_flows", raw_key)
        except BpfError as exc:
            self._error("adopt", exc)
            return
        if raw is not None:
            kf = encode.decode_flow(raw_key, raw)
            entry = self._import(kf, snap, kf.last_seen_ns / 1e9)
            if entry is not None:
                self._merge(raw_key, kf, entry, snap)
                self.pending.add(kf.key)

    def note(self, decision: Any) -> None:
        """Called for every frame Python handled: remember flows to push after the batch."""
        key = decision.flow_key
        if key is not None:
            self.pending.add(key)

    def flush(self) -> None:
        """Push the flows Python decided in the last batch (their counters merged first)."""
        if not self.pending:
            return
        flows, snap = self.dp.flows, self.dp.snapshot
        try:
            for key in self.pending:
                entry = flows.entries.get(key)
                raw_key = encode.flow_key(key)
                if entry is None:
                    self._drop_kernel(raw_key)
                    continue
                current = self.fp.lookup("pktlb_flows", raw_key)
                if current is not None:
                    self._merge(raw_key, encode.decode_flow(raw_key, current), entry, snap)
                image = encode.encode_entry(entry, snap, self.ids, int(entry.last_seen * 1e9),
                                            self.reply_l2(entry.key[1]))
                self.fp.apply(image, replace=False)
                self.seen[raw_key] = (0, 0, 0, 0)
        except (BpfError, ValueError) as exc:
            self._error("flow push", exc)
        self.pending.clear()

    # -- reading back ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Counters, last seen and kernel-scheduled flows into Python; then Python's expiry; then delete
        from the map what Python no longer has."""
        flows, snap = self.dp.flows, self.dp.snapshot
        try:
            kernel, self.cursor = self.fp.scan("pktlb_flows", self.cursor, SCAN_BUDGET)
            imports = IMPORT_BUDGET
            for raw_key, raw in kernel:
                kf = encode.decode_flow(raw_key, raw)
                entry = flows.entries.get(kf.key)
                if entry is None:
                    if raw_key in self.seen or imports <= 0:
                        continue  # Python dropped it (deleted below), or its turn comes on a later tick
                    imports -= 1
                    entry = self._import(kf, snap, now)
                    if entry is None:
                        continue
                    self.pending.add(kf.key)  # pushed back with its replies' next hop (nat, full-NAT)
                self._merge(raw_key, kf, entry, snap)
            candidates = self._refresh_oldest(now)
            flows.expire(now)
            gone = [k for k in candidates if encode.decode_flow_key(k) not in flows.entries]
            gone += [k for k, _ in kernel if k in self.seen and encode.decode_flow_key(k) not in flows.entries]
            for raw_key in gone:
                self._drop_kernel(raw_key)
            self.flush()
        except (BpfError, ValueError) as exc:
            self._error("read back", exc)
            flows.expire(now)

    def _refresh_oldest(self, now: float) -> list[bytes]:
        """Before Python expires its oldest entries, take their last-seen times from the kernel (a flow
        the program keeps forwarding is not idle).  Returns the keys that were candidates."""
        flows, snap = self.dp.flows, self.dp.snapshot
        horizon = now - flows.min_timeout
        keys = []
        for i, entry in enumerate(flows.entries.values()):
            if i >= EXPIRY_BUDGET or entry.last_seen > horizon:
                break
            keys.append((encode.flow_key(entry.key), entry))
        for raw_key, entry in keys:
            raw = self.fp.lookup("pktlb_flows", raw_key)
            if raw is not None:
                self._merge(raw_key, encode.decode_flow(raw_key, raw), entry, snap)
        return [k for k, _ in keys]

    def _import(self, kf: encode.KernelFlow, snap: Snapshot, now: float) -> FlowEntry | None:
        svc = snap.services.get((kf.key[0], kf.key[2], kf.key[4]))
        name = next((n for (s, n), i in self.ids.backends.items() if i == kf.backend_id and svc and s == svc.name),
                    None)
        if svc is None or name is None:
            return None
        entry = self.dp.flows.insert(kf.key, svc.name, name, kf.state, now)
        self.dp.stats.backend(svc.name, name).new_flows += 1
        self.imported += 1
        return entry

    def _merge(self, raw_key: bytes, kf: encode.KernelFlow, entry: FlowEntry, snap: Snapshot) -> None:
        old = self.seen.get(raw_key, (0, 0, 0, 0))
        d_pin, d_bin = kf.packets_in - old[0], kf.bytes_in - old[1]
        d_pout, d_bout = kf.packets_out - old[2], kf.bytes_out - old[3]
        self.seen[raw_key] = (kf.packets_in, kf.bytes_in, kf.packets_out, kf.bytes_out)
        if d_pin > 0 or d_pout > 0:
            entry.packets_in += d_pin
            entry.bytes_in += d_bin
            entry.packets_out += d_pout
            entry.bytes_out += d_bout
            self.dp.stats.count_kernel(entry.service, entry.backend, d_pin, d_bin + ETH * d_pin, d_pout,
                                       d_bout + ETH * d_pout)
        seen_at = kf.last_seen_ns / 1e9
        if seen_at > entry.last_seen:
            entry.last_seen = seen_at
            if entry.key in self.dp.flows.entries:  # LRU order follows last use, as FlowTable.lookup keeps it
                self.dp.flows.entries.move_to_end(entry.key)
        if entry.state == "syn" and kf.state == "est":
            entry.state = "est"

    def _drop_kernel(self, raw_key: bytes) -> None:
        raw = self.fp.lookup("pktlb_flows", raw_key)
        if raw is not None:
            _, _, _, port, addr, *_ = L.FLOW.unpack(raw)
            if port != bytes(2):
                self.fp.delete("pktlb_snat_reverse", L.REVERSE_KEY.pack(addr, port, raw_key[12]))
        self.fp.delete("pktlb_flows", raw_key)
        self.seen.pop(raw_key, None)

    def _error(self, what: str, exc: Exception) -> None:
        self.errors += 1
        log.error("fast path %s failed (the engine keeps forwarding): %s", what, exc)

    def report(self) -> dict[str, object]:
        counters = encode.decode_counters(self.fp.counters())
        return {"hook": self.hook, "errors": self.errors, "imported_flows": self.imported,
                "kernel_flows": len(self.seen),
                "forwarded": {k: counters[k] for k in L.FORWARD_KINDS},
                "punts": {k: v for k, v in counters.items() if k in L.PUNT_REASONS and v}}


def _l2s(snap: Snapshot) -> tuple[bytes, ...]:
    return (snap.reply_l2, *(be.l2 for svc in snap.services.values() for be in svc.backends))


def fastpath_view(snap: Snapshot, egress: Any, port: Any, lb_mac: bytes) -> Snapshot:
    """The snapshot as the fast path must see it: the interface's own MAC as the LB's, and each
    backend's and the replies' Ethernet addresses as the engine's egress stage resolves them.  A next
    hop that is unresolved, or behind another interface (XDP_TX sends a frame back out where it came
    in), gets no MAC, so its frames punt to Python."""
    services = {}
    for key, svc in snap.services.items():
        views = []
        for be in svc.backends:
            where = egress.target(bytearray(34), Decision(FORWARD, INBOUND, svc.name, be.name))
            l2 = where[1] if type(where) is Route and where[0] is port else UNRESOLVED_L2
            views.append(replace(be, l2=l2))
        services[key] = replace(svc, backends=tuple(views), by_name={b.name: b for b in views})
    reply_l2 = UNRESOLVED_L2
    if snap.config.lb.gateway:  # replies have one next hop only when the config names the gateway
        where = egress.target(bytearray(34), Decision(FORWARD, OUTBOUND))
        if type(where) is Route and where[0] is port:
            reply_l2 = where[1]
    return replace(snap, lb_mac=lb_mac, services=services, reply_l2=reply_l2)


def reply_resolver(egress: Any, port: Any) -> Callable[[int], bytes]:
    """client address -> the Ethernet addresses the engine's egress stage would give a reply to it
    (zeros while the next hop is unresolved or behind another interface: its replies punt)."""
    def resolve(client: int) -> bytes:
        probe = bytearray(34)
        probe[30:34] = client.to_bytes(4, "big")
        where = egress.target(probe, Decision(FORWARD, OUTBOUND))
        return where[1] if type(where) is Route and where[0] is port else UNRESOLVED_L2
    return resolve


def start_for_engine(engine: Any, hook: str) -> tuple[FastPathSync | None, str]:
    """The fast path for a running ``Forwarder`` (its datapath, ports and egress stage), or None and why."""
    if hook == "off":
        return None, "off (--fastpath xdp|tc or [lb] fastpath turns it on)"
    if engine.workers > 1:
        return None, "not available with --workers > 1 yet (one program per interface, one flow table per worker)"
    if len(engine.ports) > 1:
        return None, "not available with several interfaces yet (XDP_TX sends a frame back out where it came in)"
    if hook == "tc" and engine.ports[0].protocol != ETH_P_IP:
        # An ETH_P_ALL socket sees every frame before tc ingress runs: Python would forward the kernel's
        # frames a second time.  The engine binds ETH_P_IP when it starts with the tc fast path.
        return None, "tc: the engine's packet socket reads before tc ingress (bound to ETH_P_ALL)"
    port = engine.ports[0]
    return start(engine.config, engine.datapath, hook, port.ifname, engine.fastpath_snapshot,
                 reply_resolver(engine.egress, port))


def start(config: Any, datapath: DataPath, hook: str, interface: str, view: Any = None,
          reply_l2: Callable[[int], bytes] | None = None) -> tuple[FastPathSync | None, str]:
    """Load and attach the fast path; (None, why) when it cannot run here, the engine then runs without it."""
    from pktlb.adapters.fastpath import availability

    why = availability()
    if why:
        return None, why
    try:
        fp = FastPath(config.flows.max_entries, (hook,))
    except BpfError as exc:
        return None, f"loading the eBPF object failed: {exc}"
    sync = FastPathSync(fp, datapath, hook, reply_l2)
    sync.install(view(datapath.snapshot) if view else datapath.snapshot)
    try:
        fp.attach(interface, hook)
    except (BpfError, OSError) as exc:
        fp.close()
        return None, f"attaching to {interface} ({hook}) failed: {exc}"
    log.info("fast path on: %s on %s (monotonic clock %.0f)", hook, interface, time.monotonic())
    return sync, ""
