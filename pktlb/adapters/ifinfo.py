"""Facts about a network interface of the current network namespace: MAC, IPv4 addresses, index, MTU.

The only module that imports netifaces.  Everything is asked of the kernel through sockets and
netlink created by the calling thread, so the answers are those of the namespace that thread is in
(``/sys/class/net`` would show the namespace sysfs was mounted in, which after a bare ``setns`` is not
the current one).
"""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass

import netifaces

from pktlb.core.packet.addr import mac_to_bytes

SIOCGIFMTU = 0x8921
_IFREQ = struct.Struct("16si12x")


class InterfaceMissing(LookupError):
    """The named interface does not exist in the current network namespace."""

    def __init__(self, ifname: str) -> None:
        super().__init__(f"no interface named {ifname!r} in this network namespace")
        self.ifname = ifname


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    index: int
    mac: bytes
    mtu: int
    addresses: tuple[tuple[str, int], ...]  # (IPv4 address, prefix length), in the kernel's order

    @property
    def first_address(self) -> str | None:
        return self.addresses[0][0] if self.addresses else None


def _prefix_len(netmask: str) -> int:
    return sum(bin(int(octet)).count("1") for octet in netmask.split("."))


def interface_index(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceMissing(ifname) from None


def interface_mtu(ifname: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, _IFREQ.pack(ifname.encode(), 0))
        except OSError:
            raise InterfaceMissing(ifname) from None
    return int(_IFREQ.unpack(reply)[1])


def interface_info(ifname: str) -> InterfaceInfo:
    """Everything the engine needs to know about ``ifname``; ``InterfaceMissing`` if there is none."""
    if not ifname or len(ifname.encode()) >= 16:
        raise InterfaceMissing(ifname)
    index = interface_index(ifname)
    try:
        families = netifaces.ifaddresses(ifname)
    except ValueError:
        raise InterfaceMissing(ifname) from None
    links = families.get(netifaces.AF_LINK, [])
    mac = mac_to_bytes(links[0]["addr"]) if links and links[0].get("addr") else bytes(6)
    addresses = tuple((entry["addr"], _prefix_len(entry.get("netmask", "255.255.255.255")))
                      for entry in families.get(netifaces.AF_INET, []))
    return InterfaceInfo(name=ifname, index=index, mac=mac, mtu=interface_mtu(ifname), addresses=addresses)


def interface_names() -> list[str]:
    """The interfaces of the current namespace."""
    return list(netifaces.interfaces())
