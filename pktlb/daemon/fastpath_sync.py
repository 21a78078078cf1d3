"""Keeps the kernel fast path's maps equal to the engine's snapshot and flow table, and its counters
in the engine's state (issue 15).

Python stays the control plane: every new snapshot (backend down/drain/remove, health, reload)
rewrites the service, backend, table and reverse-NAT maps; a flow Python decides (a punted first
packet, a reschedule, a FIN) is pushed after the batch that decided it.  Once a second the flow map
is read back: packets and bytes the kernel forwarded go into the flow entries and the stats, its
last-seen times refresh Python's idle timers, flows the program scheduled itself (maglev, hash, sh)
enter Python's table (so ``pktlb flows`` lists them), then entries Python expired or evicted are
deleted from the map.  Map errors are logged and counted; the engine keeps forwarding.  The report's
``read_backs`` counts the ticks done, so a reader can await the next one instead of sleeping past it.

Several workers share one set of maps (``pktlb.daemon.fastpath_engine``).  Worker 0 is the only
``writer`` of the snapshot's maps; every worker computes the same ids from the same snapshots (the
CLI sends each change to every worker) and checks a backend's slot before it pushes a flow there.
A worker pushes, reads back, expires and deletes only its own flows: the ones in its flow table,
and of the flows the program scheduled, those the fanout hash sends to it (``owns``), so nothing is
imported or counted twice when the CLI adds the workers up.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from itertools import islice
from typing import Any

from pktlb.adapters.fanout import header_hash
from pktlb.adapters.fastpath import FastPath, kernel_flow_entries
from pktlb.adapters.libbpf import BpfError
from pktlb.core.datapath import DataPath
from pktlb.core.fastpath import encode
from pktlb.core.fastpath import layout as L
from pktlb.core.fastpath.encode import UNRESOLVED_L2, Interfaces
from pktlb.core.flowtable import FlowEntry
from pktlb.core.packet.ethernet import ETH_P_IP
from pktlb.core.packet.frame import FLOW_FIELDS, flow_fields
from pktlb.core.packet.ipv4 import PROTO_TCP, PROTO_UDP
from pktlb.core.snapshot import Snapshot

log = logging.getLogger("pktlb.fastpath")
ETH = 14  # the engine's byte counters include the Ethernet header, the kernel's do not
SCAN_BUDGET = 8192  # flow-map entries read back per tick (a bigger map is read a slice per second)
IMPORT_BUDGET = 4096  # flows the program scheduled taken into Python's table per tick (a SYN flood waits)
DEFER_MAX = 65536  # half-open flows held back under backlog (flush); more stay Python's
DEFER_DRAIN = 256  # deferred flows pushed per flush without backlog (about 5 ms of work)
EXPIRY_BUDGET = 4096  # Python's oldest entries checked against the kernel before they may expire
REPLY_L2 = slice(24, 36)  # a flow value's reply_l2 (then its reply_ifindex), per layout.FLOW
COUNTS, COUNTS_AT = struct.Struct("<4Q"), L.FLOW.size - 40  # a flow value's packets and bytes in and out


ReplyTo = Callable[[int], tuple[bytes, int]]  # client address -> (Ethernet addresses, ifindex) of replies to it


class FastPathSync:
    def __init__(self, fastpath: FastPath, datapath: DataPath, hook: str,
                 reply_l2: Callable[[int], bytes] | None = None, *, reply_to: ReplyTo | None = None,
                 writer: bool = True, worker: int = 0, workers: int = 1) -> None:
        self.fp, self.dp, self.hook = fastpath, datapath, hook
        # a client address -> the Ethernet addresses (and interface) of replies toward it (the egress
        # stage's answer); without one, the snapshot's reply_l2 (the configured gateway) for every client
        if reply_to is None:
            l2_of = reply_l2 or (lambda _client: self.dp.snapshot.reply_l2)
            reply_to = lambda client: (l2_of(client), 0)  # noqa: E731
        self.reply_to = reply_to
        self.writer, self.worker, self.workers = writer, worker, workers
        self.foreign_backends = 0  # flows not pushed: the shared backend slot was not (yet) this snapshot's
        self.ids = encode.Ids()
        self.seen: dict[bytes, tuple[int, int, int, int]] = {}  # counters already added, per kernel key
        self.pending: set[tuple[int, int, int, int, int]] = set()
        self.deferred: dict[tuple[int, int, int, int, int], None] = {}  # half-open flows a backlog held back (oldest first)
        self.behind = False  # a flush since the last read-back had frames waiting
        # services (proto, VIP, port) whose new flows the program schedules, or did under an earlier
        # snapshot: the only ones with kernel flows this worker did not push (``kernel_may_have``)
        self.scheduling: set[tuple[int, int, int]] = set()
        self.errors = 0
        self.imported = 0
        self.read_backs = 0  # ticks done: a reader that saw n knows tick n + 1 starts after its look (one loop)
        self.l2_seen: tuple[object, ...] = ()
        self.cursor: bytes | None = None
        self.flow_map_wanted = 0  # a reload asked for another kernel flow map size (it keeps its own until restart)

    def owns(self, key: tuple[int, int, int, int, int]) -> bool:
        """Is this worker the one the fanout hash gives the flow's inbound frames (always, alone)?"""
        if self.workers == 1:
            return True
        proto, src, dst, sport, dport = key
        return header_hash(src, dst, (sport << 16 | dport) if proto in (6, 17) else 0) % self.workers == self.worker

    # -- the control plane's changes -----------------------------------------------------------------
    def refresh(self, view: Snapshot, ifaces: Interfaces | None = None) -> None:
        """Install ``view`` again if a next hop's MAC or interface changed since the last install."""
        if (*_l2s(view), ifaces) != self.l2_seen:
            self.install(view, ifaces)

    def install(self, snap: Snapshot, ifaces: Interfaces | None = None) -> None:
        """The snapshot's maps (the writer only; every worker keeps the ids, the same in each)."""
        self.l2_seen = (*_l2s(snap), ifaces)
        self.scheduling.update(k for k, svc in snap.services.items() if encode.sched_kind(svc) != L.SCHED_PYTHON)
        try:
            gone = self.ids.forget_missing(snap)
            image = encode.encode_snapshot(snap, self.dp.flows.config, self.ids, ifaces)
            if not self.writer:
                return
            for bid in gone:
                self.fp.apply({"pktlb_backends": {L.U32.pack(bid): L.BACKEND.pack(
                    bytes(12), bytes(4), bytes(2), L.BE_ABSENT, 0, 0, 0, 0, 0, 0, 0, 0, 0)}}, replace=False)
            self.fp.apply(image)
        except (BpfError, ValueError) as exc:
            self._error("snapshot", exc)

    def adopt(self, frame: bytearray) -> None:
        """Before Python handles a punted frame: if its flow was scheduled by the program and Python
        does not know it yet (a SYN-ACK, a FIN), take the kernel's entry first, so the frame is
        counted and tracked on the same flow as without the fast path."""
        if len(frame) < FLOW_FIELDS.size:
            return
        ethertype, version_ihl, proto, src, dst, sport, dport = flow_fields(frame)
        if ethertype != ETH_P_IP or version_ihl != 0x45 or proto not in (PROTO_TCP, PROTO_UDP):
            return
        snap = self.dp.snapshot
        hit = snap.nat_reverse.get((proto, src, sport))
        key = (proto, dst, hit[0].vip, dport, hit[0].port) if hit else (proto, src, dst, sport, dport)
        if key in self.dp.flows.entries:
            if hit:  # a reply Python handles: push its flow again (the reply's next hop may be resolved now)
                self.pending.add(key)
            return
        if not hit and dst not in snap.vips:
            return
        raw_key = encode.flow_key(key)
        if not hit and raw_key not in self.seen and (proto, dst, dport) not in self.scheduling and (
                self.workers == 1 or self.owns(key)):
            return  # the kernel cannot have it (kernel_may_have, inlined): a full-NAT SYN, say
        try:
            raw = self.fp.lookup("pktlb_flows", raw_key)
            if raw is not None and not self.owns(key):  # another worker's flow: it imports it
                if hit:
                    self._hint_reply(raw_key, raw, key[1])
                return
        except BpfError as exc:
            self._error("adopt", exc)
            return
        if raw is not None:
            kf = encode.decode_flow(raw_key, raw)
            entry = self._import(kf, snap, kf.last_seen_ns / 1e9)
            if entry is not None:
                self._merge(raw_key, kf, entry, snap)
                self.pending.add(kf.key)

    def kernel_may_have(self, key: tuple[int, int, int, int, int], raw_key: bytes) -> bool:
        """Can the flow map hold this client-side flow?  Only if this worker pushed it (``seen``), the
        program schedules its service's new flows (or did under an earlier snapshot), or another worker
        could have pushed it (its frames are not all this worker's).  Otherwise a lookup (a system call)
        can only miss: a new flow of a service Python schedules, full-NAT's above all."""
        return (raw_key in self.seen or (key[0], key[2], key[4]) in self.scheduling
                or (self.workers > 1 and not self.owns(key)))

    def note(self, decision: Any) -> None:
        """Called for every frame Python handled: remember flows to push after the batch."""
        key = decision.flow_key
        if key is not None:
            self.pending.add(key)

    def flush(self, backlog: bool = False) -> None:
        """Push the flows Python decided in the last batch (their counters merged first).

        ``backlog``: frames are waiting (the batch was full).  Then a half-open flow the kernel does not
        have yet is not pushed but deferred: under a SYN flood Python's time goes to deciding new flows,
        not to publishing ones that mostly never complete.  Nothing changes for its frames but where they
        are forwarded (Python has the flow, the program punts what it does not know); the flow is pushed
        once established, or by a later flush without backlog (DEFER_DRAIN at a time; the read-back's
        too, after a second without a full batch)."""
        if not backlog and self.deferred:
            entries = self.dp.flows.entries
            for key in list(islice(self.deferred, DEFER_DRAIN)):
                del self.deferred[key]
                if key in entries:  # else it is gone from Python before the kernel ever had it
                    self.pending.add(key)
        elif backlog:
            self.behind = True
            self._defer_half_open()
        if not self.pending:
            return
        flows, snap = self.dp.flows, self.dp.snapshot
        image: encode.MapImage = {"pktlb_flows": {}, "pktlb_snat_reverse": {}}
        slots: dict[tuple[str, str], bool] = {}  # a backend slot checked once per batch
        deferred = self.deferred
        try:
            for key in self.pending:
                entry = flows.entries.get(key)
                raw_key = encode.flow_key(key)
                if deferred:
                    deferred.pop(key, None)
                if entry is None:
                    if self.workers == 1 or raw_key in self.seen:  # never another worker's flow
                        self._drop_kernel(raw_key)
                    continue
                if not self.writer:
                    slot = (entry.service, entry.backend)
                    if slot not in slots:
                        slots[slot] = self._slot_is(entry, snap)
                    if not slots[slot]:
                        self.foreign_backends += 1
                        continue
                if self.kernel_may_have(key, raw_key):  # its counters first: the push zeroes them
                    current = self.fp.lookup("pktlb_flows", raw_key)
                    if current is not None:
                        self._merge(raw_key, encode.decode_flow(raw_key, current), entry, snap)
                l2, ifindex = self.reply_to(entry.key[1])
                encode.encode_entry(entry, snap, self.ids, int(entry.last_seen * 1e9), l2, ifindex, image)
            self._push(image)
        except (BpfError, ValueError) as exc:
            self._error("flow push", exc)
        self.pending.clear()

    def _defer_half_open(self) -> None:
        """Move the pending half-open flows the kernel cannot hold (``kernel_may_have``, inlined: this runs
        for every new flow of a flood) to ``deferred``."""
        entries, seen, scheduling, deferred = self.dp.flows.entries, self.seen, self.scheduling, self.deferred
        flow_key, single = encode.flow_key, self.workers == 1
        for key in [k for k in self.pending if (e := entries.get(k)) is not None and e.state == "syn"]:
            if (key[0], key[2], key[4]) in scheduling or not (single or self.owns(key)) or flow_key(key) in seen:
                continue
            self.pending.discard(key)
            if len(deferred) < DEFER_MAX:  # else it stays Python's until its next frame notes it again
                deferred[key] = None

    def _push(self, image: encode.MapImage) -> None:
        """Write the flows' entries, one system call per map, after the batch's deletions (a freed SNAT
        port may be pushed again in the same batch).  ``seen`` then holds the flows written, their
        counters zeroed."""
        flows, reverse = image["pktlb_flows"], image["pktlb_snat_reverse"]
        failed = self._write("pktlb_flows", flows)
        for raw_key in flows.keys() - failed:
            self.seen[raw_key] = (0, 0, 0, 0)
        failed |= self._write("pktlb_snat_reverse", reverse)
        if failed:
            raise BpfError(0, f"{len(failed)} of {len(flows) + len(reverse)} flow map entries not written")

    def _write(self, name: str, entries: dict[bytes, bytes]) -> set[bytes]:
        """Every entry with one system call, or one by one if that fails (a full map: the others still
        go in); returns the keys not written."""
        try:
            self.fp.apply({name: entries}, replace=False)
            return set()
        except BpfError:
            failed = set()
            for key, value in entries.items():
                try:
                    self.fp.apply({name: {key: value}}, replace=False)
                except BpfError:
                    failed.add(key)
            return failed

    def _hint_reply(self, raw_key: bytes, raw: bytes, client: int) -> None:
        """A reply of another worker's kernel flow that punted for want of its next hop: write just that
        into the shared entry (the owner imports the flow on its next tick), so the next replies stay
        in the kernel."""
        if raw[REPLY_L2] != UNRESOLVED_L2:
            return
        l2, ifindex = self.reply_to(client)
        if l2 != UNRESOLVED_L2:
            self.fp.apply({"pktlb_flows": {raw_key: raw[:REPLY_L2.start] + l2 + L.U32.pack(ifindex) + raw[REPLY_L2.stop + 4:]}},
                          replace=False)

    def _slot_is(self, entry: FlowEntry, snap: Snapshot) -> bool:
        """Does the shared backend slot of this flow hold its backend (worker 0 may not have installed
        the snapshot yet)?  If not, the flow stays with Python until a later push."""
        svc = snap.services.get((entry.key[0], entry.key[2], entry.key[4]))
        be = svc.by_name.get(entry.backend) if svc else None
        key = (entry.service, entry.backend)
        raw = self.fp.lookup("pktlb_backends", L.U32.pack(self.ids.backends[key])) if key in self.ids.backends else None
        return be is not None and raw is not None and raw[12:18] == be.addr_bytes + be.port_bytes

    # -- reading back ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Counters, last seen and kernel-scheduled flows into Python; then Python's expiry; then delete
        from the map what Python no longer has."""
        flows, snap = self.dp.flows, self.dp.snapshot
        try:
            kernel, self.cursor = self.fp.scan("pktlb_flows", self.cursor, SCAN_BUDGET)
            imports = IMPORT_BUDGET
            for raw_key, raw in kernel:
                if self.seen.get(raw_key) == COUNTS.unpack_from(raw, COUNTS_AT):
                    continue  # nothing forwarded since the last read or push (last seen and state move with it)
                kf = encode.decode_flow(raw_key, raw)
                entry = flows.entries.get(kf.key)
                if entry is None:
                    if raw_key in self.seen or imports <= 0 or (self.workers > 1 and not (kf.origin and self.owns(kf.key))):
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
            self.flush(backlog=self.behind)  # a second of full batches: no publishing of deferred flows yet
            self.behind = False
        except (BpfError, ValueError) as exc:
            self._error("read back", exc)
            flows.expire(now)
        self.read_backs += 1

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

    def flows_reloaded(self, max_entries: int) -> str | None:
        """A reload's ``[flows] max_entries``: the kernel's flow maps were sized when loaded and keep that size
        until the engine restarts; a warning (logged, and kept for `pktlb stats`) when it asks for another."""
        have, want = getattr(self.fp, "max_flows", 0), kernel_flow_entries(max_entries)
        self.flow_map_wanted = want if want != have else 0
        if not self.flow_map_wanted:
            return None
        message = (f"[flows] max_entries = {max_entries}: the kernel flow map keeps its {have} entries until the "
                   "engine restarts (eBPF map sizes are fixed when loaded); Python's flow table follows now")
        log.warning("fast path: %s", message)
        return message

    def report(self) -> dict[str, object]:
        counters = encode.decode_counters(self.fp.counters())
        return {"hook": self.hook, "errors": self.errors, "imported_flows": self.imported,
                "kernel_flows": len(self.seen), "deferred_flows": len(self.deferred), "read_backs": self.read_backs,
                "worker": self.worker, "writer": self.writer,
                "foreign_backends": self.foreign_backends, "flow_map_entries": getattr(self.fp, "max_flows", 0),
                **({"flow_map_wanted": self.flow_map_wanted} if self.flow_map_wanted else {}),
                "forwarded": {k: counters[k] for k in L.FORWARD_KINDS},
                "punts": {k: v for k, v in counters.items() if k in L.PUNT_REASONS and v}}


def _l2s(snap: Snapshot) -> tuple[bytes, ...]:
    return (snap.reply_l2, *(be.l2 for svc in snap.services.values() for be in svc.backends))
