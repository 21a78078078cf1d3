"""Test helpers: build input frames with scapy and check outputs with scapy's own checksums."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether

from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.lab.addressing import lab_macs, mac_for_ip

VIP = "198.19.0.100"
LB = "198.18.0.2"
GW = "198.18.0.1"
CLIENT = "198.18.1.10"
SNAT = "198.18.0.3"
LB_MAC = mac_for_ip(LB)
GW_MAC = mac_for_ip(GW)
BACKENDS = {"be1": "198.18.0.11", "be2": "198.18.0.12", "be3": "198.18.0.13"}


def config_text(mode: str, scheduler: str = "hash", extra: str = "", backends: int = 3, udp_port: int = 5353,
                on_down: str = "reschedule", flows: str = "") -> str:
    snat = 'snat_address = "198.18.0.3"\nsnat_ports = [20000, 20003]' if mode == "fullnat" else ""
    if mode in ("dsr", "tunnel"):
        udp_port = 53
    bes = "".join(f'[[service.backend]]\nname = "be{i}"\naddress = "198.18.0.{10 + i}"\nport = 80\n'
                  for i in range(1, backends + 1))
    ubes = "".join(f'[[service.backend]]\nname = "be{i}"\naddress = "198.18.0.{10 + i}"\nport = {udp_port}\n'
                   for i in range(1, backends + 1))
    return f"""
[lb]
address = "{LB}"
gateway = "{GW}"
{flows}
[[service]]
name = "web"
vip = "{VIP}"
port = 80
mode = "{mode}"
scheduler = "{scheduler}"
on_backend_down = "{on_down}"
{snat}
{extra}
{bes}
[[service]]
name = "dns"
vip = "{VIP}"
port = 53
protocol = "udp"
mode = "{mode}"
scheduler = "{scheduler}"
{snat}
{ubes}
"""


def datapath(mode: str, **kw) -> DataPath:
    config = parse_config(config_text(mode, **kw))
    return DataPath(config, macs=lab_macs(config))


def client_frame(l4, src: str = CLIENT, dst: str = VIP, ttl: int = 64, flags: str = "DF", options=None,
                 payload: bytes = b"", dst_mac: str = LB_MAC) -> bytearray:
    ip = IP(src=src, dst=dst, ttl=ttl, flags=flags, options=options or [])
    return bytearray(bytes(Ether(src=GW_MAC, dst=dst_mac) / ip / l4 / payload))


def tcp(sport: int = 40000, dport: int = 80, flags: str = "S", **kw) -> TCP:
    return TCP(sport=sport, dport=dport, flags=flags, seq=1000, **kw)


def udp(sport: int = 40000, dport: int = 53) -> UDP:
    return UDP(sport=sport, dport=dport)


def backend_frame(l4, backend: str, dst: str = CLIENT, payload: bytes = b"") -> bytearray:
    return bytearray(bytes(Ether(src=mac_for_ip(backend), dst=LB_MAC) / IP(src=backend, dst=dst) / l4 / payload))


def assert_checksums(frame: bytes | bytearray) -> Ether:
    """Dissect with scapy and check every checksum against scapy's own computation."""
    pkt = Ether(bytes(frame))
    for layer in (IP, TCP, UDP, ICMP, IPerror):
        for depth, header in enumerate(_layers(pkt, layer)):
            if layer is UDP and header.chksum == 0:
                continue
            if layer is IPerror or (layer is IP and depth > 0):
                ref = IP(bytes(header))
                del ref.chksum
                assert IP(bytes(ref)).chksum == header.chksum, f"{layer.__name__}[{depth}] checksum"
                continue
            raw = header.copy()
            raw.remove_payload()
            rebuilt = pkt.copy()
            target = list(_layers(rebuilt, layer))[depth]
            del target.chksum
            expected = list(_layers(Ether(bytes(rebuilt)), layer))[depth].chksum
            assert header.chksum == expected, f"{layer.__name__}[{depth}] checksum {header.chksum:#x} != {expected:#x}"
    return pkt


def _layers(pkt, layer):
    i = 1
    while True:
        found = pkt.getlayer(layer, i)
        if found is None or (layer is IP and isinstance(found, IPerror)) or \
                (layer in (TCP, UDP) and isinstance(found, (TCPerror, UDPerror))):
            return
        yield found
        i += 1
