"""Resolve a next hop's MAC address: the kernel neighbour table first, else an ARP request of our own.

The ARP request is built with struct and sent on an AF_PACKET socket bound to ETH_P_ARP on the
interface; the wait is bounded (``tries`` x ``timeout``).  Both paths use the calling thread's network
namespace (``/proc/thread-self/net/arp``, sockets created here).
"""

from __future__ import annotations

import select
import socket
import struct
import time

from pktlb.adapters.ifinfo import InterfaceMissing, interface_info
from pktlb.core.packet.addr import in_network, ip_to_int, mac_to_bytes
from pktlb.core.packet.ethernet import ETH_P_IP

ETH_P_ARP = 0x0806
ARPOP_REQUEST, ARPOP_REPLY = 1, 2
ATF_COM = 0x02  # /proc/net/arp flag: the entry is complete
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ETH = struct.Struct("!6s6sH")
ARP_TABLE = "/proc/thread-self/net/arp"


def kernel_neighbour(ifname: str, address: str, table_path: str = ARP_TABLE) -> bytes | None:
    """The MAC the kernel has for ``address`` on ``ifname`` (complete entries only), else None."""
    try:
        with open(table_path, encoding="ascii") as table:
            lines = table.read().splitlines()[1:]
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split()  # IP address, HW type, Flags, HW address, Mask, Device
        if len(fields) >= 6 and fields[0] == address and fields[5] == ifname and int(fields[2], 16) & ATF_COM:
            mac = mac_to_bytes(fields[3])
            if mac != bytes(6):
                return mac
    return None


def arp_request_frame(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """A broadcast ARP who-has for ``target_ip`` (``src_ip`` 0.0.0.0 makes it an RFC 5227 probe)."""
    arp = _ARP.pack(1, ETH_P_IP, 6, 4, ARPOP_REQUEST, src_mac, socket.inet_aton(src_ip), bytes(6),
                    socket.inet_aton(target_ip))
    return _ETH.pack(BROADCAST, src_mac, ETH_P_ARP) + arp + bytes(18)  # padded to the 60-byte minimum


def parse_arp_reply(frame: bytes, target_ip: str) -> bytes | None:
    """The sender MAC if ``frame`` is an ARP reply from ``target_ip``, else None."""
    if len(frame) < _ETH.size + _ARP.size or _ETH.unpack_from(frame)[2] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, _tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen, op) != (1, ETH_P_IP, 6, 4, ARPOP_REPLY) or spa != socket.inet_aton(target_ip):
        return None
    return bytes(sha)


def _source_ip(addresses: tuple[tuple[str, int], ...], target_ip: str) -> str:
    target = ip_to_int(target_ip)
    for address, prefix in addresses:
        if in_network(target, ip_to_int(address), prefix):
            return address
    return addresses[0][0] if addresses else "0.0.0.0"


def arp_resolve(ifname: str, target_ip: str, *, tries: int = 3, timeout: float = 0.3,
                src_ip: str | None = None) -> bytes | None:
    """Ask ``target_ip`` for its MAC on ``ifname`` with up to ``tries`` requests ``timeout`` s apart."""
    info = interface_info(ifname)
    sender = src_ip or _source_ip(info.addresses, target_ip)
    request = arp_request_frame(info.mac, sender, target_ip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        try:
            sock.bind((ifname, ETH_P_ARP))
        except OSError:
            raise InterfaceMissing(ifname) from None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        for _ in range(tries):
            sock.send(request)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not poller.poll(int(left * 1000) + 1):
                    break
                mac = parse_arp_reply(sock.recv(2048), target_ip)
                if mac is not None:
                    return mac
    return None


def resolve(ifname: str, target_ip: str, *, tries: int = 3, timeout: float = 0.3) -> bytes | None:
    """The MAC of ``target_ip`` on ``ifname``: the kernel's table, else ARP; None if nobody answers."""
    return kernel_neighbour(ifname, target_ip) or arp_resolve(ifname, target_ip, tries=tries, timeout=timeout)
