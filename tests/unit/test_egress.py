"""Where the engine sends each frame (pktlb.daemon.egress) over a hand-filled routing cache: the route's
interface, the next hop's MAC, the gateway override, and named drops instead of guessed MACs."""

from __future__ import annotations

from pktlb.core.config import parse_config
from pktlb.core.decision import FORWARD, INBOUND, OUTBOUND, Decision
from pktlb.core.packet.addr import ip_to_int
from pktlb.core.routing import Egress as Path
from pktlb.core.snapshot import build_snapshot
from pktlb.daemon.egress import LINK_DOWN, NO_NEIGHBOUR, NO_ROUTE, Egress

LB_MAC, BE_MAC, GW_MAC, CLIENT_MAC = b"\x02lb\x00\x00\x01", b"\x02be\x00\x00\x01", b"\x02gw\x00\x00\x01", b"\x02cl\x00\x00\x01"
CONFIG = """
[lb]
address = "198.18.0.2"
{gateway}
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "dsr"
[[service.backend]]
name = "be1"
address = "198.18.0.11"
{mac}
"""


class FakeCache:
    """Answers like NetlinkCache.egress from a table: address -> (ifindex, ifname, next hop MAC or None, up)."""

    def __init__(self, table: dict[str, tuple[int, str, bytes | None, bool]]) -> None:
        self.table, self.asked = table, []

    def egress(self, dst: int) -> Path | None:
        self.asked.append(dst)
        found = next((v for k, v in self.table.items() if ip_to_int(k) == dst), None)
        if found is None:
            return None
        ifindex, ifname, mac, up = found
        return Path(ifindex, ifname, LB_MAC, 1500, 1400, dst, mac, up)


def egress(table, gateway: str = "", mac: str = "") -> tuple[Egress, FakeCache]:
    cache = FakeCache(table)
    out = Egress(cache, lambda ifindex, ifname: f"port:{ifname}")
    out.install(build_snapshot(parse_config(CONFIG.format(gateway=gateway, mac=mac))))
    return out, cache


def frame_to(dst: str) -> bytearray:
    frame = bytearray(34)
    frame[30:34] = ip_to_int(dst).to_bytes(4, "big")
    return frame


def test_a_backend_frame_follows_the_route_to_the_backend_not_the_frames_destination():
    out, _ = egress({"198.18.0.11": (2, "eth1", BE_MAC, True)})
    dsr = Decision(FORWARD, INBOUND, "web", "be1", "dsr")  # the frame still says VIP: the backend decides
    assert out.target(frame_to("198.19.0.100"), dsr) == ("port:eth1", BE_MAC + LB_MAC)


def test_replies_follow_the_route_to_the_client_or_the_configured_gateway():
    out, _ = egress({"198.18.1.10": (3, "eth2", CLIENT_MAC, True), "198.18.0.1": (2, "eth1", GW_MAC, True)})
    reply = Decision(FORWARD, OUTBOUND, "web", "be1", "nat")
    assert out.target(frame_to("198.18.1.10"), reply) == ("port:eth2", CLIENT_MAC + LB_MAC)
    out, _ = egress({"198.18.1.10": (3, "eth2", CLIENT_MAC, True), "198.18.0.1": (2, "eth1", GW_MAC, True)},
                    gateway='gateway = "198.18.0.1"')
    assert out.target(frame_to("198.18.1.10"), reply) == ("port:eth1", GW_MAC + LB_MAC)


def test_no_route_no_neighbour_and_link_down_are_named_drops_never_a_guess():
    reply = Decision(FORWARD, OUTBOUND, "web", "be1", "nat")
    out, _ = egress({"198.18.1.11": (3, "eth2", None, True), "198.18.1.12": (3, "eth2", CLIENT_MAC, False)})
    assert out.target(frame_to("198.18.1.99"), reply) == NO_ROUTE
    assert out.target(frame_to("198.18.1.11"), reply) == NO_NEIGHBOUR
    assert out.target(frame_to("198.18.1.12"), reply) == LINK_DOWN
    assert not out.memo  # failures are not remembered: the next frame asks again


def test_a_configured_backend_mac_wins_and_answers_are_memoised_until_a_change():
    out, cache = egress({"198.18.0.11": (2, "eth1", None, True)}, mac='mac = "02:00:00:00:00:0b"')
    dec = Decision(FORWARD, INBOUND, "web", "be1", "dsr")
    assert out.target(frame_to("198.19.0.100"), dec) == ("port:eth1", bytes.fromhex("02000000000b") + LB_MAC)
    out.target(frame_to("198.19.0.100"), dec)
    assert len(cache.asked) == 1
    out.forget()
    out.target(frame_to("198.19.0.100"), dec)
    assert len(cache.asked) == 2
