"""The namespace's links, IPv4 addresses, routes and neighbours, kept current over rtnetlink.

``NetlinkCache`` opens one non-blocking NETLINK_ROUTE socket subscribed to link, neighbour, IPv4
address and IPv4 route notifications, fills itself with dumps at start (the only time it waits,
bounded), and from then on applies whatever the kernel says whenever the engine's loop finds the
socket readable (``fileno()`` / ``drain()``).  Dumps and notifications share the socket, so they are
applied in the order the kernel queued them and the cache converges to the kernel's tables.

``egress(dst)`` answers "which interface, which MAC, which next hop and its MAC" by the kernel's
default rules (``pktlb.core.routing``), memoised until the next change.  An unresolved next hop
returns at once with ``next_hop_mac=None`` after asking the kernel to resolve it (RTM_NEWNEIGH with
NTF_USE; the kernel ARPs and a notification fills the cache); the caller drops such frames.

What the kernel changes without telling anyone is re-read: IPv4 routes removed when a link goes
down or an address goes away produce no notification, so the cache drops the routes over a downed
link at once and re-dumps the routes; a lost notification (ENOBUFS) re-dumps everything.  A
backend's new MAC is followed when the backend announces it (a gratuitous ARP: ``arp_notify=1``,
keepalived, ``arping -U``); without that the kernel keeps the old entry, as it would for itself.
Limits: see ``pktlb.core.routing`` (IPv4, default rules only, no nexthop objects).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable

from pktlb.adapters.ifinfo import InterfaceMissing
from pktlb.adapters.rtnl_codec import (
    DUMPS,
    GROUPS,
    NLM_F_DUMP_INTR,
    Decoded,
    Decoder,
    dump_request,
    resolve_request,
)
from pktlb.core.packet.addr import int_to_ip, ip_to_int
from pktlb.core.rib import RESYNC_ROUTES, RoutingState
from pktlb.core.routing import Egress, Link, Route

log = logging.getLogger("pktlb.netlink")

NETLINK_ROUTE = 0
SO_RCVBUFFORCE = 33
RECV_SIZE = 1 << 17
RCVBUF = 4 << 20
START_TIMEOUT = 5.0
NETNS_DIR = "/run/netns"
MEMO_MAX = 1 << 16  # memoised destinations (clients too, for replies): cleared whole when full
ASKED_MAX = 4096  # next hops remembered for the resolve rate limit
RESOLVES_PER_SECOND = 100  # requests to the kernel at most, whatever the traffic (spoofed sources ...)


class NetlinkUnavailable(RuntimeError):
    """The kernel's tables could not be read (no such namespace, no permission, no answer)."""


