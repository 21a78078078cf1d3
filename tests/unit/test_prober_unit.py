"""The ICMP prober's matching, timing and counting, and the reply parser, with a fake socket (no root)."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st

from pktlb.adapters.icmp_socket import (
    EchoReply,
    IcmpErrorReport,
    IgnoredIcmp,
    Malformed,
    build_echo_request,
    build_ipip_echo,
    make_payload,
    parse_icmp_packet,
)
from pktlb.core.checksum import checksum
from pktlb.core.health import L3OK, L3TOUT, L3UNR, SOCKERR, CheckTarget
from pktlb.core.packet.addr import ip_to_int
from pktlb.core.packet.icmp import DEST_UNREACH, ECHO_REPLY, build_ipv4_icmp
from pktlb.core.packet.ipv4 import PROTO_IPIP, IPv4
from pktlb.daemon.health.icmp import IcmpProber, probe_once

LB, BE1, BE2, VIP = "198.18.0.2", "198.18.0.11", "198.18.0.12", "198.19.0.100"
MAC = b"\x02\x00\xc6\x12\x00\x02"


def ip_icmp(src: str, dst: str, icmp_type: int, code: int, rest: int, payload: bytes) -> bytes:
    """An IPv4+ICMP packet as a raw ICMP socket returns it (no Ethernet header)."""
    return bytes(build_ipv4_icmp(MAC, MAC, ip_to_int(src), ip_to_int(dst), icmp_type, code, rest, payload)[14:])


def echo_reply(src: str, ident: int, seq: int, nonce: int, dst: str = LB) -> bytes:
    return ip_icmp(src, dst, ECHO_REPLY, 0, (ident << 16) | seq, make_payload(nonce))


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.inbox: list[bytes] = []
        self.fail_with: int | None = None
        self.closed = False

    def fileno(self) -> int:
        return -1

    def send_echo(self, dst: str, ident: int, seq: int, payload: bytes) -> None:
        if self.fail_with:
            raise OSError(self.fail_with, "fake failure")
        self.sent.append(("plain", dst, ident, seq, payload))

    def send_encapsulated_echo(self, outer_src, outer_dst, inner_src, inner_dst, ident, seq, payload) -> None:
        self.sent.append(("ipip", outer_src, outer_dst, inner_src, inner_dst, ident, seq, payload))

    def receive(self) -> list[bytes]:
        packets, self.inbox = self.inbox, []
        return packets

    def close(self) -> None:
        self.closed = True


def target(backend: str = "be1", address: str = BE1, *, encapsulated: bool = False) -> CheckTarget:
    return CheckTarget("web", backend, "icmp", address, 80, interval=1.0, timeout=0.5, source=LB, vip=VIP,
                       encapsulated=encapsulated)


class Harness:
    def __init__(self) -> None:
        self.sock = FakeSocket()
        self.results: list[tuple[str, str, object]] = []
        nonces = iter(range(1000, 2000))
        self.prober = IcmpProber(lambda s, b, r: self.results.append((s, b, r)), sock=self.sock, ident_base=0x4000,
                                 nonce=lambda: next(nonces))


def test_reply_matched_by_ident_seq_source_and_nonce_gives_rtt() -> None:
    h = Harness()
    h.prober.add_target(target(), 10.0)
    h.prober.add_target(target("be2", BE2), 10.0)
    h.prober.run_due(10.0)
    (_, dst1, id1, seq1, _), (_, dst2, id2, seq2, _) = h.sock.sent
    assert (dst1, dst2) == (BE1, BE2) and id1 != id2 and seq1 == seq2 == 1
    h.sock.inbox = [echo_reply(BE2, id2, seq2, 1001), echo_reply(BE1, id1, seq1, 1000)]
    h.prober.on_readable(10.000250)
    assert [(b, r.status) for _, b, r in h.results] == [("be2", L3OK), ("be1", L3OK)]
    assert abs(h.results[0][2].rtt - 0.000250) < 1e-9
    assert h.prober.counters["replies"] == 2 and not h.prober.inflight


def test_unmatched_replies_are_counted_and_ignored() -> None:
    h = Harness()
    h.prober.add_target(target(), 0.0)
    h.prober.run_due(0.0)
    _, _, ident, seq, _ = h.sock.sent[0]
    h.sock.inbox = [
        echo_reply(BE1, ident ^ 1, seq, 1000),  # another program's identifier
        echo_reply(BE1, ident, seq + 1, 1000),  # a sequence never sent
        echo_reply(BE2, ident, seq, 1000),  # right numbers, wrong source
        echo_reply(BE1, ident, seq, 999),  # right numbers, stale nonce
    ]
    h.prober.on_readable(0.1)
    assert h.results == [] and h.prober.counters["unmatched"] == 4
    h.prober.run_due(0.5)
    assert [r.status for _, _, r in h.results] == [L3TOUT]
    # The genuine reply arriving after the timeout is late: ignored too.
    h.sock.inbox = [echo_reply(BE1, ident, seq, 1000)]
    h.prober.on_readable(0.6)
    assert len(h.results) == 1 and h.prober.counters["unmatched"] == 5 and h.prober.counters["timeouts"] == 1


def test_malformed_packets_are_counted_and_do_not_crash() -> None:
    h = Harness()
    h.prober.add_target(target(), 0.0)
    h.prober.run_due(0.0)
    good = bytearray(echo_reply(BE1, 0x4000, 1, 1000))
    bad_sum = bytearray(good)
    bad_sum[-1] ^= 0xFF
    h.sock.inbox = [b"", b"\x45", bytes(good[:24]), bytes(bad_sum), b"\x60" + bytes(good[1:])]
    h.prober.on_readable(0.1)
    assert h.prober.counters["malformed"] == 5 and h.results == []
    h.sock.inbox = [bytes(good)]
    h.prober.on_readable(0.2)
    assert [r.status for _, _, r in h.results] == [L3OK]


def test_probes_leave_every_interval_even_while_one_is_outstanding() -> None:
    h = Harness()
    h.prober.add_target(CheckTarget("web", "be1", "icmp", BE1, 80, interval=0.2, timeout=0.5), 0.0)
    sent_at, failed_at, now = [], [], 0.0
    while now < 0.95:  # a loop that wakes exactly when the prober asks
        before = len(h.sock.sent), len(h.results)
        h.prober.run_due(now)
        sent_at += [round(now, 6)] * (len(h.sock.sent) - before[0])
        failed_at += [round(now, 6)] * (len(h.results) - before[1])
        now = h.prober.due()
    assert sent_at == [0.0, 0.2, 0.4, 0.6, 0.8]
    # The backend never answers: three timeouts by 0.9 = interval * (fall - 1) + timeout after the first probe.
    assert failed_at == [0.5, 0.7, 0.9] and [r.status for _, _, r in h.results] == [L3TOUT] * 3


def test_icmp_error_quoting_our_probe_fails_it_at_once() -> None:
    h = Harness()
    h.prober.add_target(target(), 0.0)
    h.prober.run_due(0.0)
    request = IPv4(src=ip_to_int(LB), dst=ip_to_int(BE1), proto=1, total_length=20 + 40).pack()
    request += build_echo_request(0x4000, 1, make_payload(1000))
    h.sock.inbox = [ip_icmp(LB, LB, DEST_UNREACH, 1, 0, request)]  # our own kernel: ARP got no answer
    h.prober.on_readable(0.01)
    (_, _, result), = h.results
    assert result.status == L3UNR and "host unreachable" in result.reason


def test_send_errors_become_results() -> None:
    h = Harness()
    h.prober.add_target(target(), 0.0)
    h.sock.fail_with = errno.ENETUNREACH
    h.prober.run_due(0.0)
    h.sock.fail_with = errno.EPERM
    h.prober.run_due(1.0)
    assert [r.status for _, _, r in h.results] == [L3UNR, SOCKERR] and h.prober.counters["send_errors"] == 2


def test_encapsulated_probe_goes_to_the_backend_and_is_answered_by_the_vip() -> None:
    h = Harness()
    h.prober.add_target(target(encapsulated=True), 0.0)
    h.prober.add_target(target("be2", BE2, encapsulated=True), 0.0)
    h.prober.run_due(0.0)
    assert [s[:5] for s in h.sock.sent] == [("ipip", LB, BE1, LB, VIP), ("ipip", LB, BE2, LB, VIP)]
    id1, id2 = h.sock.sent[0][5], h.sock.sent[1][5]
    # A plain reply from the backend's own address does not prove the tunnel works.
    h.sock.inbox = [echo_reply(BE1, id1, 1, 1000), echo_reply(VIP, id2, 1, 1001)]
    h.prober.on_readable(0.001)
    assert [(b, r.status) for _, b, r in h.results] == [("be2", L3OK)]
    assert h.prober.counters["unmatched"] == 1


def test_protocol_unreachable_for_ipip_names_the_missing_decapsulator() -> None:
    packet = build_ipip_echo(LB, BE1, LB, VIP, 0x4000, 7, make_payload(5))
    parsed = parse_icmp_packet(ip_icmp(BE1, LB, DEST_UNREACH, 2, 0, packet))
    assert isinstance(parsed, IcmpErrorReport)
    assert (parsed.orig_dst, parsed.ident, parsed.seq, parsed.encapsulated) == (BE1, 0x4000, 7, True)
    assert "no IP-in-IP decapsulator" in parsed.describe()


def test_ipip_echo_is_well_formed() -> None:
    packet = build_ipip_echo(LB, BE1, LB, VIP, 0x1234, 3, make_payload(9), ip_id=3)
    outer, inner = IPv4.parse(packet), IPv4.parse(packet, 20)
    assert (outer.proto, outer.total_length, inner.proto, inner.total_length) == (PROTO_IPIP, len(packet), 1,
                                                                                  len(packet) - 20)
    assert checksum(packet[:20]) == 0 and checksum(packet[20:40]) == 0 and checksum(packet[40:]) == 0


def test_parse_echo_reply_and_other_types() -> None:
    parsed = parse_icmp_packet(echo_reply(BE1, 0x1234, 9, 77))
    assert parsed == EchoReply(BE1, LB, 0x1234, 9, 64, 77)
    assert isinstance(parse_icmp_packet(ip_icmp(BE1, LB, 13, 0, 0, b"")), IgnoredIcmp)
    foreign = ip_icmp(BE1, LB, ECHO_REPLY, 0, 1, b"ping payload of someone else")
    assert parse_icmp_packet(foreign).nonce is None


@given(st.binary(max_size=200))
def test_parser_never_raises(data: bytes) -> None:
    assert isinstance(parse_icmp_packet(data), (EchoReply, IcmpErrorReport, IgnoredIcmp, Malformed))


@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_parser_survives_corrupted_errors(cut: int, junk: bytes) -> None:
    inner = build_ipip_echo(LB, BE1, LB, VIP, 1, 1, make_payload(1))
    packet = ip_icmp(BE1, LB, DEST_UNREACH, 2, 0, inner[:cut] + junk)
    assert isinstance(parse_icmp_packet(packet), (IcmpErrorReport, IgnoredIcmp, Malformed))


def test_probe_once_yields_one_outcome_per_probe() -> None:
    sock = FakeSocket()
    clock_times = iter([0.0] + [i * 0.01 for i in range(1, 1000)])
    counters: dict[str, int] = {}

    class AnsweringSocket(FakeSocket):
        def send_echo(self, dst, ident, seq, payload):
            super().send_echo(dst, ident, seq, payload)
            if seq != 2:  # the second probe is lost
                self.inbox.append(ip_icmp(dst, LB, ECHO_REPLY, 0, (ident << 16) | seq, payload))

        def fileno(self) -> int:
            return self._r

    import os

    sock = AnsweringSocket()
    sock._r, w = os.pipe()
    os.write(w, b"x")  # always "readable": the fake inbox decides what there is
    try:
        outcomes = list(probe_once(BE1, count=3, interval=0.05, timeout=0.03, sock=sock,
                                   clock=lambda: next(clock_times), counters=counters))
    finally:
        os.close(sock._r)
        os.close(w)
    assert [(o.seq, o.status) for o in outcomes] == [(1, L3OK), (2, L3TOUT), (3, L3OK)]
    assert counters["sent"] == 3 and counters["replies"] == 2 and sock.closed


def test_probe_command_explains_missing_privileges(monkeypatch) -> None:
    from click.testing import CliRunner

    from pktlb.cli import main
    from pktlb.daemon.health import icmp as prober

    def refuse() -> None:
        raise PermissionError(1, "raw ICMP sockets need CAP_NET_RAW (run as root)")

    monkeypatch.setattr(prober, "IcmpSocket", refuse)
    monkeypatch.setattr("pktlb.cli.common.in_root_namespace", lambda: False)
    done = CliRunner().invoke(main, ["probe", "--target", BE1, "--count", "1"])
    assert done.exit_code == 1 and "CAP_NET_RAW" in done.output and "ip netns exec" in done.output


def test_probe_command_stays_in_the_lab_range() -> None:
    from click.testing import CliRunner

    from pktlb.cli import main

    done = CliRunner().invoke(main, ["probe", "--target", "192.0.2.1"])
    assert done.exit_code == 2 and "outside the lab range" in done.output
    done = CliRunner().invoke(main, ["probe", "--target", "not-an-address"])
    assert done.exit_code == 2 and "expected an IPv4 address" in done.output


def test_probe_refuses_the_hosts_namespace_for_lab_addresses(monkeypatch) -> None:
    from click.testing import CliRunner

    from pktlb.cli import main

    monkeypatch.setattr("pktlb.cli.common.in_root_namespace", lambda: True)
    done = CliRunner().invoke(main, ["probe", "--target", BE1, "--count", "1"])
    assert done.exit_code == 1 and "network namespace" in done.output and "lab exec" in done.output
