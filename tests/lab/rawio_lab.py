"""The lab of the RawPort tests (``test_rawio.py``) and what they use in it: frames, draining a port,
the kernel's TCP counters, a two-port forwarder thread, a checked TCP transfer.

Topology (own namespaces ``pktlb-rio<random>-{c,lb,s}``, removed by ``remove_lab``):

    c: c0 198.18.1.2/24 ---- l0 198.18.1.1/24 :lb: l1 198.18.2.1/24 ---- s0 198.18.2.2/24 :s

The LB namespace does not forward (ip_forward=0); where a test needs c and s to talk, a small
forwarder thread moves frames between two RawPorts, rewriting the MACs only and giving each frame its
virtio header back.  l1 has TX checksum offload off, so the kernel finishes partial checksums (and
cuts GSO super-frames) in software and s verifies every checksum itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktlb.adapters.bpf import build_filter, pack_filters
from pktlb.adapters.rawio import RawPort
from pktlb.adapters.vnet import RxFrame, VnetHeader
from pktlb.lab.netns import Namespace

PREFIX = f"pktlb-rio{secrets.token_hex(3)}-"
NS_C, NS_LB, NS_S = PREFIX + "c", PREFIX + "lb", PREFIX + "s"
MACS = {"c0": "02:00:c6:12:01:02", "l0": "02:00:c6:12:01:01", "l1": "02:00:c6:12:02:01",
        "s0": "02:00:c6:12:02:02"}
VIP = "198.18.0.10"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*args: str) -> None:
    Namespace.current().run(args, timeout=20)


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block in namespace ``name`` (this thread only); sockets made here stay in it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(str(Namespace(name).path), os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


def build_lab() -> None:
    """The three namespaces and two veth pairs drawn above; l1 with TX checksum offload off."""
    for ns in (NS_C, NS_LB, NS_S):
        run("ip", "netns", "add", ns)
        Namespace(ns).run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                           "net.ipv4.ip_forward=0"], timeout=20)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    for (a, ns_a), (b, ns_b) in ((("c0", NS_C), ("l0", NS_LB)), (("l1", NS_LB), ("s0", NS_S))):
        run("ip", "link", "add", a, "netns", ns_a, "address", MACS[a], "type", "veth",
            "peer", b, "netns", ns_b, "address", MACS[b])
    for ns, dev, addr in ((NS_C, "c0", "198.18.1.2/24"), (NS_LB, "l0", "198.18.1.1/24"),
                          (NS_LB, "l1", "198.18.2.1/24"), (NS_S, "s0", "198.18.2.2/24"), (NS_S, "s0", "198.18.2.3/24")):
        run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        run("ip", "-n", ns, "link", "set", dev, "up")
    run("ip", "-n", NS_C, "route", "add", "198.18.2.0/24", "via", "198.18.1.1")
    run("ip", "-n", NS_S, "route", "add", "198.18.1.0/24", "via", "198.18.2.1")
    Namespace(NS_LB).run(["ethtool", "-K", "l1", "tx", "off"], timeout=20)



def remove_lab() -> None:
    for ns in (NS_C, NS_LB, NS_S):
        Namespace.current().run(["ip", "netns", "del", ns], timeout=20, check=False)


def udp_frame(dst: str, dport: int, payload: bytes = b"x" * 18, dst_mac: str = MACS["l0"]) -> bytes:
    return bytes(Ether(src=MACS["c0"], dst=dst_mac) / IP(src="198.18.1.2", dst=dst) / UDP(sport=4000, dport=dport)
                 / payload)


def drain_until(port: RawPort, marker: bytes, timeout: float = 5.0, batched: bool = True) -> list[bytes]:
    """Every frame the port reads up to and including the first one containing ``marker``."""
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port.wait(0.2)
        frames = port.recv_batch() if batched else [f for f in [port.recv()] if f is not None]
        for f in frames:
            seen.append(bytes(f.data))
            if marker in seen[-1]:
                return seen
    raise AssertionError(f"marker {marker!r} not received in {timeout}s; got {len(seen)} frames")


def drain(port: RawPort) -> list[RxFrame]:
    """Whatever the port has queued now."""
    frames: list[RxFrame] = []
    while batch := port.recv_batch():
        frames += batch
    return frames


def snmp_counter(ns: str, group: str, name: str) -> int:
    with netns(ns), open("/proc/thread-self/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith(group + ":")]
    return int(lines[1][lines[0].index(name)])


class Forwarder(threading.Thread):
    """Moves frames both ways between the LB's two ports, rewriting MACs, virtio header given back."""

    def __init__(self, spoil_first_partial: bool = False) -> None:
        super().__init__(daemon=True)
        with netns(NS_LB):  # each side keeps only frames for the host beyond it
            self.ports = {"l0": RawPort("l0", bpf=pack_filters(build_filter(dst_addrs=["198.18.2.2"]))),
                          "l1": RawPort("l1", bpf=pack_filters(build_filter(dst_addrs=["198.18.1.2"])))}
        self.route = {"l0": ("l1", MACS["s0"]), "l1": ("l0", MACS["c0"])}
        self.seen: list[tuple[str, int, VnetHeader]] = []  # (in port, frame length, virtio header)
        self.spoil_first_partial = spoil_first_partial
        self.stop = threading.Event()

    def run(self) -> None:
        poller = select.poll()
        by_fd = {p.fileno(): name for name, p in self.ports.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self.stop.is_set():
            for fd, _ in poller.poll(50):
                name = by_fd[fd]
                out_name, dst_mac = self.route[name]
                out, frames = self.ports[out_name], self.ports[name].recv_batch()
                for f in frames:
                    f.data[0:12] = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(MACS[out_name].replace(":", ""))
                    self.seen.append((name, len(f.data), f.vnet))
                    if self.spoil_first_partial and f.partial:
                        self.spoil_first_partial = False
                        out.send(f.data)  # without its virtio header: the unfinished field goes out as is
                out.send_batch([f.data for f in frames], [f.vnet for f in frames])

    def __enter__(self) -> Forwarder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
        for p in self.ports.values():
            p.close()


def tcp_transfer(payload: bytes, port: int) -> bytes:
    """Send payload from c to s over TCP; s answers with the SHA-256 of what it read."""
    with netns(NS_S):
        listener = socket.create_server(("198.18.2.2", port))
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            digest = hashlib.sha256()
            while chunk := conn.recv(65536):
                digest.update(chunk)
            conn.sendall(digest.digest())

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with netns(NS_C):
        client = socket.socket()
    with client, listener:
        client.settimeout(10)
        client.connect(("198.18.2.2", port))
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        answer = client.recv(64)
        server.join(10)
    return answer
