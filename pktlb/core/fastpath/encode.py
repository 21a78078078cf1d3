"""Encode a snapshot and a flow table into the fast path's map entries (pure; ``layout`` has the formats).

The values are the ones the Python data path already computed: per-backend MACs, addresses and
RFC 1624 deltas from the snapshot, per-flow full-NAT ports and deltas from the flow table, and the
lookup table of every service whose scheduler is a pure function of the packet (``hash_input``:
maglev, hash, sh), so the program picks the same backend Python would.  Services scheduled with
state (rr, wrr, lc, lrt, bw) and every full-NAT service (the first packet needs an SNAT port) get no
table: their new flows punt.

Ids: the program refers to services and backends by small integers.  ``Ids`` keeps them stable
across snapshots (a flow the kernel created keeps pointing at the same backend after a reload) and
frees the ones of removed backends.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from pktlb.core.config import FlowConfig
from pktlb.core.fastpath import layout as L
from pktlb.core.flowtable import FlowEntry, FlowTable
from pktlb.core.packet.ipv4 import PROTO_UDP
from pktlb.core.snapshot import BackendView, ServiceView, Snapshot

MapImage = dict[str, dict[bytes, bytes]]  # map name -> key bytes -> value bytes
UNRESOLVED_L2 = bytes(12)  # a next hop without a MAC yet: the program punts its frames


@dataclass
class Ids:
    """Stable small integers for services (by name) and backends (by service and backend name)."""

    services: dict[str, int] = field(default_factory=dict)
    backends: dict[tuple[str, str], int] = field(default_factory=dict)

    def service(self, name: str) -> int:
        if name not in self.services:
            used = set(self.services.values())
            free = next(i for i in range(L.MAX_SERVICES + 1) if i not in used)
            if free >= L.MAX_SERVICES:
                raise ValueError(f"fast path: more than {L.MAX_SERVICES} services")
            self.services[name] = free
        return self.services[name]

    def backend(self, service: str, name: str) -> int:
        key = (service, name)
        if key not in self.backends:
            used = set(self.backends.values())
            free = next(i for i in range(L.MAX_BACKENDS + 1) if i not in used)
            if free >= L.MAX_BACKENDS:
                raise ValueError(f"fast path: more than {L.MAX_BACKENDS} backends")
            self.backends[key] = free
        return self.backends[key]

    def forget_missing(self, snap: Snapshot) -> list[int]:
        """Drop the ids of backends no longer in the snapshot; returns them (their slots must be cleared)."""
        present = {(s.name, b.name) for s in snap.services.values() for b in s.backends}
        gone = [k for k in self.backends if k not in present]
        return [self.backends.pop(k) for k in gone]


def _b4(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _b2(value: int) -> bytes:
    return value.to_bytes(2, "big")


def config_value(snap: Snapshot, flows: FlowConfig, enabled: bool = True, reply_ifindex: int = 0) -> bytes:
    timeouts = (flows.syn_timeout, flows.tcp_timeout, flows.fin_timeout, flows.fin_timeout, flows.udp_timeout)
    flags = (L.ENABLED if enabled else 0) | (L.REPLIES if enabled and _resolved(snap.reply_l2) else 0)
    return L.CONFIG.pack(snap.lb_mac, snap.reply_l2, flags, _b4(snap.lb_addr), snap.seed & 0xFFFFFFFF,
                         *(min(int(t), 0xFFFFFFFF) for t in timeouts), reply_ifindex)


def _resolved(l2: bytes) -> bool:
    return l2[0:6] != bytes(6) and l2[6:12] != bytes(6)


def sched_kind(svc: ServiceView) -> int:
    """Who schedules the service's new flows in the fast path (layout.SCHED_*)."""
    if svc.rewriter.traits.needs_snat or not svc.scheduler.hash_input:  # the first packet needs an SNAT port
        return L.SCHED_PYTHON
    if len(svc.scheduler.lookup_table()) > L.MAX_TABLE:
        return L.SCHED_PYTHON
    return L.SCHED_FLOW_HASH if svc.scheduler.hash_input == "flow" else L.SCHED_SRC_HASH


def table_value(size: int, backend_ids: Iterable[int]) -> bytes:
    slots = array.array("H", backend_ids).tobytes()  # then zeros: the unused slots and the padding
    return L.TABLE_HEAD.pack(size, 0) + slots + bytes(L.TABLE_VALUE_SIZE - L.TABLE_HEAD.size - len(slots))


