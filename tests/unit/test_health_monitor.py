"""The HealthMonitor seam the daemon uses: results -> states -> events, RTT to lrt; fake socket and clock."""

from __future__ import annotations

from pktlb.core.config import BackendConfig, parse_config
from pktlb.core.health import DOWN, INIT, UP, HealthEvent
from pktlb.daemon.health.monitor import HealthMonitor
from tests.unit.test_prober_unit import FakeSocket, echo_reply

CONFIG = """
[lb]
address = "198.18.0.2"
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "nat"
[service.health]
checks = ["icmp"]
interval = 0.2
timeout = 0.5
rise = 2
fall = 3
[[service.backend]]
name = "be1"
address = "198.18.0.11"
[[service.backend]]
name = "be2"
address = "198.18.0.12"
"""


class Backends(FakeSocket):
    """Answers every echo request from the addresses in ``alive``, 1 ms later."""

    def __init__(self) -> None:
        super().__init__()
        self.alive = {"198.18.0.11", "198.18.0.12"}

    def send_echo(self, dst, ident, seq, payload) -> None:
        super().send_echo(dst, ident, seq, payload)
        if dst in self.alive:
            from pktlb.adapters.icmp_socket import payload_nonce

            self.inbox.append(echo_reply(dst, ident, seq, payload_nonce(payload)))


def run(monitor: HealthMonitor, start: float, until: float) -> float:
    """Wake when the monitor asks, deliver replies 1 ms after they were sent."""
    now = start
    while now < until:
        monitor.run_due(now)
        now += 0.001
        for fd in monitor.filenos():
            monitor.on_readable(fd, now)
        now = max(now, monitor.due())
    return now


def test_link_loss_detected_within_interval_times_fall_plus_timeout() -> None:
    sock = Backends()
    events: list[HealthEvent] = []
    rtts: list[tuple[str, str, float]] = []
    monitor = HealthMonitor(parse_config(CONFIG), now=0.0, on_event=events.append,
                            on_rtt=lambda s, b, r: rtts.append((s, b, r)), checker_options={"icmp": {"sock": sock}})
    assert monitor.forwarding_states() == {("web", "be1"): UP, ("web", "be2"): UP}
    run(monitor, 0.0, 1.0)
    assert [(e.backend, e.old, e.new) for e in events] == [("be1", INIT, UP), ("be2", INIT, UP)]
    assert rtts and all(abs(r - 0.001) < 1e-9 for _, _, r in rtts)

    sock.alive.discard("198.18.0.12")
    cut = 1.0
    run(monitor, cut, 3.0)
    down = [e for e in events if e.new == DOWN]
    assert len(down) == 1 and down[0].backend == "be2" and down[0].forwarding_changed
    assert down[0].at - cut <= 0.2 * 3 + 0.5
    assert monitor.forwarding_states()[("web", "be2")] == DOWN
    assert monitor.forwarding_states()[("web", "be1")] == UP

    sock.alive.add("198.18.0.12")
    run(monitor, 3.0, 4.0)
    back = events[-1]
    assert (back.backend, back.new) == ("be2", UP) and back.at - 3.0 <= 0.2 * 2 + 0.01
    rows = {r["backend"]: r for r in monitor.summaries()}
    assert rows["be2"]["changes"] == 3 and rows["be2"]["checks"][0]["status"] == "L3OK"
    assert monitor.counters()["icmp"]["timeouts"] >= 3
    monitor.close()
    assert sock.closed


def test_backends_added_and_removed_at_run_time() -> None:
    sock = Backends()
    config = parse_config(CONFIG)
    monitor = HealthMonitor(config, now=0.0, on_event=lambda e: None, checker_options={"icmp": {"sock": sock}})
    monitor.add_backend(config.services[0], BackendConfig("be3", "198.18.0.13", 80), "198.18.0.2", 0.0)
    monitor.remove_backend("web", "be1")
    run(monitor, 0.0, 1.0)
    assert set(monitor.forwarding_states()) == {("web", "be2"), ("web", "be3")}
    assert {s[1] for s in sock.sent} == {"198.18.0.12", "198.18.0.13"}
    assert monitor.book.states[("web", "be3")].state == DOWN  # nobody answers for 198.18.0.13


class SignallingBackends(Backends):
    """Like ``Backends``, but its descriptor turns readable when a reply is queued (for a real reactor)."""

    def __init__(self) -> None:
        super().__init__()
        import socket

        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def send_echo(self, dst, ident, seq, payload) -> None:
        super().send_echo(dst, ident, seq, payload)
        self._w.send(b"!")

    def receive(self) -> list[bytes]:
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass
        return super().receive()

    def close(self) -> None:
        super().close()
        self._r.close()
        self._w.close()


def test_attach_runs_the_monitor_inside_the_daemon_reactor() -> None:
    from pktlb.daemon.reactor import Reactor

    reactor = Reactor()
    sock = SignallingBackends()
    sock.alive.discard("198.18.0.12")
    events: list[HealthEvent] = []
    text = CONFIG.replace("interval = 0.2", "interval = 0.02").replace("timeout = 0.5", "timeout = 0.05")
    monitor = HealthMonitor(parse_config(text), now=reactor.clock(), on_event=events.append,
                            checker_options={"icmp": {"sock": sock}})
    try:
        monitor.attach(reactor)
        reactor.run(lambda: None, until=lambda: len(events) >= 2 or not reactor.timers)
    finally:
        monitor.close()
        reactor.close()
    assert sorted((e.backend, e.new) for e in events) == [("be1", UP), ("be2", DOWN)]
    assert len(reactor.timers) <= 2  # one timer chain, not one timer per wake-up
