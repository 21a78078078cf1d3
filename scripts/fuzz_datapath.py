#!/usr/bin/env python3
"""Coverage-guided fuzzing of the data path (``DataPath.handle``) with atheris (libFuzzer).

Each input is one control byte and one frame.  The control byte picks the mode (bits 0-1: nat,
fullnat, tunnel, dsr), the ``partial`` flag and a GSO segment size of 536 (bits 2, 3), whether to fix the
IPv4 header checksum so mutations reach past it (bit 4), whether to start from a fresh flow table
with a few flows open (bit 5), so replies and ICMP errors can match a flow, and whether the
snapshot marks two backends down (bit 6), so open flows are rescheduled or dropped by policy.
A crash is any exception out of ``handle``, an ``internal_error`` decision, unbalanced counters,
a reason outside the named ones, or an emitted frame whose IPv4 header checksum does not verify;
libFuzzer then writes the input to ``build/fuzz-crashes/`` and exits non-zero.

    python scripts/fuzz_datapath.py -atheris_runs=200000          # `make fuzz`: bounded, exit 0 if clean
    python scripts/fuzz_datapath.py -max_total_time=60 DIR         # your own corpus directory
    python scripts/fuzz_datapath.py --line-coverage DIR            # replay DIR, print line coverage

Without a corpus directory the seeds (frames from ``tests/frames.py``, one per mode and kind) are
written to ``build/fuzz-corpus`` and libFuzzer adds what it finds there.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CORPUS = ROOT / "build" / "fuzz-corpus"
MODES = ("nat", "fullnat", "tunnel", "dsr")
RESET_EVERY = 2000  # inputs before a mode's flow table is replaced (keeps memory and SNAT ports bounded)


class Harness:
    """The data paths (one per mode, flow tables replaced now and then) and the per-input check.

    Built inside ``atheris.instrument_imports`` so the pktlb modules it imports are instrumented."""

    def __init__(self) -> None:
        from pktlb.core.checksum import checksum, ones_sum
        from pktlb.core.decision import DROP, DROP_REASONS, FORWARD, REPLY
        from pktlb.core.packet import frame as at
        from pktlb.core.snapshot import DOWN, build_snapshot
        from tests.unit.fuzz_frames import FORWARD_REASONS, NOW, REPLY_REASONS, fresh_datapath

        self.checksum, self.ones_sum, self.open_flows, self.at = checksum, ones_sum, fresh_datapath, at
        self.named = {FORWARD: FORWARD_REASONS, REPLY: REPLY_REASONS, DROP: set(DROP_REASONS)}
        self.paths = {mode: fresh_datapath(mode) for mode in MODES}
        down = {(svc, be): DOWN for svc in ("web", "dns") for be in ("be1", "be2")}
        self.snapshots = {mode: (dp.snapshot, build_snapshot(dp.config, states=down, generation=2))
                          for mode, dp in self.paths.items()}
        self.inputs = 0
        self.now = NOW  # fixed: the open flows never expire; the tables are replaced instead

    def one_input(self, data: bytes) -> None:
        from atheris import FuzzedDataProvider

        fdp = FuzzedDataProvider(data)
        control = fdp.ConsumeBytes(1)
        self.check(control[0] if control else 0, bytearray(fdp.ConsumeBytes(fdp.remaining_bytes())))

    def check(self, control: int, frame: bytearray) -> None:
        mode = MODES[control & 3]
        partial, fix_ip, fresh = bool(control & 4), bool(control & 16), bool(control & 32)
        gso = 536 if control & 8 else 0
        self.inputs += 1
        if fresh or self.inputs % RESET_EVERY == 0:
            self.paths[mode] = self.open_flows(mode)
        dp = self.paths[mode]
        dp.swap(self.snapshots[mode][1 if control & 64 else 0])
        at = self.at  # header offsets (core/packet/frame.py)
        if fix_ip and len(frame) >= at.MIN_IPV4_FRAME:
            ihl = (frame[at.IP] & 15) * 4
            if ihl >= 20 and len(frame) >= at.IP + ihl:
                frame[at.IP_CSUM:at.IP_CSUM + 2] = b"\0\0"
                frame[at.IP_CSUM:at.IP_CSUM + 2] = self.checksum(frame[at.IP:at.IP + ihl]).to_bytes(2, "big")
        before = dp.stats.received
        frames, decision = dp.handle(frame, self.now, partial, gso)
        if decision.reason == "internal_error":
            raise AssertionError(f"internal_error in {mode}: {decision.detail}")
        if decision.reason not in self.named.get(decision.verdict, ()):
            raise AssertionError(f"unnamed decision {decision!r}")
        if dp.stats.received != before + 1 or not dp.stats.balanced():
            raise AssertionError(f"counters do not add up: {dp.stats.totals()}")
        for out in frames:
            if not isinstance(out, bytearray) or len(out) < 34:
                raise AssertionError(f"bad emitted frame {out!r}")
            self.check_ipv4(out, 14)

    def check_ipv4(self, frame: bytearray, ip: int) -> None:
        ihl = (frame[ip] & 15) * 4
        if frame[ip] >> 4 != 4 or ihl < 20 or self.ones_sum(frame[ip:ip + ihl]) != 0xFFFF:
            raise AssertionError(f"emitted IPv4 header at {ip} does not verify: {bytes(frame[:ip + 24]).hex()}")
        if frame[ip + 9] == 4:  # IP-in-IP: the inner header too
            self.check_ipv4(frame, ip + ihl)


def seeds(harness: Harness) -> list[bytes]:
    """Control byte + frame, for every mode: the frames the unit tests use, a few edge cases, and replies
    and ICMP errors from the backends of the flows a fresh table has open."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
    from scapy.layers.l2 import Ether

    from pktlb.core.packet.addr import bytes_to_mac, int_to_ip
    from tests.frames import CLIENT, GW_MAC, LB_MAC, VIP, client_frame, tcp, udp

    to_lb = Ether(src=GW_MAC, dst=LB_MAC)
    common = [
        client_frame(tcp()), client_frame(tcp(flags="A"), payload=b"GET / HTTP/1.1\r\n\r\n"),
        client_frame(udp(), payload=b"q" * 20), client_frame(tcp(), ttl=1), client_frame(tcp(), flags="MF"),
        client_frame(tcp(flags="A"), payload=b"z" * 1500), client_frame(tcp(), options=[]),
        bytes(to_lb / IP(src=CLIENT, dst=VIP) / ICMP(id=1, seq=1) / b"ping"),
        bytes(to_lb / IP(src="198.18.1.1", dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1400)
              / IPerror(src=VIP, dst=CLIENT) / TCPerror(sport=80, dport=40000)),
    ]
    out = []
    for m, mode in enumerate(MODES):
        frames = list(common)
        dp = harness.open_flows(mode)
        for entry in dp.flows:
            proto, client, vip, cport, vport = entry.key
            be = dp.snapshot.services[(proto, vip, vport)].by_name[entry.backend]
            layer, quoted = (TCP, TCPerror) if proto == 6 else (UDP, UDPerror)
            peer, port = (entry.snat_addr, entry.snat_port) if entry.snat_port else (client, cport)
            eth = Ether(src=bytes_to_mac(be.mac), dst=LB_MAC)
            frames.append(eth / IP(src=be.address, dst=int_to_ip(peer)) / layer(sport=be.port, dport=port))
            frames.append(eth / IP(src=be.address, dst=int_to_ip(peer)) / ICMP(type=3, code=3)
                          / IPerror(src=int_to_ip(peer), dst=be.address, proto=proto)
                          / quoted(sport=port, dport=be.port))
        out.extend(bytes([m | 32]) + bytes(frame) for frame in frames)
    return out