def _table_ids(service: str, table: tuple[BackendView, ...], ids: Ids) -> Iterable[int]:
    """The backend id of every slot of a (Maglev: 65537-slot) table, one id lookup per distinct backend."""
    names = list(map(attrgetter("name"), table))
    by_name = {name: ids.backend(service, name) for name in dict.fromkeys(names)}  # first-seen order
    return map(by_name.__getitem__, names)


@dataclass(frozen=True)
class Interfaces:
    """Several interfaces: each one's MAC by ifindex, and where frames leave.  ``backends`` maps
    (service, backend) to the ifindex toward its next hop, ``replies`` is the gateway's; 0 or a missing
    entry means "out of the interface the frame came in on" (one interface: every default)."""

    macs: Mapping[int, bytes] = field(default_factory=dict)
    backends: Mapping[tuple[str, str], int] = field(default_factory=dict)
    replies: int = 0


def encode_snapshot(snap: Snapshot, flows: FlowConfig, ids: Ids, ifaces: Interfaces | None = None) -> MapImage:
    """Every map but the flow maps, for ``snap``."""
    ifaces = ifaces or Interfaces()
    image: MapImage = {name: {} for name in ("pktlb_config", "pktlb_services", "pktlb_addrs", "pktlb_backends",
                                             "pktlb_tables", "pktlb_nat_reverse", "pktlb_ifaces")}
    image["pktlb_config"][L.U32.pack(0)] = config_value(snap, flows, reply_ifindex=ifaces.replies)
    for ifindex, mac in ifaces.macs.items():
        image["pktlb_ifaces"][L.U32.pack(ifindex)] = L.IFACE.pack(mac)
    for vip in snap.vips:
        image["pktlb_addrs"][_b4(vip)] = L.U32.pack(L.ADDR_VIP | (L.ADDR_SNAT if vip in snap.snat_addrs else 0))
    for addr in snap.snat_addrs:
        image["pktlb_addrs"][_b4(addr)] = L.U32.pack(L.ADDR_SNAT | (L.ADDR_VIP if addr in snap.vips else 0))
    for svc in sorted(snap.services.values(), key=lambda s: s.name):
        sid = ids.service(svc.name)
        kind = sched_kind(svc)
        image["pktlb_services"][L.SERVICE_KEY.pack(_b4(svc.vip), _b2(svc.port), svc.proto)] = L.SERVICE.pack(
            sid, L.MODES[svc.rewriter.name], kind, int(svc.rewriter.traits.replies_via_lb), int(svc.proto == PROTO_UDP),
            min(svc.mtu, 0xFFFF), _b2(svc.port), _b4(svc.vip), _b4(svc.snat))
        for be in svc.backends:
            bid = ids.backend(svc.name, be.name)
            state = L.BACKEND_STATES.get(be.state, L.BE_ABSENT) if _resolved(be.l2) else L.BE_NO_NEIGHBOUR
            image["pktlb_backends"][L.U32.pack(bid)] = L.BACKEND.pack(
                be.l2, be.addr_bytes, be.port_bytes, state,
                be.in_ip_delta, be.in_l4_delta, be.in_pseudo_delta, be.out_ip_delta, be.out_l4_delta,
                be.out_pseudo_delta, be.outer_base_sum & 0xFFFFFFFF, sid, ifaces.backends.get((svc.name, be.name), 0))
        table = svc.scheduler.lookup_table() if kind != L.SCHED_PYTHON else ()
        image["pktlb_tables"][L.U32.pack(sid)] = table_value(len(table), _table_ids(svc.name, table, ids))
    for (proto, addr, port), (svc, be) in snap.nat_reverse.items():
        image["pktlb_nat_reverse"][L.REVERSE_KEY.pack(_b4(addr), _b2(port), proto)] = L.NAT_REVERSE.pack(
            ids.service(svc.name), ids.backend(svc.name, be.name), _b4(svc.vip), _b2(svc.port))
    return image


_FLOW_KEY_INTS = struct.Struct(">IIHHB3x")  # layout.FLOW_KEY's bytes from integers (addresses and ports travel big-endian)
assert _FLOW_KEY_INTS.size == L.FLOW_KEY.size


def flow_key(key: tuple[int, int, int, int, int]) -> bytes:
    proto, src, dst, sport, dport = key
    return _FLOW_KEY_INTS.pack(src, dst, sport, dport, proto)


def decode_flow_key(raw: bytes) -> tuple[int, int, int, int, int]:
    src, dst, sport, dport, proto = _FLOW_KEY_INTS.unpack(raw)
    return (proto, src, dst, sport, dport)


