"""The health checks' RTT feeds the ``lrt`` scheduler: a slow backend gets fewer new flows.

The daemon wires ``HealthMonitor(on_rtt=...)`` to ``DataPath.flows.load(service, backend).observe_rtt``
(pktlb/daemon/forwarder.py); this test does the same with a fake ICMP socket whose backends
answer after different delays on a fake clock, then pushes new TCP flows through the data path.
"""

from __future__ import annotations

from collections import Counter

from pktlb.adapters.icmp_socket import payload_nonce
from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.daemon.health.monitor import HealthMonitor
from pktlb.lab.addressing import lab_macs
from tests.frames import BACKENDS, client_frame, config_text, tcp
from tests.unit.test_prober_unit import FakeSocket, echo_reply

HEALTH = """
[service.health]
checks = ["icmp"]
interval = 0.1
timeout = 0.5
"""
FLOWS = 60


class DelayedBackends(FakeSocket):
    """Answers each echo request after the delay set for its destination, on the caller's clock."""

    def __init__(self, delays: dict[str, float]) -> None:
        super().__init__()
        self.delays = delays
        self.now = 0.0
        self.pending: list[tuple[float, bytes]] = []

    def send_echo(self, dst, ident, seq, payload) -> None:
        super().send_echo(dst, ident, seq, payload)
        self.pending.append((self.now + self.delays[dst], echo_reply(dst, ident, seq, payload_nonce(payload))))

    def receive(self) -> list[bytes]:
        due = [packet for at, packet in self.pending if at <= self.now]
        self.pending = [(at, packet) for at, packet in self.pending if at > self.now]
        return due


def flows_per_backend(delays: dict[str, float]) -> tuple[Counter[str], dict[str, float | None]]:
    """Run the checks for 2 s of fake time with RTT fed to the data path, then open FLOWS new flows."""
    config = parse_config(config_text("nat", scheduler="lrt", extra=HEALTH))
    datapath = DataPath(config, macs=lab_macs(config))
    sock = DelayedBackends(delays)
    monitor = HealthMonitor(config, now=0.0, on_event=lambda event: None,
                            on_rtt=lambda svc, be, rtt: datapath.flows.load(svc, be).observe_rtt(rtt),
                            checker_options={"icmp": {"sock": sock}})
    try:
        while sock.now < 2.0:
            monitor.run_due(sock.now)
            for fd in monitor.filenos():
                monitor.on_readable(fd, sock.now)
            sock.now = round(sock.now + 0.001, 6)
    finally:
        monitor.close()
    rtts = {name: load.rtt for name, load in datapath.flows.loads_for("web").items()}
    chosen: Counter[str] = Counter()
    for i in range(FLOWS):
        _, decision = datapath.handle(client_frame(tcp(sport=41000 + i), src=f"198.18.1.{100 + i % 50}"), 2.0)
        chosen[decision.backend] += 1
    return chosen, rtts


def test_a_backend_with_a_higher_rtt_gets_fewer_new_flows() -> None:
    fast, slow = 0.001, 0.020
    chosen, rtts = flows_per_backend({BACKENDS["be1"]: fast, BACKENDS["be2"]: slow, BACKENDS["be3"]: fast})
    # The estimates the scheduler sees are the measured ICMP round trips (to the fake clock's 1 ms step).
    assert abs(rtts["be1"] - fast) < 0.0015 and abs(rtts["be3"] - fast) < 0.0015
    assert abs(rtts["be2"] - slow) < 0.0015
    assert sum(chosen.values()) == FLOWS
    # lrt scores rtt x (active flows + 1): be2 gets a flow only once the others hold ~20 times as many.
    assert chosen["be2"] <= 4 and chosen["be1"] >= 25 and chosen["be3"] >= 25, chosen


def test_equal_rtts_share_new_flows_evenly() -> None:
    chosen, rtts = flows_per_backend({address: 0.005 for address in BACKENDS.values()})
    assert all(abs(rtt - 0.005) < 0.0015 for rtt in rtts.values())
    assert set(chosen) == {"be1", "be2", "be3"} and max(chosen.values()) - min(chosen.values()) <= 1, chosen
