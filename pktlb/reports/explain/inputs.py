"""What ``pktlb explain`` feeds the data path: a frame described on the command line or taken from a
pcap, the frames that warm the flow table first, and the configuration (a file, the running lab's,
or either with every service switched to another mode).

Frames are built with scapy exactly as the engine receives them: Ethernet from the router's MAC
to the LB's MAC, IPv4 with correct checksums.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pktlb.core.config import Config
from pktlb.core.packet.addr import bytes_to_mac, ip_to_int
from pktlb.core.packet.ipv4 import PROTO_TCP
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.snapshot import Snapshot, build_snapshot
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.addressing import lab_macs
from pktlb.lab.paths import LabPaths

DEFAULT_SNAT = "198.18.0.3"
ERROR_TYPES = (3, 11, 12)  # ICMP destination unreachable, time exceeded, parameter problem
CLIENT_PORT = 40000  # the client port of the flow an ICMP error to a VIP quotes
FRAG_NEEDED_MTU = 1400  # next-hop MTU put into a hand-made "fragmentation needed" (type 3 code 4)


@dataclass(frozen=True)
class FrameSpec:
    """A frame described on the command line (``--tcp SRC:PORT DST:PORT --flags S`` and friends)."""

    proto: str  # "tcp" | "udp" | "icmp"
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: str = "S"
    icmp_type: int = 8
    icmp_code: int = 0
    payload_size: int = 0
    ttl: int = 64
    df: bool = True

    def describe(self) -> str:
        if self.proto == "icmp":
            return f"ICMP {self.src} -> {self.dst} type {self.icmp_type} code {self.icmp_code}"
        flags = f" [{self.flags}]" if self.proto == "tcp" else ""
        return f"{self.proto.upper()} {self.src}:{self.sport} -> {self.dst}:{self.dport}{flags}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``198.18.1.10:40000`` -> ("198.18.1.10", 40000); ValueError naming what was expected."""
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"got {text!r}, expected ADDRESS:PORT like 198.18.1.10:40000")
    ip_to_int(addr)
    return addr, int(port)


def check_address(text: str) -> str:
    ip_to_int(text)
    return text


def build_frame(spec: FrameSpec, snap: Snapshot) -> bytearray:
    """The frame as it reaches the LB: from the router's MAC to the LB's, correct checksums."""
    ip = IP(src=spec.src, dst=spec.dst, ttl=spec.ttl, flags="DF" if spec.df else 0)
    payload = bytes(spec.payload_size)
    l4: Packet
    if spec.proto == "tcp":
        l4 = TCP(sport=spec.sport, dport=spec.dport, flags=spec.flags, seq=1000, ack=0 if "A" not in spec.flags else 1)
    elif spec.proto == "udp":
        l4 = UDP(sport=spec.sport, dport=spec.dport)
    elif spec.icmp_type in ERROR_TYPES:
        l4 = ICMP(type=spec.icmp_type, code=spec.icmp_code)
        if spec.icmp_type == 3 and spec.icmp_code == 4:
            l4.nexthopmtu = FRAG_NEEDED_MTU
        port = _first_port(snap, spec.dst)
        # The error quotes a packet the VIP sent to the error's sender: a reply of the flow SRC:40000 -> VIP:port.
        l4 = l4 / IPerror(src=spec.dst, dst=spec.src) / TCPerror(sport=port, dport=CLIENT_PORT, flags="SA")
    else:
        l4 = ICMP(type=spec.icmp_type, code=spec.icmp_code, id=1, seq=1)
    return bytearray(bytes(_ether(snap) / ip / l4 / payload))


def _ether(snap: Snapshot) -> Ether:
    return Ether(src=bytes_to_mac(snap.gateway_mac), dst=bytes_to_mac(snap.lb_mac))


def _first_port(snap: Snapshot, vip: str) -> int:
    addr = ip_to_int(vip)
    ports = sorted(port for (proto, v, port) in snap.services if v == addr and proto == PROTO_TCP)
    return ports[0] if ports else 80


def flow_opening(frame: bytes | bytearray, snap: Snapshot) -> bytearray | None:
    """For an ICMP error to a VIP: the SYN that opens the flow it quotes, so the LB knows that flow."""
    pkt = Ether(bytes(frame))
    if ICMP not in pkt or pkt[ICMP].type not in ERROR_TYPES or IPerror not in pkt:
        return None
    quoted = pkt[IPerror]
    l4 = quoted.getlayer(TCPerror) or quoted.getlayer(UDPerror)
    if l4 is None or ip_to_int(pkt[IP].dst) not in snap.vips:
        return None
    ip = IP(src=quoted.dst, dst=quoted.src, flags="DF")
    opener = (TCP(sport=l4.dport, dport=l4.sport, flags="S", seq=999) if isinstance(l4, TCPerror)
              else UDP(sport=l4.dport, dport=l4.sport))
    return bytearray(bytes(_ether(snap) / ip / opener))


def same_flow_frames(frame: bytes | bytearray, count: int) -> list[bytearray]:
    """``count`` earlier packets of the frame's flow: for TCP a SYN then ACKs, otherwise copies."""
    frames = []
    for i in range(count):
        pkt = Ether(bytes(frame))
        if TCP in pkt:
            pkt[TCP].flags = "S" if i == 0 else "A"
            pkt[TCP].seq = 999 if i == 0 else 1000
            del pkt[TCP].chksum
            pkt[TCP].remove_payload()
            pkt[IP].len = None
            del pkt[IP].chksum
        frames.append(bytearray(bytes(pkt)))
    return frames


def config_for_mode(config: Config, mode: str | None) -> tuple[Config, list[str]]:
    """``config`` with every service switched to ``mode`` (``--mode``), and notes saying what else changed."""
    if mode is None:
        return config, []
    notes: list[str] = []
    services = []
    traits = traits_of(mode)
    for svc in config.services:
        snat_address, backends = svc.snat_address, svc.backends
        if traits.needs_snat and not svc.snat_address:
            snat_address = DEFAULT_SNAT
            notes.append(f"service {svc.name}: no snat_address configured, using {DEFAULT_SNAT}")
        if traits.keeps_ports and any(b.port != svc.port for b in svc.backends):
            backends = tuple(dataclasses.replace(b, port=svc.port) for b in svc.backends)
            notes.append(f"service {svc.name}: backend ports set to {svc.port}: mode {mode} does not rewrite ports")
        services.append(dataclasses.replace(svc, mode=mode, snat_address=snat_address, backends=backends))
    return dataclasses.replace(config, services=tuple(services)), notes


def lab_config_path(prefix: str) -> Path:
    """Where ``pktlb lab up`` writes the engine configuration of the lab named ``prefix``."""
    return LabPaths(prefix).config


def live_snapshot(config: Config) -> tuple[Snapshot, str]:
    """A snapshot with the backend states and weights the running engine reports (``stats`` on its
    control socket), and a note saying what was used; every backend up when the engine does not answer."""
    try:
        stats = request(config.lb.control_socket, {"cmd": "stats"}, timeout=2.0)
    except ControlClientError as exc:
        return build_snapshot(config, macs=lab_macs(config)), f"engine not reachable ({exc}): every backend assumed up"
    states, weights = {}, {}
    for svc in stats.get("services", []):
        for be in svc.get("backends", []):
            states[(svc["name"], be["name"])] = be["state"]
            weights[(svc["name"], be["name"])] = be["weight"]
    listed = ", ".join(f"{s}/{b} {st}" for (s, b), st in states.items())
    return (build_snapshot(config, states=states, weights=weights, macs=lab_macs(config)),
            f"backend states from the running engine: {listed} (its flow table is not copied)")
