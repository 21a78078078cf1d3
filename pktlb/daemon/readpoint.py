"""Where the engine reads frames, given the kernel fast path's hook, and so where its guard must hook.

The receive path of a frame (net/core/dev.c, ``__netif_receive_skb_core``), in order:

    XDP (driver) -> ETH_P_ALL packet sockets -> tc ingress -> nftables netdev ingress
        -> per-protocol deliveries: ETH_P_IP packet sockets and ip_rcv (-> ip prerouting -> routing)

* no fast path, or XDP: the engine's sockets bind ETH_P_ALL and see every frame that reaches the
  stack; the guard drops at netdev ingress, after them and before the IP stack.
* tc: an ETH_P_ALL socket would see the frames tc forwards as well (Python would send them twice), so
  the sockets bind ETH_P_IP and see only what tc passed on; a netdev ingress drop would starve them,
  so the guard drops at ip prerouting, which runs after the ETH_P_IP sockets got their copy.

The sockets' receive buffer is sized for the same number of queued frames at every point: a frame
an XDP program passed on is charged about 1.5 times the bytes (generic XDP copies a frame with less
than 256 bytes of headroom into a page-pool buffer, and the socket counts that buffer's true size:
1,280 bytes per queued 60-byte SYN here, against 832 without XDP).  With the same bytes, a burst of
punted frames (a SYN flood to a full-NAT service) queued a third fewer and lost the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from pktlb.adapters.rawio import ETH_P_ALL, ETH_P_IP
from pktlb.daemon.guard import IP_PREROUTING, NETDEV_INGRESS, GuardHook

RX_BUFFER_BYTES = 8 << 20  # about 20,000 small frames queued (the kernel doubles it and counts 832 bytes each)


@dataclass(frozen=True)
class ReadPoint:
    """What a fast-path hook means for the engine around it."""

    protocol: int  # the Ethernet protocol the engine's packet sockets bind to
    guard: GuardHook  # where the guard's chain keeps this namespace's kernel out of the way
    sends_anywhere: bool = True  # False: XDP_REDIRECT reaches only interfaces that run the program too
    rx_buffer_bytes: int = RX_BUFFER_BYTES  # the packet sockets' receive buffer (SO_RCVBUF)


READ_POINTS = {
    "off": ReadPoint(ETH_P_ALL, NETDEV_INGRESS),
    "xdp": ReadPoint(ETH_P_ALL, NETDEV_INGRESS, sends_anywhere=False, rx_buffer_bytes=RX_BUFFER_BYTES * 3 // 2),
    "tc": ReadPoint(ETH_P_IP, IP_PREROUTING),
}


def read_point(hook: str | None) -> ReadPoint:
    """The read point for a fast-path hook (None: off); ValueError naming an unknown one."""
    try:
        return READ_POINTS[hook or "off"]
    except KeyError:
        raise ValueError(f"lb.fastpath: unknown hook {hook!r} (one of {', '.join(READ_POINTS)})") from None
