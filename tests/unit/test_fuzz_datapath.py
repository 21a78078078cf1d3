"""Hostile frames through the whole data path: structured fuzzing with hypothesis.

Each example runs a fresh flow table (with a few flows open) over a shared snapshot, in every mode
and with several schedulers; the frames come from the strategies in ``fuzz_frames``.  Asserted for
every frame (``run_frame``): nothing raises, the decision's reason is a named one and never
``internal_error``, the counters stay balanced, every emitted frame is a bytearray whose IPv4
header (outer and inner) and, for clean input, L4/ICMP checksums verify; a sample is checked with
scapy too.  ``PKTLB_FUZZ_EXAMPLES=5000`` runs longer.  ``--hypothesis-show-statistics`` shows which
decisions the examples reached.
"""

from __future__ import annotations

import functools
import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pktlb.core import decision as d
from pktlb.core.checksum import checksum
from pktlb.core.packet.addr import ip_to_int
from pktlb.core.snapshot import DOWN, build_snapshot
from pktlb.lab.addressing import lab_macs
from tests.frames import BACKENDS, CLIENT, LB, SNAT, VIP, assert_checksums
from tests.unit.fuzz_frames import (
    BACKEND_MACS,
    CLIENT_PORTS,
    EXAMPLES,
    FUZZ,
    GW_MAC_B,
    ICMP,
    LB_MAC_B,
    MODES,
    SCHEDULERS,
    TCP,
    addrs,
    draw_reply_to_open_flow,
    ethernet_frame,
    fresh_datapath,
    ip_header,
    ipv4_packet,
    l4_checksum,
    mostly,
    quoted_flows,
    run_frame,
    scapy_verify,
    shared_snapshot,
)

GSO_SIZES = st.sampled_from([0, 0, 1, 536, 1400])  # 0: an ordinary frame; else the super-frame's segment size


@FUZZ
@given(st.lists(ethernet_frame(), min_size=1, max_size=6), st.sampled_from(MODES), st.sampled_from(SCHEDULERS),
       st.booleans(), GSO_SIZES)
def test_structured_hostile_frames(frames, mode, scheduler, partial, gso):
    dp = fresh_datapath(mode, scheduler)
    for frame, clean in frames:
        run_frame(dp, frame, clean, partial and clean, gso if clean else 0)


@FUZZ
@given(st.sampled_from(MODES), st.data())
def test_replies_from_backends_with_random_ports(mode, data):
    """Backend -> client / SNAT frames: the reply paths (NAT, full-NAT, ICMP errors from backends)."""
    dp = fresh_datapath(mode)
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(sorted(BACKENDS)))
        dst = data.draw(mostly(st.sampled_from([ip_to_int(CLIENT), ip_to_int(SNAT), ip_to_int(VIP), ip_to_int(LB)]), addrs))
        packet, clean = data.draw(ipv4_packet(src=ip_to_int(BACKENDS[name]), dst=dst,
                                              proto=data.draw(st.sampled_from([6, 17, 1]))))
        run_frame(dp, bytearray(LB_MAC_B + BACKEND_MACS[name] + b"\x08\x00") + packet, clean)


@FUZZ
@given(st.sampled_from(MODES), st.sampled_from([6, 17, 1]), st.data())
def test_client_frames_to_the_vip(mode, proto, data):
    """Well-formed enough to reach classification, scheduling and the rewriters."""
    dp = fresh_datapath(mode, data.draw(st.sampled_from(SCHEDULERS)))
    for _ in range(data.draw(st.integers(1, 4))):
        packet, clean = data.draw(ipv4_packet(src=data.draw(mostly(st.just(ip_to_int(CLIENT)), addrs)),
                                              dst=ip_to_int(VIP), proto=proto))
        run_frame(dp, bytearray(LB_MAC_B + GW_MAC_B + b"\x08\x00") + packet, clean, partial=False,
                  gso=data.draw(GSO_SIZES) if clean else 0)


@FUZZ
@given(st.sampled_from(MODES), st.data())
def test_icmp_errors_about_open_flows(mode, data):
    """ICMP errors to the VIP (from a router toward the client) and from backends (to the client or the
    SNAT address), mostly quoting the prelude's flows as they look on that side, with low TTLs often."""
    dp = fresh_datapath(mode)
    client, vip, snat = ip_to_int(CLIENT), ip_to_int(VIP), ip_to_int(SNAT)
    for _ in range(data.draw(st.integers(1, 3))):
        proto = data.draw(st.sampled_from([6, 17]))
        cport = data.draw(st.sampled_from(CLIENT_PORTS))
        name = data.draw(st.sampled_from(sorted(BACKENDS)))
        be = ip_to_int(BACKENDS[name])
        side = data.draw(st.sampled_from(["to_vip", "from_backend_to_client", "from_backend_to_snat"]))
        if side == "to_vip":
            src, dst, mac = ip_to_int("198.18.1.1"), vip, GW_MAC_B
            quoted = (proto, vip, 80 if proto == 6 else 53, client, cport)
        elif side == "from_backend_to_client":
            src, dst, mac = be, client, BACKEND_MACS[name]
            quoted = (proto, client, cport, be, 80 if proto == 6 else 5353)
        else:
            src, dst, mac = be, snat, BACKEND_MACS[name]
            quoted = (proto, snat, 20000 + cport - 40000, be, 80 if proto == 6 else 53)
        proto, q_src, q_sport, q_dst, q_dport = data.draw(mostly(st.just(quoted), quoted_flows()))
        inner = ip_header(q_src, q_dst, proto, 28) + struct.pack("!HHI", q_sport, q_dport, 0) + bytes(20)
        message = bytearray(ICMP.pack(data.draw(st.sampled_from([3, 11, 12])), data.draw(st.sampled_from([3, 4])),
                                      0, 1400)) + inner
        message[2:4] = checksum(message).to_bytes(2, "big")
        ttl = data.draw(mostly(st.just(64), st.sampled_from([0, 1, 2]), 60))
        frame = bytearray(LB_MAC_B + mac + b"\x08\x00") + ip_header(src, dst, 1, len(message), ttl=ttl) + message
        run_frame(dp, frame, True)


