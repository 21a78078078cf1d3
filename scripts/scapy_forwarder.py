#!/usr/bin/env python3
"""A naive scapy load balancer: the reference of what NOT to put on a packet path.

Every frame is dissected into Python objects, rewritten field by field (DNAT to a backend chosen
by a hash of source address and port, TTL - 1), its checksums deleted so scapy recomputes them,
serialised again and sent.  That costs a few hundred microseconds per packet, a hundred times what
pktlb's engine spends.  `pktlb bench` runs it as the "scapy forwarder" reference, bounded in
packets and seconds:

    ip netns exec pktlb-lb python scripts/scapy_forwarder.py --iface eth0 --vip 198.19.0.100 --port 5000 \\
        --lb-mac 02:00:c6:12:00:02 --count 20000 --seconds 30 198.18.0.11=02:00:c6:12:00:0b ...
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

from scapy.all import IP, UDP, Ether, conf, sniff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--vip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lb-mac", required=True)
    parser.add_argument("--count", type=int, required=True, help="stop after forwarding this many frames")
    parser.add_argument("--seconds", type=float, required=True, help="stop after this many seconds")
    parser.add_argument("--ready-file", help="created once the capture is open")
    parser.add_argument("backends", nargs="+", help="ADDRESS=MAC of each backend")
    args = parser.parse_args()
    backends = [tuple(b.split("=", 1)) for b in args.backends]
    out = conf.L2socket(iface=args.iface)  # one socket; sendp() would open one per packet
    forwarded = 0

    def forward(frame) -> None:
        nonlocal forwarded
        if IP not in frame or UDP not in frame or frame[IP].dst != args.vip or frame[UDP].dport != args.port:
            return
        ip = frame[IP]
        address, mac = backends[zlib.crc32(f"{ip.src}:{frame[UDP].sport}".encode()) % len(backends)]
        frame[Ether].src, frame[Ether].dst = args.lb_mac, mac
        ip.dst = address
        ip.ttl -= 1
        del ip.chksum  # without these two, scapy would send the old, now wrong, checksums
        del frame[UDP].chksum
        out.send(frame)
        forwarded += 1

    def started() -> None:
        if args.ready_file:
            Path(args.ready_file).touch()

    sniff(iface=args.iface, filter=f"udp and dst host {args.vip} and dst port {args.port}", prn=forward,
          store=False, count=args.count, timeout=args.seconds, started_callback=started)
    out.close()
    print(f"forwarded {forwarded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
