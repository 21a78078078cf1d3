"""Address conversions between text, bytes and integers (no socket module: the core opens nothing)."""

from __future__ import annotations

import ipaddress


def ip_to_int(text: str) -> int:
    """Dotted-quad IPv4 text to a 32-bit integer; ValueError on anything else.

    Parsed by the standard ``ipaddress`` module, which refuses leading zeros ("010.0.0.1" could
    mean octal 8 or decimal 10 depending on the reader, so it is not an address at all)."""
    try:
        return int(ipaddress.IPv4Address(text))
    except (ipaddress.AddressValueError, TypeError):
        raise ValueError(f"not an IPv4 address: {text!r}") from None


def int_to_ip(value: int) -> str:
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def mac_to_bytes(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` to 6 bytes; ValueError on anything else."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def bytes_to_mac(raw: bytes | bytearray | memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def in_network(address: int, network: int, prefix: int) -> bool:
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0
    return address & mask == network & mask
