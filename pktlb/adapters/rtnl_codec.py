"""rtnetlink messages to and from the core's routing records, with pyroute2's message classes.

pyroute2 encodes and decodes the messages (``MarshalRtnl``, ``ifinfmsg``, ``rtmsg``, ``ndmsg``,
``ifaddrmsg``); the socket is pktlb's own (``pktlb.adapters.netlink``), so that it can be
non-blocking and polled by the engine's loop.  This module only translates: a decoded message to a
``Link``, ``Route``, local address or neighbour entry of ``pktlb.core.routing``, and the requests the
cache sends (dumps, "resolve this neighbour") to bytes.  IPv4 only.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import (
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWNEIGH,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NTF_USE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.core.routing import Link, LocalAddress, Neighbour, NextHop, Route

GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_DUMP_INTR = 0x10
DUMPS = ("link", "addr", "route", "neigh")  # what a full resynchronisation asks for, in this order
_DUMP_REQUESTS = {"link": (RTM_GETLINK, ifinfmsg), "addr": (RTM_GETADDR, ifaddrmsg),
                  "route": (RTM_GETROUTE, rtmsg), "neigh": (RTM_GETNEIGH, ndmsg)}
KIND_OF_EVENT = {"RTM_NEWLINK": "link", "RTM_DELLINK": "link", "RTM_NEWADDR": "addr", "RTM_DELADDR": "addr",
                 "RTM_NEWROUTE": "route", "RTM_DELROUTE": "route", "RTM_NEWNEIGH": "neigh",
                 "RTM_DELNEIGH": "neigh"}


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message off the socket: its kind (link/addr/route/neigh, or "done"/"error"/"other")."""

    kind: str
    new: bool  # RTM_NEW* (False: RTM_DEL*)
    seq: int
    port: int
    flags: int
    record: Any = None  # Link | Route | LocalAddress | Neighbour | None (a message we do not keep)
    error: int = 0


def _encode(msg: Any, msg_type: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def dump_request(kind: str, seq: int) -> bytes:
    """An RTM_GET* dump request for links, IPv4 addresses, IPv4 routes (all tables) or IPv4 neighbours."""
    msg_type, msg_class = _DUMP_REQUESTS[kind]
    msg = msg_class()
    msg["family"] = 0 if kind == "link" else socket.AF_INET
    return _encode(msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq)


_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTATTR = struct.Struct("=HH")  # length, type
NDA_DST = 1


def resolve_request(ifindex: int, address: str, seq: int) -> bytes:
    """``ip neigh replace ADDRESS dev IF use``: the kernel starts resolving (ARP) and says so later.

    NTF_USE makes the kernel treat the entry as used by a sender (``neigh_event_send``): an absent
    entry is created INCOMPLETE and probed, a STALE one is re-validated.  No state is written, so
    the entry stays an ordinary one the kernel may age out.  Packed by hand (36 bytes): it is sent
    from the packet loop, where pyroute2's encoder would cost a few hundred microseconds.
    """
    body = _NDMSG.pack(socket.AF_INET, ifindex, 0, NTF_USE, 0) + _RTATTR.pack(8, NDA_DST) + socket.inet_aton(address)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
                            seq, 0)
    return header + body


def _attrs(msg: Any) -> dict[str, Any]:
    """Every attribute of ``msg`` by name, decoded in one pass (``get_attr`` walks the list each time)."""
    return {slot[0]: slot[1] for slot in msg["attrs"]}


def link_from(msg: Any) -> Link:
    attrs = _attrs(msg)
    address = attrs.get("IFLA_ADDRESS")
    try:
        mac = mac_to_bytes(address) if address else b""
    except ValueError:  # not a 6-byte address (an IP tunnel's, say)
        mac = b""
    info = attrs.get("IFLA_LINKINFO")
    driver = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
    return Link(index=msg["index"], name=attrs.get("IFLA_IFNAME") or f"if{msg['index']}", mac=mac,
                mtu=attrs.get("IFLA_MTU") or 0, flags=msg["flags"], kind=msg["ifi_type"], driver=driver)


def address_from(msg: Any) -> LocalAddress | None:
    if msg["family"] != socket.AF_INET:
        return None
    attrs = _attrs(msg)
    local = attrs.get("IFA_LOCAL") or attrs.get("IFA_ADDRESS")
    if local is None:
        return None
    return LocalAddress(address=ip_to_int(local), prefix=msg["prefixlen"], ifindex=msg["index"])


def route_from(msg: Any) -> Route | None:
    if msg["family"] != socket.AF_INET:
        return None
    attrs = _attrs(msg)
    dst = attrs.get("RTA_DST")
    hops: list[NextHop] = []
    multipath = attrs.get("RTA_MULTIPATH")
    if multipath:
        for nh in multipath:
            gateway = nh.get_attr("RTA_GATEWAY")
            hops.append(NextHop(nh["oif"], ip_to_int(gateway) if gateway else None))
    elif attrs.get("RTA_OIF") is not None:
        gateway = attrs.get("RTA_GATEWAY")
        hops.append(NextHop(attrs["RTA_OIF"], ip_to_int(gateway) if gateway else None))
    metrics = attrs.get("RTA_METRICS")
    mtu = (metrics.get_attr("RTAX_MTU") or 0) if metrics is not None else 0
    source = attrs.get("RTA_PREFSRC")
    table = attrs.get("RTA_TABLE")
    return Route(network=ip_to_int(dst) if dst else 0, prefix=msg["dst_len"], hops=tuple(hops),
                 table=msg["table"] if table is None else table, kind=msg["type"],
                 metric=attrs.get("RTA_PRIORITY") or 0, tos=msg["tos"], mtu=mtu,
                 source=ip_to_int(source) if source else None)


def neighbour_from(msg: Any) -> Neighbour | None:
    if msg["family"] != socket.AF_INET:
        return None
    attrs = _attrs(msg)
    dst = attrs.get("NDA_DST")
    if dst is None:
        return None
    lladdr = attrs.get("NDA_LLADDR")
    try:
        mac = mac_to_bytes(lladdr) if lladdr else None
    except ValueError:
        mac = None
    return Neighbour(ifindex=msg["ifindex"], address=ip_to_int(dst), mac=mac, state=msg["state"])


_CONVERT = {"link": link_from, "addr": address_from, "route": route_from, "neigh": neighbour_from}


class Decoder:
    """Bytes read from the socket to ``Decoded`` records (one pyroute2 marshal per socket)."""

    def __init__(self) -> None:
        self.marshal = MarshalRtnl()

    def decode(self, data: bytes) -> Iterator[Decoded]:
        for msg in self.marshal.parse(data):
            header = msg["header"]
            seq, port, flags = header["sequence_number"], header["pid"], header["flags"]
            if header["type"] == NLMSG_DONE:
                yield Decoded("done", False, seq, port, flags)
                continue
            if header["type"] == NLMSG_ERROR:
                yield Decoded("error", False, seq, port, flags, error=abs(msg.get("error") or 0))
                continue
            event = msg.get("event", "")
            kind = KIND_OF_EVENT.get(event)
            if kind is None:
                yield Decoded("other", False, seq, port, flags)
                continue
            try:
                record = _CONVERT[kind](msg)
            except (ValueError, TypeError, KeyError):  # a message pyroute2 could not fully decode
                record = None
            yield Decoded(kind, event.startswith("RTM_NEW"), seq, port, flags, record)