def _netlink_socket(netns: str | None) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket of ``netns`` (a name under /run/netns) or of this thread's namespace.

    The thread enters the namespace only to create the socket (setns, this thread only) and comes
    back; the socket keeps answering for the namespace it was made in.  A namespace that does not
    exist is an error, never created.
    """
    kind = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    if netns is None:
        try:
            return socket.socket(socket.AF_NETLINK, kind, NETLINK_ROUTE)
        except OSError as exc:
            raise NetlinkUnavailable(f"cannot open a netlink socket: {exc.strerror}") from None
    from pyroute2.netns import setns  # the setns(2) system call; given a descriptor it creates nothing

    path = netns if "/" in netns else f"{NETNS_DIR}/{netns}"
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetlinkUnavailable(f"no network namespace {netns!r} ({path}: {exc.strerror})") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(target)
        except OSError as exc:
            raise NetlinkUnavailable(f"cannot enter network namespace {netns!r}: {exc}") from None
        try:
            return socket.socket(socket.AF_NETLINK, kind, NETLINK_ROUTE)
        except OSError as exc:
            raise NetlinkUnavailable(f"cannot open a netlink socket in {netns!r}: {exc.strerror}") from None
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def _address(dst: int | str | bytes) -> int:
    if isinstance(dst, int):
        return dst
    if isinstance(dst, str):
        return ip_to_int(dst)
    return int.from_bytes(dst, "big")


class NetlinkCache:
    """Routes, neighbours, addresses and links of one namespace, followed without blocking.

    ``on_change(kinds)`` is called after a drain that changed anything, with the kinds changed
    ("link", "addr", "route", "neigh").  ``resolve_interval`` bounds how often one next hop is
    asked for (seconds).  ``netns`` opens the socket in a named namespace (default: the caller's).
    """

    def __init__(self, *, netns: str | None = None, on_change: Callable[[set[str]], None] | None = None,
                 resolve_interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 timeout: float = START_TIMEOUT) -> None:
        self.on_change, self.resolve_interval, self.clock = on_change, resolve_interval, clock
        self.state = RoutingState()
        self.generation = 0  # bumped on every change; memoised answers belong to one generation
        self.errors = 0  # error replies to our own requests (a resolve toward a vanished interface ...)
        self.resyncs = 0
        self.resolves = 0  # RTM_NEWNEIGH/NTF_USE requests sent
        self.resolves_deferred = 0  # requests not sent because of RESOLVES_PER_SECOND
        self._window, self._window_count = 0, 0
        self._memo: dict[int | str | bytes, Egress] = {}
        self._asked: dict[tuple[int, int], float] = {}
        self._decoder = Decoder()
        self._seq = 0
        self._dumps: deque[str] = deque()
        self._dump: tuple[str, int] | None = None  # the dump in progress: kind and sequence number
        self._dump_intr = False
        self._changed: set[str] = set()
        self._starting = True
        self.sock = _netlink_socket(netns)
        try:
            self._set_rcvbuf()
            self.sock.bind((0, GROUPS))
            self.port = self.sock.getsockname()[0]
            self.resync()
            self._wait_for_dumps(timeout)
        except BaseException:
            self.sock.close()
            raise
        self._starting = False
        self._changed.clear()

    # -- the loop's side -------------------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, budget: int = 8) -> int:
        """Apply what the kernel sent, reading at most ``budget`` datagrams; never blocks.

        Returns the number of messages applied.  Call it when ``fileno()`` is readable; if it
        returns with data left (budget reached), the socket stays readable.  A notification is one
        datagram; a dump datagram holds many messages, and pyroute2 decodes one in roughly 0.1-0.5 ms,
        hence the small default: a large re-dump is spread over several turns of the loop.
        """
        applied = 0
        for _ in range(budget):
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # notifications were lost: read everything again
                    log.warning("netlink: notifications lost (ENOBUFS); re-reading the kernel's tables")
                    self.resync()
                    continue
                raise
            for message in self._decoder.decode(data):
                applied += self._apply(message)
        self._start_next_dump()
        if self._changed:
            kinds, self._changed = self._changed, set()
            self.generation += 1
            self._memo.clear()
            if self.on_change is not None:
                self.on_change(kinds)
        return applied

    on_readable = drain

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Drain until ``predicate()`` holds or ``timeout`` s pass (start-up, tests, the CLI; not the loop)."""
        deadline = self.clock() + timeout
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while not predicate():
            left = deadline - self.clock()
            if left <= 0:
                return False
            poller.poll(max(1, int(left * 1000)))
            self.drain()
        return True

    def resync(self, kinds: tuple[str, ...] = DUMPS) -> None:
        """Re-read ``kinds`` from the kernel (asynchronously: the dumps are applied by ``drain``)."""
        for kind in kinds:  # a dump of the same kind already running may predate the change: queue another
            if kind not in self._dumps:
                self._dumps.append(kind)
        self.resyncs += 1
        self._start_next_dump()

    def close(self) -> None:
        self.sock.close()

    # -- lookups ---------------------------------------------------------------------------------
    def egress(self, dst: int | str | bytes) -> Egress | None:
        """Where a frame to ``dst`` leaves; None when no unicast route covers it.

        Memoised per destination until the next change.  An answer whose ``next_hop_mac`` is None is
        not memoised, and asks the kernel to resolve the next hop (at most every
        ``resolve_interval`` s per next hop); the notification that follows fills the cache.
        """
        found = self._memo.get(dst)
        if found is not None:
            return found
        found = self.state.egress(_address(dst))
        if found is None:
            return None
        if found.next_hop_mac is None:
            self.request_neighbour(found.ifindex, found.next_hop)
        else:
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            self._memo[dst] = found
        return found

    def route(self, dst: int | str | bytes) -> Route | None:
        return self.state.route(_address(dst))

    def link(self, name_or_index: str | int) -> Link:
        """The interface by name or index; ``InterfaceMissing`` (a LookupError) if there is none."""
        found = self.state.link(name_or_index)
        if found is None:
            raise InterfaceMissing(str(name_or_index))
        return found

    def links(self) -> list[Link]:
        return sorted(self.state.links.values(), key=lambda link: link.index)

    def local_interface(self, address: int | str | bytes) -> str | None:
        """The interface holding ``address`` when it is one of this namespace's own, else None.

        Own means: assigned to an interface, or covered by a ``local`` route (AnyIP, e.g.
        ``ip route add local 198.18.0.0/24 dev lo``); either way the kernel answers for it.
        """
        return self.state.local_interface(_address(address))

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Every IPv4 address of the namespace: address -> (interface name, prefix length)."""
        return {int_to_ip(a.address): (self.state.ifname(a.ifindex), a.prefix)
                for a in self.state.addresses.values()}

    def neighbour(self, ifindex: int, address: int | str) -> bytes | None:
        return self.state.neighbours.get((ifindex, _address(address)))

    def request_neighbour(self, ifindex: int, address: int) -> bool:
        """Ask the kernel to resolve ``address`` on ``ifindex``, unless asked less than an interval ago."""
        now = self.clock()
        key = (ifindex, address)
        if now - self._asked.get(key, -1e9) < self.resolve_interval:
            return False
        if int(now) != self._window:
            self._window, self._window_count = int(now), 0
        if self._window_count >= RESOLVES_PER_SECOND:
            self.resolves_deferred += 1
            return False
        if len(self._asked) >= ASKED_MAX:
            self._asked = {k: t for k, t in self._asked.items() if now - t < self.resolve_interval}
        self._asked[key] = now
        self._window_count += 1
        try:
            self.sock.send(resolve_request(ifindex, int_to_ip(address), self._next_seq()))
        except OSError as exc:  # the kernel refused the message at once: the next call asks again
            log.debug("netlink: resolve %s on %d not sent: %s", int_to_ip(address), ifindex, exc)
            self._asked.pop(key, None)
            return False
        self.resolves += 1
        return True

    def summary(self) -> dict[str, int]:
        """Counters and sizes for `pktlb stats`: what the cache holds and what it has done."""
        return {"generation": self.generation, "links": len(self.state.links),
                "addresses": len(self.state.addresses),
                "routes": sum(len(table) for table in self.state.tables.values()),
                "neighbours": len(self.state.neighbours), "memoised": len(self._memo),
                "resolves": self.resolves, "resolves_deferred": self.resolves_deferred,
                "resyncs": self.resyncs, "errors": self.errors}

    # -- internals -------------------------------------------------------------------------------
    def _set_rcvbuf(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:  # without CAP_NET_ADMIN: what rmem_max allows
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _start_next_dump(self) -> None:
        if self._dump is not None or not self._dumps:
            return
        kind = self._dumps.popleft()
        seq = self._next_seq()
        try:
            self.sock.send(dump_request(kind, seq))
        except OSError as exc:
            if self._starting:
                raise NetlinkUnavailable(f"netlink dump of {kind} refused: {exc.strerror}") from None
            log.warning("netlink: dump of %s not sent (%s); tried again on the next drain", kind, exc)
            self._dumps.appendleft(kind)
            return
        self._dump = (kind, seq)
        self._dump_intr = False
        self.state.begin_dump(kind)

    def _wait_for_dumps(self, timeout: float) -> None:
        if not self.wait(lambda: self._dump is None and not self._dumps, timeout):
            raise NetlinkUnavailable(f"the kernel did not answer the netlink dumps within {timeout:.0f} s")

    def _apply(self, message: Decoded) -> int:
        dump = self._dump
        in_dump = dump is not None and message.seq == dump[1] and message.port == self.port
        if message.kind == "done" and in_dump:
            assert dump is not None
            self._changed.update(self.state.end_dump())
            self._dump = None
            if self._dump_intr or message.flags & NLM_F_DUMP_INTR:
                self.resync((dump[0],))
            return 0
        if message.kind == "error":
            if in_dump:  # the dump itself failed: keep what we had
                assert dump is not None
                self.state.abort_dump()
                self._dump = None
                self.errors += 1
                if self._starting:
                    raise NetlinkUnavailable(f"netlink dump of {dump[0]} failed: errno {message.error}")
                log.warning("netlink: dump of %s failed (errno %d); keeping the previous copy", dump[0], message.error)
                return 0
            if message.error:
                self.errors += 1
                log.debug("netlink: request %d refused: errno %d", message.seq, message.error)
            return 0
        if message.kind in ("done", "other") or message.record is None:
            return 0
        if in_dump:
            self._dump_intr |= bool(message.flags & NLM_F_DUMP_INTR)
            self.state.apply_dumped(message.kind, message.record)
            return 1
        changed = self.state.apply(message.kind, message.new, message.record)
        self._changed.update(changed)
        if RESYNC_ROUTES in changed:
            self._changed.discard(RESYNC_ROUTES)
            self.resync(("route",))
        return 1
