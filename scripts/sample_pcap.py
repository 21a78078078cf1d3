#!/usr/bin/env python3
"""Write a small pcap of client traffic to the lab's VIP, for `pktlb replay` and `pktlb explain`.

It holds, as seen arriving at the LB: a TCP handshake and request from three client addresses, the
backend's SYN-ACK reply (which only NAT modes rewrite), a UDP query, a ping to the VIP, a packet
too big for the tunnel, and a few frames every mode drops (a fragment, a bad checksum, ARP).

    python scripts/sample_pcap.py OUT.pcap
"""

from __future__ import annotations

import sys

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from pktlb.lab.addressing import mac_for_ip

VIP, LB, GW = "198.19.0.100", "198.18.0.2", "198.18.0.1"


def frames() -> list:
    to_lb = Ether(src=mac_for_ip(GW), dst=mac_for_ip(LB))
    out = []
    for i, client in enumerate(("198.18.1.10", "198.18.1.100", "198.18.1.101")):
        sport = 40000 + i
        out.append(to_lb / IP(src=client, dst=VIP, flags="DF") / TCP(sport=sport, dport=80, flags="S", seq=100))
        out.append(to_lb / IP(src=client, dst=VIP, flags="DF") / TCP(sport=sport, dport=80, flags="A", seq=101, ack=1))
        out.append(to_lb / IP(src=client, dst=VIP, flags="DF") /
                   TCP(sport=sport, dport=80, flags="PA", seq=101, ack=1) / b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    # A reply from be1 to the first client: NAT rewrites it back to the VIP, other modes never see one.
    out.append(Ether(src=mac_for_ip("198.18.0.11"), dst=mac_for_ip(LB)) /
               IP(src="198.18.0.11", dst="198.18.1.10") / TCP(sport=80, dport=40000, flags="SA", seq=1, ack=101))
    out.append(to_lb / IP(src="198.18.1.10", dst=VIP) / UDP(sport=5000, dport=53) / b"query")
    out.append(to_lb / IP(src="198.18.1.10", dst=VIP) / ICMP(id=1, seq=1) / b"ping")
    out.append(to_lb / IP(src="198.18.1.10", dst=VIP, flags="DF") /
               TCP(sport=40000, dport=80, flags="A") / (b"x" * 1460))
    out.append(to_lb / IP(src="198.18.1.10", dst=VIP, flags="MF") / TCP(sport=40009, dport=80))
    out.append(to_lb / IP(src="198.18.1.10", dst=VIP, chksum=0x1234) / TCP(sport=40010, dport=80))
    out.append(Ether(src=mac_for_ip(GW), dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=GW, pdst=LB))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    wrpcap(sys.argv[1], frames())
    print(f"wrote {len(frames())} frames to {sys.argv[1]}")
