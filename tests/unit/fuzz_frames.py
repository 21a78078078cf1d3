"""Hostile frames for the data path's fuzz tests: struct builders, hypothesis strategies, checks.

The strategies build frames field by field (``struct``, not scapy, so thousands run per second):
Ethernet with odd ethertypes, 802.1Q tags, IPv6 and ARP; IPv4 with valid and garbage options,
wrong IHL and total lengths, fragments, TTL 0/1/255, wrong checksums (and fixed ones, so deeper
code is reached); TCP/UDP with bad offsets and lengths; ICMP echo and errors quoting truncated
or recursive ICMP-in-ICMP headers about VIPs, backends, the SNAT address or anything else;
oversized frames; replies from backends with random ports.  ``fresh_datapath`` gives a new flow
table (with a few real flows already open, so replies and ICMP errors can match them) over a
shared snapshot; ``run_frame`` hands one frame over and asserts every invariant.

Used by test_fuzz_datapath, test_not_open_relay, tests/lab/test_hostile and scripts/fuzz_datapath.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pktlb.core import decision as d
from pktlb.core.checksum import checksum, ones_sum, pseudo_header_sum
from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.core.snapshot import build_snapshot
from pktlb.lab.addressing import lab_macs, mac_for_ip
from tests.frames import BACKENDS, CLIENT, GW_MAC, LB, LB_MAC, SNAT, VIP, config_text

MODES = ["nat", "fullnat", "tunnel", "dsr"]
SCHEDULERS = ["maglev", "hash", "rr", "lc", "wrr"]
FORWARD_REASONS = {d.INBOUND, d.OUTBOUND, d.ICMP_ERROR_TO_BACKEND, d.ICMP_ERROR_TO_CLIENT}
REPLY_REASONS = {d.ECHO_REPLY, d.TIME_EXCEEDED, d.FRAG_NEEDED}
NOW = 100.0

LB_MAC_B, GW_MAC_B = mac_to_bytes(LB_MAC), mac_to_bytes(GW_MAC)
BACKEND_MACS = {name: mac_to_bytes(mac_for_ip(a)) for name, a in BACKENDS.items()}
KNOWN_ADDRS = [ip_to_int(a) for a in (CLIENT, VIP, LB, SNAT, "198.18.0.1", "198.18.1.100", "203.0.113.9",
                                      "0.0.0.0", "255.255.255.255", *BACKENDS.values())]
CLIENT_PORTS = [40000, 40001, 40002, 40003]  # the prelude opens flows from these (see fresh_datapath)
KNOWN_PORTS = [80, 53, 5353, 0, 1, 22, 443, 65535, 20000, 20001, 20002, 20003, *CLIENT_PORTS]
IP = struct.Struct("!BBHHHBBHII")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
ICMP = struct.Struct("!BBHI")



def mostly(usual: st.SearchStrategy, rare: st.SearchStrategy, percent: int = 80) -> st.SearchStrategy:
    """``usual`` ``percent`` % of the time (and when shrinking), else ``rare``: keeps most frames deep enough
    to reach classification and the rewriters while the rest probe the edges."""
    return st.integers(0, 99).flatmap(lambda k: usual if k < percent else rare)


addrs = mostly(st.sampled_from(KNOWN_ADDRS), st.integers(0, 2**32 - 1), 70)
dst_addrs = mostly(st.just(ip_to_int(VIP)), addrs, 50)
ports = mostly(st.sampled_from(KNOWN_PORTS), st.integers(0, 65535), 70)
macs = mostly(st.sampled_from([LB_MAC_B, GW_MAC_B, *BACKEND_MACS.values(), b"\xff" * 6]),
              st.binary(min_size=6, max_size=6), 50)


# -- builders ------------------------------------------------------------------------------------
def ip_header(src: int, dst: int, proto: int, payload_len: int, *, ttl: int = 64, flags_frag: int = 0x4000,
              options: bytes = b"", ident: int = 1) -> bytearray:
    ihl = 5 + len(options) // 4
    head = bytearray(IP.pack(0x40 | ihl, 0, (ihl * 4 + payload_len) & 0xFFFF, ident, flags_frag, ttl, proto, 0,
                             src, dst) + options)
    head[10:12] = checksum(head).to_bytes(2, "big")
    return head


def l4_checksum(src: int, dst: int, proto: int, segment: bytes | bytearray) -> int:
    return checksum(segment, pseudo_header_sum(src, dst, proto, len(segment)))


def fix_ip_checksum(packet: bytearray, ip: int = 0) -> None:
    """Recompute the header checksum over the IHL the header claims, where that many bytes exist."""
    ihl = (packet[ip] & 15) * 4 if len(packet) > ip else 0
    if ihl >= 20 and len(packet) >= ip + ihl:
        packet[ip + 10:ip + 12] = b"\0\0"
        packet[ip + 10:ip + 12] = checksum(packet[ip:ip + ihl]).to_bytes(2, "big")


# -- strategies ----------------------------------------------------------------------------------
payloads = mostly(st.binary(max_size=48), st.one_of(
    st.builds(lambda n, b: bytes([b]) * n, st.integers(1400, 1600), st.integers(0, 255)),
    st.builds(lambda n: b"Z" * n, st.integers(9000, 66000)),  # beyond any MTU, and beyond 65535 - headers
), 85)


@st.composite
def ip_options(draw) -> bytes:
    kind = draw(st.sampled_from(["none", "none", "none", "nop", "record_route", "garbage"]))
    if kind == "nop":
        return b"\x01" * 4 * draw(st.integers(1, 10))
    if kind == "record_route":
        return bytes([7, 39, 4]) + bytes(36) + b"\x00"
    raw = draw(st.binary(min_size=1, max_size=40))
    return raw.ljust((len(raw) + 3) // 4 * 4, b"\x00")


@st.composite
def tcp_segment(draw, src: int, dst: int, l4_ports: tuple[int, int] | None = None) -> tuple[bytes, bool]:
    doff = draw(st.one_of(st.just(5), st.integers(0, 15)))
    options = draw(st.binary(min_size=max(doff - 5, 0) * 4, max_size=max(doff - 5, 0) * 4))
    sport, dport = l4_ports or (draw(mostly(st.sampled_from([*CLIENT_PORTS, 80]), ports, 60)),
                                draw(mostly(st.sampled_from([80, *CLIENT_PORTS, 20000, 20001]), ports, 60)))
    head = TCP.pack(sport, dport, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                    doff << 4, draw(mostly(st.sampled_from([0x02, 0x10, 0x12, 0x11, 0x04, 0x18]),
                                                st.integers(0, 255))), 65535, 0, 0)
    segment = bytearray(head + options + draw(payloads))
    good = draw(st.integers(0, 9)) < 9
    segment[16:18] = (l4_checksum(src, dst, 6, segment) if good else draw(st.integers(0, 0xFFFF))).to_bytes(2, "big")
    return bytes(segment), good


@st.composite
def udp_datagram(draw, src: int, dst: int, l4_ports: tuple[int, int] | None = None) -> tuple[bytes, bool]:
    payload = draw(payloads)
    length = 8 + len(payload)
    wrong_length = draw(st.integers(0, 9)) == 9
    if wrong_length:
        length = draw(st.integers(0, 0xFFFF))
    sport, dport = l4_ports or (draw(mostly(st.sampled_from([40000, 5353, 53]), ports, 60)),
                                draw(mostly(st.sampled_from([53, 40000, 20000]), ports, 60)))
    segment = bytearray(UDP.pack(sport, dport, length & 0xFFFF, 0) + payload)
    how = draw(st.sampled_from(["good", "good", "good", "zero", "random"]))
    if how == "good":
        csum = l4_checksum(src, dst, 17, segment) or 0xFFFF
    else:
        csum = 0 if how == "zero" else draw(st.integers(0, 0xFFFF))
    segment[6:8] = csum.to_bytes(2, "big")
    return bytes(segment), how != "random" and not wrong_length


def quoted_flows() -> st.SearchStrategy[tuple[int, int, int, int, int]]:
    """(proto, src, sport, dst, dport) headers an ICMP error may quote: the flows the prelude opens
    (seen from the client, the backend or the SNAT side), and arbitrary ones."""
    vip, client, snat = ip_to_int(VIP), ip_to_int(CLIENT), ip_to_int(SNAT)
    bes = [ip_to_int(a) for a in BACKENDS.values()]
    cport = st.sampled_from(CLIENT_PORTS)
    return st.one_of(
        st.tuples(st.sampled_from([6, 17]), st.just(vip), st.sampled_from([80, 53]), st.just(client), cport),
        st.tuples(st.sampled_from([6, 17]), st.just(client), cport, st.sampled_from(bes), st.sampled_from([80, 5353])),
        st.tuples(st.sampled_from([6, 17]), st.just(snat), st.sampled_from([20000, 20001, 20002, 20003]),
                  st.sampled_from(bes), st.sampled_from([80, 53])),
        st.tuples(st.sampled_from([6, 17, 1, 47]), addrs, ports, addrs, ports),
    )


@st.composite
def icmp_message(draw, src: int, dst: int, depth: int) -> tuple[bytes, bool]:
    icmp_type = draw(mostly(st.sampled_from([8, 3, 3, 11, 12, 0, 5, 13]), st.integers(0, 255)))
    code = draw(mostly(st.sampled_from([0, 3, 4]), st.integers(0, 255)))
    if icmp_type in (3, 11, 12) and draw(st.integers(0, 4)) < 4:
        if depth > 0 and draw(st.integers(0, 5)) == 5:
            inner, _ = draw(ipv4_packet(depth - 1))  # ICMP quoting ICMP (quoting ...)
        else:
            proto, q_src, q_sport, q_dst, q_dport = draw(quoted_flows())
            l4 = struct.pack("!HHI", q_sport, q_dport, 0) if proto != 1 else bytes([8, 0, 0, 0, 0, 0, 0, 0])
            inner = bytes(ip_header(q_src, q_dst, proto, 8 + 20, ttl=draw(st.integers(0, 255)))) + l4 + bytes(20)
        body = inner[:draw(st.integers(0, len(inner)))] if draw(st.integers(0, 3)) == 3 else inner
    else:
        body = draw(payloads)
    message = bytearray(ICMP.pack(icmp_type, code, 0, draw(st.integers(0, 2**32 - 1))) + body)
    good = draw(st.integers(0, 9)) < 9
    message[2:4] = (checksum(message) if good else draw(st.integers(0, 0xFFFF))).to_bytes(2, "big")
    return bytes(message), good


@st.composite
def ipv4_packet(draw, depth: int = 2, src: int | None = None, dst: int | None = None, proto: int | None = None,
                l4_ports: tuple[int, int] | None = None) -> tuple[bytearray, bool]:
    """An IPv4 packet and whether it is clean (every length and checksum right); ``l4_ports`` fixes
    the TCP/UDP ports."""
    src = draw(addrs) if src is None else src
    dst = draw(dst_addrs) if dst is None else dst
    if proto is None:
        proto = draw(mostly(st.sampled_from([6, 6, 17, 17, 1, 1, 4, 47, 0]), st.integers(0, 255), 90))
    if proto == 6:
        body, clean = draw(tcp_segment(src, dst, l4_ports))
    elif proto == 17:
        body, clean = draw(udp_datagram(src, dst, l4_ports))
    elif proto == 1:
        body, clean = draw(icmp_message(src, dst, depth))
    else:
        body, clean = draw(st.binary(max_size=64)), True
    ttl = draw(mostly(st.just(64), st.sampled_from([0, 1, 2, 255]) | st.integers(0, 255), 70))
    flags_frag = draw(mostly(st.sampled_from([0x4000, 0]),
                             st.sampled_from([0x2000, 0x2000 | 7, 185, 0x5FFF]) | st.integers(0, 0xFFFF)))
    packet = ip_header(src, dst, proto, len(body), ttl=ttl, flags_frag=flags_frag, options=draw(ip_options()),
                       ident=draw(st.integers(0, 0xFFFF))) + body
    if 20 + 40 + len(body) > 0xFFFF:
        clean = False  # the total length field wrapped
    damage = draw(mostly(st.just("none"), st.sampled_from(["ihl", "total_small", "total_large", "total_random",
                                                           "csum", "version", "truncate"]), 70))
    if damage == "ihl":
        packet[0] = 0x40 | draw(st.integers(0, 15))
    elif damage.startswith("total"):
        total = {"total_small": draw(st.integers(0, 27)), "total_large": len(packet) + draw(st.integers(1, 1000)),
                 "total_random": draw(st.integers(0, 0xFFFF))}[damage]
        packet[2:4] = (total & 0xFFFF).to_bytes(2, "big")
    elif damage == "version":
        packet[0] = (draw(st.sampled_from([0, 5, 6, 15])) << 4) | (packet[0] & 15)
    elif damage == "truncate":
        del packet[draw(st.integers(0, len(packet))):]
    if damage != "csum":
        fix_ip_checksum(packet)
    elif len(packet) > 10:
        packet[10] ^= draw(st.integers(1, 255))
    return packet, clean and damage == "none"


@st.composite
def ethernet_frame(draw) -> tuple[bytearray, bool]:
    """A whole frame (mostly IPv4 to the LB's MAC) and whether it is clean."""
    dst_mac = draw(mostly(st.just(LB_MAC_B), macs, 85))
    src_mac = draw(mostly(st.sampled_from([GW_MAC_B, *BACKEND_MACS.values()]), macs))
    kind = draw(mostly(st.just("ipv4"), st.sampled_from(["vlan", "ipv6", "arp", "ethertype", "runt"]), 75))
    clean = False
    if kind == "ipv4":
        packet, clean = draw(ipv4_packet())
        body = b"\x08\x00" + packet
    elif kind == "vlan":
        packet, _ = draw(ipv4_packet())
        body = b"\x81\x00" + struct.pack("!H", draw(st.integers(0, 0xFFFF))) + b"\x08\x00" + packet
    elif kind == "ipv6":
        body = b"\x86\xdd" + struct.pack("!IHBB", 0x60000000, 20, 6, 64) + bytes(32) + bytes(20)
    elif kind == "arp":
        body = b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + GW_MAC_B + bytes(4) + bytes(10)
    elif kind == "ethertype":
        body = struct.pack("!H", draw(st.integers(0, 0xFFFF))) + draw(st.binary(max_size=80))
    else:
        body = draw(st.binary(max_size=20))
    frame = bytearray(dst_mac + src_mac + body)
    if draw(st.integers(0, 9)) == 9:
        frame += bytes(draw(st.integers(1, 40)))  # Ethernet padding after the IP packet
    return frame, clean


# -- the data paths --------------------------------------------------------------------------------
@functools.cache
def shared_snapshot(mode: str, scheduler: str, on_down: str = "reschedule"):
    config = parse_config(config_text(mode, scheduler=scheduler, on_down=on_down))
    return config, build_snapshot(config, macs=lab_macs(config))


def fresh_datapath(mode: str, scheduler: str = "maglev", on_down: str = "reschedule") -> DataPath:
    """A new flow table and counters over a shared snapshot, with four TCP and one UDP flow open."""
    config, snap = shared_snapshot(mode, scheduler, on_down)
    dp = DataPath(config, snap)
    client, vip = ip_to_int(CLIENT), ip_to_int(VIP)
    for port in CLIENT_PORTS:
        seg = bytearray(TCP.pack(port, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0))
        seg[16:18] = l4_checksum(client, vip, 6, seg).to_bytes(2, "big")
        frames, dec = dp.handle(bytearray(LB_MAC_B + GW_MAC_B + b"\x08\x00") + ip_header(client, vip, 6, 20) + seg,
                                NOW - 1)
        assert dec.verdict == d.FORWARD, dec
    udp = bytearray(UDP.pack(40000, 53, 8, 0))
    dp.handle(bytearray(LB_MAC_B + GW_MAC_B + b"\x08\x00") + ip_header(client, vip, 17, 8) + udp, NOW - 1)
    return dp


# -- checks ----------------------------------------------------------------------------------------
def verify_ipv4(frame: bytearray, ip: int, end: int, check_l4: bool) -> None:
    """The IPv4 header at ``ip`` (and an IP-in-IP inner one) verifies; with ``check_l4`` its payload too."""
    assert end - ip >= 20 and frame[ip] >> 4 == 4, "not IPv4"
    ihl = (frame[ip] & 15) * 4
    assert ihl >= 20 and ip + ihl <= end
    assert ones_sum(frame[ip:ip + ihl]) == 0xFFFF, "IPv4 header checksum"
    total = int.from_bytes(frame[ip + 2:ip + 4], "big")
    assert ip + total == end, f"total length {total} vs {end - ip} bytes"
    proto, l4 = frame[ip + 9], ip + ihl
    if proto == 4:
        verify_ipv4(frame, l4, end, check_l4)
        return
    if not check_l4:
        return
    src, dst = int.from_bytes(frame[ip + 12:ip + 16], "big"), int.from_bytes(frame[ip + 16:ip + 20], "big")
    segment = frame[l4:end]
    if proto == 6:
        assert ones_sum(segment, pseudo_header_sum(src, dst, 6, len(segment))) == 0xFFFF, "TCP checksum"
    elif proto == 17 and segment[6:8] != b"\0\0":
        length = int.from_bytes(segment[4:6], "big")
        assert ones_sum(segment[:length], pseudo_header_sum(src, dst, 17, length)) == 0xFFFF, "UDP checksum"
    elif proto == 1:
        assert ones_sum(segment) == 0xFFFF, "ICMP checksum"


def run_frame(dp: DataPath, frame: bytearray, clean: bool, partial: bool = False, gso: int = 0):
    """Hand one frame to the data path and assert every invariant; returns (frames, decision)."""
    before = dp.stats.received
    frames, dec = dp.handle(frame, NOW, partial, gso)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test there are no statistics
        event(f"{dec.mode or '-'} {dec.verdict} {dec.reason}")  # see --hypothesis-show-statistics
    assert dec.reason != "internal_error", dec.detail
    if dec.verdict == d.FORWARD:
        assert dec.reason in FORWARD_REASONS, dec
    elif dec.verdict == d.REPLY:
        assert dec.reason in REPLY_REASONS, dec
    else:
        assert dec.verdict == d.DROP and dec.reason in d.DROP_REASONS, dec
        assert not frames or (dec.reason == "ttl_expired" and len(frames) == 1), dec
    assert dp.stats.received == before + 1 and dp.stats.balanced()
    for out in frames:
        assert isinstance(out, bytearray)
        assert len(out) >= 34 and out[12:14] == b"\x08\x00" and out[6:12] == LB_MAC_B
        # LB-made ICMP (time exceeded, frag needed, echo reply) verifies whatever the input was
        made_here = dec.reason in REPLY_REASONS or dec.reason == "ttl_expired"
        verify_ipv4(out, 14, len(out), check_l4=made_here or (clean and not partial))
    return frames, dec


def draw_reply_to_open_flow(data, dp: DataPath) -> tuple[bytearray, bool]:
    """A reply as one of the prelude's flows' backends would send it (NAT: to the client; full-NAT: to
    the SNAT address and the flow's port), damaged by the same strategies, sometimes from a wrong port."""
    entry = data.draw(st.sampled_from(sorted(dp.flows, key=lambda e: e.key)))
    proto, client, vip, cport, vport = entry.key
    be = dp.snapshot.services[(proto, vip, vport)].by_name[entry.backend]
    sport = data.draw(mostly(st.just(be.port), ports))
    if entry.snat_port:
        dst, l4_ports = entry.snat_addr, (sport, entry.snat_port)
    else:
        dst, l4_ports = client, (sport, cport)
    packet, clean = data.draw(ipv4_packet(src=be.addr, dst=dst, proto=proto, l4_ports=l4_ports))
    return bytearray(LB_MAC_B + be.mac + b"\x08\x00") + packet, clean


def scapy_verify(frame: bytearray, ip: int) -> None:
    """Every checksum of the IPv4 packet at ``ip`` against scapy's own one's-complement sum."""
    from scapy.utils import checksum as scapy_checksum

    ihl, total, proto = (frame[ip] & 15) * 4, int.from_bytes(frame[ip + 2:ip + 4], "big"), frame[ip + 9]
    head = bytearray(frame[ip:ip + ihl])
    head[10:12] = b"\0\0"
    assert scapy_checksum(bytes(head)) == int.from_bytes(frame[ip + 10:ip + 12], "big")
    seg = bytearray(frame[ip + ihl:ip + total])
    if proto == 4:
        scapy_verify(frame, ip + ihl)
        return
    field = {6: 16, 17: 6, 1: 2}.get(proto)
    if field is None or (proto == 17 and seg[6:8] == b"\0\0"):
        return
    stored = int.from_bytes(seg[field:field + 2], "big")
    seg[field:field + 2] = b"\0\0"
    pseudo = b"" if proto == 1 else bytes(frame[ip + 12:ip + 20]) + struct.pack("!BBH", 0, proto, len(seg))
    expected = scapy_checksum(pseudo + bytes(seg))
    assert stored == (expected or 0xFFFF if proto == 17 else expected), (proto, hex(stored), hex(expected))


# -- settings --------------------------------------------------------------------------------------
# PKTLB_FUZZ_EXAMPLES=5000 for a longer run; the default keeps `make unit` quick.
EXAMPLES = int(os.environ.get("PKTLB_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