def line_coverage(corpus: Path) -> None:
    """Replay a corpus under the stdlib tracer and print line coverage of the data path's modules."""
    import trace

    harness = Harness()
    files = sorted(p for p in corpus.iterdir() if p.is_file())
    tracer = trace.Trace(count=1, trace=0)
    tracer.runfunc(lambda: [harness.check(d[0] if d else 0, bytearray(d[1:])) for d in (p.read_bytes() for p in files)])
    counts = tracer.results().counts
    core = ROOT / "pktlb" / "core"
    modules = ["engine/parse.py", "engine/inbound.py", "engine/replies.py", "engine/icmp.py", "engine/steps.py",
               "icmp_relay.py", "datapath.py", "stats.py", "flowtable.py", "packet/icmp.py",
               "rewrite/nat.py", "rewrite/fullnat.py", "rewrite/tunnel.py", "rewrite/dsr.py", "rewrite/base.py"]
    print(f"replayed {len(files)} inputs from {corpus}")
    for name in modules:
        path = core / name
        lines = _executable_lines(path)
        hit = {line for (filename, line), n in counts.items() if filename == str(path) and n} & lines
        print(f"  pktlb/core/{name:22s} {len(hit):4d}/{len(lines):4d} lines  {100 * len(hit) / max(len(lines), 1):5.1f}%")


def _executable_lines(path: Path) -> set[int]:
    """Line numbers of code inside functions (module and class bodies, which run at import, and def lines
    excluded)."""
    top = compile(path.read_text(), str(path), "exec")
    lines: set[int] = set()
    stack = [c for c in top.co_consts if hasattr(c, "co_lines")]
    while stack:
        code = stack.pop()
        if code.co_flags & inspect.CO_NEWLOCALS:  # a function, not a class body
            lines.update(line for _, _, line in code.co_lines() if line is not None and line != code.co_firstlineno)
        stack.extend(c for c in code.co_consts if hasattr(c, "co_lines"))
    return lines


def main() -> None:
    argv = list(sys.argv)
    if len(argv) == 3 and argv[1] == "--line-coverage":
        line_coverage(Path(argv[2]))
        return
    import atheris

    with atheris.instrument_imports(include=["pktlb"]):  # before anything else imports pktlb
        harness = Harness()
    if not any(not a.startswith("-") for a in argv[1:]):
        DEFAULT_CORPUS.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(harness)):
            (DEFAULT_CORPUS / f"seed-{i:03d}").write_bytes(seed)
        argv.append(str(DEFAULT_CORPUS))
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append("-max_len=4096")
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        (ROOT / "build" / "fuzz-crashes").mkdir(parents=True, exist_ok=True)
        argv.append(f"-artifact_prefix={ROOT / 'build' / 'fuzz-crashes'}/")
    atheris.Setup(argv, harness.one_input)
    atheris.Fuzz()  # libFuzzer prints "Done N runs in S second(s)" and exits 0 when nothing crashed


if __name__ == "__main__":
    main()
