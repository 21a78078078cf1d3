"""Packet views and codecs: precompiled ``struct`` layouts over ``bytearray``/``memoryview``.

Each module holds one header: its ASCII diagram, its ``struct`` format, and a small frozen
dataclass with a ``parse``/``pack`` pair (used by tests, ``explain`` and ICMP construction).
The engine's hot path uses the same ``struct`` objects directly on the receive buffer.
"""

from pktlb.core.packet.addr import bytes_to_mac, int_to_ip, ip_to_int, mac_to_bytes

__all__ = ["ip_to_int", "int_to_ip", "mac_to_bytes", "bytes_to_mac"]
