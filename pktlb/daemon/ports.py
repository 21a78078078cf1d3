"""The engine's packet sockets: a receiving port per interface, and send-only ones a route may need.

`pktlb run` receives on every interface of ``lb.interface`` (or every one that is up) and sends each
frame out of the interface its route picks (``pktlb.daemon.egress``); when a route picks an
interface it does not receive on, a send-only port is opened there once (its filter queues nothing).
With several workers each interface has its own PACKET_FANOUT group (a group is per device).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Any

from pktlb.adapters.bpf import pack_filters
from pktlb.adapters.rawio import ETH_P_ALL, RawPort

log = logging.getLogger("pktlb.engine")
REJECT_ALL = pack_filters([(0x06, 0, 0, 0)])  # BPF_RET|BPF_K 0: a send-only port queues nothing


class Ports:
    def __init__(self, interfaces: Sequence[str], cache: Any, *, bpf: bytes, batch: int, workers: int,
                 fanout_group: int, steering: bytes | None, protocol: int = ETH_P_ALL,
                 rx_buffer_bytes: int = 8 << 20) -> None:
        """Open a port on each of ``interfaces`` (InterfaceMissing, after closing what was opened, if one is gone)."""
        self.batch = batch
        self.rx: list[RawPort] = []
        self.tx_only: dict[int, RawPort] = {}  # ifindex -> send-only port
        self.by_ifindex: dict[int, RawPort] = {}
        try:
            for index, name in enumerate(interfaces):
                port = RawPort(name, bpf=bpf, batch=batch, protocol=protocol, rx_buffer_bytes=rx_buffer_bytes,
                               fanout_group=(fanout_group + index) & 0xFFFF if workers > 1 else None,
                               fanout_mode="cbpf", fanout_program=steering)
                self.rx.append(port)
                self.by_ifindex[cache.link(name).index] = port
        except BaseException:
            self.close()
            raise

    def port_for(self, ifindex: int, ifname: str) -> RawPort:
        """The port sending on ``ifindex``: a receiving one, else a send-only one opened now (once)."""
        port = self.by_ifindex.get(ifindex) or self.tx_only.get(ifindex)
        if port is None:
            port = self.tx_only[ifindex] = RawPort(ifname, bpf=REJECT_ALL, batch=self.batch)
            log.info("sending on %s too (a route chooses it; lb.interface does not list it)", ifname)
        return port

    def all(self) -> list[RawPort]:
        return [*self.rx, *self.tx_only.values()]

    def set_filter(self, program: bytes) -> None:
        for port in self.rx:
            port.set_filter(program)

    def set_fanout_program(self, program: bytes) -> None:
        for port in self.rx:
            port.set_fanout_program(program)

    @staticmethod
    def gone(port: RawPort, exc: OSError) -> bool:
        """Log a receive error; True when the interface itself is gone (stop reading it)."""
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            log.warning("interface %s is gone: no longer receiving on it", port.ifname)
            return True
        log.info("interface %s: %s (routes through it are followed as the kernel changes them)",
                 port.ifname, errno.errorcode.get(exc.errno or 0, exc))
        return False

    def close(self) -> None:
        for port in self.all():
            port.close()