def flow_value(entry: FlowEntry, backend_id: int, last_seen_ns: int, reply_l2: bytes = UNRESOLVED_L2,
               reply_ifindex: int = 0) -> bytes:
    """``reply_l2``: where the flow's replies go (the client's next hop's MAC, then the LB's), used when
    the config names no single gateway (nat and full-NAT replies punt while it is unresolved);
    ``reply_ifindex`` the interface toward that next hop (0: where the reply came in)."""
    deltas = entry.nat_deltas
    return L.FLOW.pack(backend_id, L.STATE_NUMBERS[entry.state], 0, entry.snat_port.to_bytes(2, "big"),
                       entry.snat_addr.to_bytes(4, "big"), deltas[0], deltas[1], deltas[2], reply_l2, reply_ifindex,
                       0, 0, 0, 0, max(last_seen_ns, 0))


_REVERSE_KEY_INTS = struct.Struct(">IHBx")  # layout.REVERSE_KEY's bytes from integers
assert _REVERSE_KEY_INTS.size == L.REVERSE_KEY.size


def snat_reverse(entry: FlowEntry, raw_flow_key: bytes | None = None) -> tuple[bytes, bytes]:
    deltas = entry.nat_deltas
    key = _REVERSE_KEY_INTS.pack(entry.snat_addr, entry.snat_port, entry.key[0])
    return key, L.SNAT_REVERSE.pack(raw_flow_key or flow_key(entry.key), deltas[3], deltas[4], deltas[5])


def encode_entry(entry: FlowEntry, snap: Snapshot, ids: Ids, last_seen_ns: int,
                 reply_l2: bytes = UNRESOLVED_L2, reply_ifindex: int = 0, image: MapImage | None = None) -> MapImage:
    """The map entries of one flow (nothing when its service or backend is not in the snapshot), added
    to ``image`` if given (the flows of a batch in one image)."""
    if image is None:
        image = {"pktlb_flows": {}, "pktlb_snat_reverse": {}}
    svc = snap.services.get((entry.key[0], entry.key[2], entry.key[4]))
    if svc is None or svc.name != entry.service or entry.backend not in svc.by_name:
        return image
    raw_key = flow_key(entry.key)
    image["pktlb_flows"][raw_key] = flow_value(entry, ids.backend(svc.name, entry.backend), last_seen_ns, reply_l2,
                                               reply_ifindex)
    if entry.snat_port:
        key, value = snat_reverse(entry, raw_key)
        image["pktlb_snat_reverse"][key] = value
    return image


def live(entry: FlowEntry, flows: FlowTable, now: float) -> bool:
    """Would ``flows.lookup`` still return this entry at ``now`` (not idle-expired)?"""
    return now - entry.last_seen <= flows.timeouts[entry.state]


def encode_flows(flows: FlowTable, snap: Snapshot, ids: Ids, now: float, clock_offset_ns: int = 0) -> MapImage:
    """The flow and full-NAT reverse maps for every live entry.  Last-seen times are Python's
    (``time.monotonic``, the kernel's ``bpf_ktime_get_ns`` clock) plus ``clock_offset_ns``."""
    image: MapImage = {"pktlb_flows": {}, "pktlb_snat_reverse": {}}
    for entry in flows:
        if live(entry, flows, now):
            part = encode_entry(entry, snap, ids, int(entry.last_seen * 1e9) + clock_offset_ns, snap.reply_l2)
            image["pktlb_flows"].update(part["pktlb_flows"])
            image["pktlb_snat_reverse"].update(part["pktlb_snat_reverse"])
    return image


@dataclass(frozen=True)
class KernelFlow:
    """A flow entry as the program left it (decoded from ``pktlb_flows``)."""

    key: tuple[int, int, int, int, int]
    backend_id: int
    state: str
    origin: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    last_seen_ns: int


def decode_flow(key: bytes, value: bytes) -> KernelFlow:
    (backend_id, state, origin, _port, _addr, _d1, _d2, _d3, _l2, _ifindex, packets_in, bytes_in, packets_out,
     bytes_out, last_seen) = L.FLOW.unpack(value)
    return KernelFlow(decode_flow_key(key), backend_id, L.STATES[state] if state < len(L.STATES) else "est", origin,
                      packets_in, bytes_in, packets_out, bytes_out, last_seen)


def decode_counters(values: list[int]) -> dict[str, int]:
    return {name: values[i] for i, name in enumerate(L.COUNTERS) if i < len(values)}
