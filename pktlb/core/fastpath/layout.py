"""Map keys and values of the kernel fast path, field for field the structs of ``pktlb/fastpath/maps.h``.

Addresses and ports are stored as they travel (network byte order, ``4s``/``2s``); counters,
deltas and ids in the host's order (little-endian here, as the program reads them).  A size check
at import keeps these formats and the C structs from drifting apart silently: the tests compare
them with the sizes in the object's BTF too.
"""

from __future__ import annotations

import struct

CONFIG = struct.Struct("<6s12sBx4sI5II")  # lb_mac, reply_l2, enabled, lb_addr, seed, timeouts by state, reply_ifindex
SERVICE_KEY = struct.Struct("<4s2sBx")  # vip, port, proto
SERVICE = struct.Struct("<IBBBBH2s4s4s")  # id, mode, sched, replies_via_lb, udp, mtu, port, vip, snat
BACKEND = struct.Struct("<12s4s2sBx9I")  # l2, addr, port, state, 6 NAT deltas, outer_base_sum, service_id, ifindex
TABLE_HEAD = struct.Struct("<II")  # size, pad; then MAX_TABLE u16 backend ids
FLOW_KEY = struct.Struct("<4s4s2s2sB3x")  # src, dst, sport, dport, proto
FLOW = struct.Struct("<IBB2s4sIII12sIQQQQQ")  # backend_id, state, origin, snat_port, snat_addr, 3 deltas, reply_l2,
#                                              reply_ifindex, packets_in, bytes_in, packets_out, bytes_out, last_seen_ns
REVERSE_KEY = struct.Struct("<4s2sBx")  # addr, port, proto
NAT_REVERSE = struct.Struct("<II4s2s2x")  # service_id, backend_id, vip, port
SNAT_REVERSE = struct.Struct("<16sIII")  # flow key, out ip/l4/pseudo deltas
IFACE = struct.Struct("<6s2x")  # an interface's MAC (pktlb_ifaces, by ifindex)
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

MAX_SERVICES = 64
MAX_BACKENDS = 1024
MAX_TABLE = 65537
TABLE_VALUE_SIZE = 131084  # TABLE_HEAD + MAX_TABLE u16, padded to 4

SIZES = {"config": 52, "service": 20, "backend": 56, "sched_table": TABLE_VALUE_SIZE, "flow": 80,
         "nat_reverse": 16, "snat_reverse": 28, "flow_key": 16, "service_key": 8, "reverse_key": 8, "iface": 8}
for _name, _st in (("config", CONFIG), ("service", SERVICE), ("backend", BACKEND), ("flow", FLOW),
                   ("nat_reverse", NAT_REVERSE), ("snat_reverse", SNAT_REVERSE), ("flow_key", FLOW_KEY),
                   ("service_key", SERVICE_KEY), ("reverse_key", REVERSE_KEY), ("iface", IFACE)):
    assert _st.size == SIZES[_name], (_name, _st.size)

MODES = {"dsr": 0, "nat": 1, "fullnat": 2, "tunnel": 3}
SCHED_PYTHON, SCHED_FLOW_HASH, SCHED_SRC_HASH = 0, 1, 2
STATES = ("syn", "est", "fin", "closed", "udp")  # ST_* by number
STATE_NUMBERS = {name: i for i, name in enumerate(STATES)}
BACKEND_STATES = {"up": 0, "drain": 1, "down": 2}
BE_ABSENT = 3
BE_NO_NEIGHBOUR = 4  # the engine has no MAC for the backend's next hop yet
ENABLED, REPLIES = 1, 2  # config.enabled bits: forwarding on; replies' next hop known
ADDR_VIP, ADDR_SNAT = 1, 2

# enum punt_reason then enum forward_kind, in the order of pktlb/fastpath/punt.h.
PUNT_REASONS: tuple[str, ...] = (
    "not_ipv4", "not_our_mac", "bad_length", "padding", "ip_options", "bad_ip_checksum", "fragment", "not_ours",
    "icmp", "other_protocol", "bad_l4_header", "no_service", "ttl", "fin_rst", "syn", "unknown_flow",
    "backend_down", "no_backend", "too_big", "idle_expired", "spoofed_source", "disabled", "helper_failed",
    "no_neighbour", "partial_checksum",
)
FORWARD_KINDS: tuple[str, ...] = ("inbound", "new_flow", "outbound", "redirected")
COUNTERS: tuple[str, ...] = PUNT_REASONS + FORWARD_KINDS

PUNT_MEANINGS: dict[str, str] = {
    "not_ipv4": "not an untagged IPv4 frame (ARP, IPv6, VLAN)",
    "not_our_mac": "destination MAC is not the LB's",
    "bad_length": "truncated, or a bad IHL or total length",
    "padding": "Ethernet padding after the IP packet (Python cuts it)",
    "ip_options": "IPv4 options",
    "bad_ip_checksum": "the IPv4 header checksum does not verify",
    "fragment": "an IPv4 fragment",
    "not_ours": "neither a VIP nor a reply the engine rewrites",
    "icmp": "ICMP (echo, errors quoting a flow): Python answers or relays",
    "other_protocol": "an IP protocol other than TCP, UDP and ICMP to a VIP",
    "bad_l4_header": "TCP/UDP header truncated or with a bad length",
    "no_service": "no service for this protocol and port on the VIP",
    "ttl": "TTL 1 or 0: Python answers time exceeded",
    "fin_rst": "TCP FIN or RST: Python tracks the connection's end",
    "syn": "a SYN Python schedules (stateful scheduler, full-NAT, reused tuple) or a SYN-ACK reply",
    "unknown_flow": "a flow Python has not decided yet (its scheduler needs state, or full-NAT)",
    "backend_down": "the flow's backend is down or gone: Python reschedules or drops",
    "no_backend": "no live backend in the service's table",
    "too_big": "tunnel: inner packet + 20 bytes exceeds the MTU (Python answers fragmentation needed)",
    "idle_expired": "the flow's entry is past its idle timeout: Python expires it",
    "spoofed_source": "source is an address the LB owns",
    "disabled": "no snapshot pushed yet",
    "helper_failed": "the kernel could not grow or rewrite the frame",
    "no_neighbour": "the next hop's MAC is not resolved yet (or behind an interface XDP cannot send to: no program there)",
    "partial_checksum": "the L4 checksum is unfinished (a sender's TX offload): XDP cannot carry that state on, "
                        "and the tunnel's backends need it finished; Python finishes it",
}
assert set(PUNT_MEANINGS) == set(PUNT_REASONS)