@FUZZ
@given(st.sampled_from(MODES), st.data())
def test_replies_to_open_flows(mode, data):
    dp = fresh_datapath(mode)
    for _ in range(data.draw(st.integers(1, 4))):
        run_frame(dp, *draw_reply_to_open_flow(data, dp))


@settings(max_examples=max(EXAMPLES // 3, 50), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                     HealthCheck.filter_too_much])
@given(st.sampled_from(MODES), st.data())
def test_a_sample_verified_by_scapy_too(mode, data):
    """Clean TCP/UDP frames to the VIP and replies to open flows: scapy recomputes every checksum of
    what comes out (an independent check of pktlb.core.checksum's verdicts above)."""
    dp = fresh_datapath(mode)
    if data.draw(st.booleans()):
        packet, clean = data.draw(ipv4_packet(src=ip_to_int(CLIENT), dst=ip_to_int(VIP),
                                              proto=data.draw(st.sampled_from([6, 17]))))
        frame = bytearray(LB_MAC_B + GW_MAC_B + b"\x08\x00") + packet
    else:
        frame, clean = draw_reply_to_open_flow(data, dp)
    assume(clean)
    frames, _ = run_frame(dp, frame, clean)
    for out in frames:
        scapy_verify(out, 14)
        ip = 34 if out[23] == 4 and out[14] == 0x45 else 14  # the inner header of IP-in-IP
        if out[14] == 0x45 and out[ip] == 0x45 and (out[ip + 9] != 6 or out[ip + 32] >> 4 == 5):
            assert_checksums(out)  # dissect and rebuild (scapy rewrites odd option bytes, so only without them)


@functools.cache
def degraded_snapshot(mode: str, on_down: str, down: frozenset[str]):
    config, _ = shared_snapshot(mode, "hash", on_down)
    return build_snapshot(config, states={(svc, be): DOWN for svc in ("web", "dns") for be in down}, generation=2,
                          macs=lab_macs(config))


@FUZZ
@given(st.sampled_from(MODES), st.sampled_from(["reschedule", "drop"]),
       st.frozensets(st.sampled_from(sorted(BACKENDS)), max_size=3), st.data())
def test_frames_of_open_flows_after_backends_went_down(mode, on_down, down, data):
    """The open flows' next packets (and replies) after a new snapshot marks backends down: rescheduled,
    dropped by policy, or no live backend left."""
    dp = fresh_datapath(mode, "hash", on_down)
    dp.swap(degraded_snapshot(mode, on_down, down))
    client, vip = ip_to_int(CLIENT), ip_to_int(VIP)
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.integers(0, 3)) == 3:
            frame, clean = draw_reply_to_open_flow(data, dp)
        else:
            proto = data.draw(st.sampled_from([6, 6, 17]))
            cport = data.draw(st.sampled_from(CLIENT_PORTS))
            packet, clean = data.draw(ipv4_packet(src=client, dst=vip, proto=proto,
                                                  l4_ports=(cport, 80 if proto == 6 else 53)))
            frame = bytearray(LB_MAC_B + GW_MAC_B + b"\x08\x00") + packet
        run_frame(dp, frame, clean)


def test_the_prelude_flows_exist_in_every_mode():
    """The fuzzers' replies and ICMP errors can only reach deep code if these flows are there."""
    for mode in MODES:
        dp = fresh_datapath(mode)
        assert len(dp.flows) == 5 and dp.stats.forwarded == 5, mode
        if mode == "fullnat":
            assert sorted(e.snat_port for e in dp.flows if e.key[0] == 6) == [20000, 20001, 20002, 20003]


def test_oversized_and_zero_ttl_examples():
    """Fixed examples of the cases the strategies aim at, so a strategy regression cannot hide them."""
    client, vip = ip_to_int(CLIENT), ip_to_int(VIP)
    head = LB_MAC_B + GW_MAC_B + b"\x08\x00"
    for mode in MODES:
        dp = fresh_datapath(mode)
        seg = bytearray(TCP.pack(40000, 80, 1, 0, 5 << 4, 0x10, 65535, 0, 0)) + b"x" * 65495
        seg[16:18] = l4_checksum(client, vip, 6, seg).to_bytes(2, "big")
        _, dec = run_frame(dp, bytearray(head) + ip_header(client, vip, 6, len(seg)) + seg, True)
        assert dec.verdict in (d.FORWARD, d.REPLY), (mode, dec)
        _, dec = run_frame(dp, bytearray(head) + ip_header(client, vip, 6, 20, ttl=0) + seg[:20], False)
        assert dec.reason == "ttl_expired", (mode, dec)
        over = bytearray(head) + ip_header(client, vip, 6, 0xFFFF - 20) + bytes(70000)
        _, dec = run_frame(dp, over, False)
        assert dec.verdict == d.DROP, (mode, dec)
