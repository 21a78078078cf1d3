"""Where the dashboard may listen: a loopback address or a lab address, never all interfaces.

pktlb's network rule is that it listens only on 127.0.0.1 (loopback) or on addresses of its labs
(198.18.0.0/15, 2001:2::/48, which live only inside the lab's namespaces).  ``parse_listen`` turns
``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6) into a checked pair or raises ``ListenRefused`` saying why.
"""

from __future__ import annotations

import ipaddress

# The lab's address ranges (the same as pktlb.lab.topology.LAB_NETWORK and its IPv6 twin).
LAB_NETWORKS = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48"))
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9180
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ListenRefused(ValueError):
    """A --listen value the dashboard will not use; the message says why and what is allowed."""


def parse_listen(text: str) -> tuple[str, int]:
    """``"198.18.1.10:9180"`` -> ``("198.18.1.10", 9180)``; ``"[::1]:9180"``, ``"localhost:9180"``
    and a bare address (default port) work too.  Port 0 asks the kernel for a free port."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ListenRefused(f"--listen {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:] if rest else str(DEFAULT_PORT)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ListenRefused(f"--listen {text!r}: write an IPv6 address in brackets, e.g. [::1]:{DEFAULT_PORT}")
    else:
        host, port_text = text, str(DEFAULT_PORT)
    if not host:
        raise ListenRefused(f"--listen {text!r}: give the address too (an empty address means all interfaces, "
                            f"which the dashboard never listens on), e.g. {DEFAULT_HOST}:{port_text}")
    try:
        port = int(port_text)
    except ValueError:
        raise ListenRefused(f"--listen {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ListenRefused(f"--listen {text!r}: port {port} is outside 0-65535")
    return str(check_listen_host(host)), port


def check_listen_host(host: str) -> Address:
    """The address to bind if the rules allow it, else ListenRefused with the reason."""
    if host == "localhost":
        host = DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ListenRefused(f"--listen address {host!r}: expected an IP address (127.0.0.1, ::1 or a lab address "
                            "in 198.18.0.0/15 or 2001:2::/48), not a host name") from None
    if address.is_unspecified:
        raise ListenRefused(f"--listen address {host}: that is every interface of this host; the dashboard listens "
                            f"only on loopback ({DEFAULT_HOST}, ::1) or a lab address (198.18.0.0/15, 2001:2::/48)")
    if not (address.is_loopback or is_lab_address(address)):
        raise ListenRefused(f"--listen address {host}: neither loopback nor a lab address; the dashboard listens "
                            f"only on {DEFAULT_HOST}, ::1 or an address in 198.18.0.0/15 or 2001:2::/48 "
                            "(run it in a lab namespace with `ip netns exec` to use the lab's addresses)")
    return address


def is_lab_address(address: Address) -> bool:
    return any(address.version == net.version and address in net for net in LAB_NETWORKS)


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
