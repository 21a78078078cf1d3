"""The failover harness of the health lab tests (``test_health_engine.py``).

Small health settings (interval 0.2 s, rise 2, fall 3, timeout 0.5 s) set by rewriting the lab's
engine config and asking the engine to reload; a steady loop of client requests from the client's 64
source addresses, and a rate-limited download from another backend.  ``failover`` cuts one backend
off and measures, polling the engine's control socket every 20 ms until it sees the change:

- detection: from the cut (the moment the command making it returns) to the engine's decision that
  the backend is "down" (bound interval x fall + timeout),
- recovery: from the restore to its decision "up" again (bound interval x rise + timeout: the first
  good probe may wait for an ARP answer);

each plus SLACK for timer wake-ups and POLL_MARGIN.  The decision time is the engine's own
(``health.since_monotonic`` in stats, its time.monotonic(): CLOCK_MONOTONIC, the test's clock too),
so the poll period and the control socket's round trip are not in the figures; the requests that
must succeed are still those started after the test saw the change (``Seen``, later);

and checks that requests started after detection all succeed on the other backends, that the
download from the other backend completes intact, that the Maglev ring moved about the failed
backend's slots only, and that new flows reach the backend again once it is back.  The cuts
themselves: ``link_cut`` (a link down) and ``nft_in`` (an nftables rule in a node's namespace).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pktlb.lab.httpd import expected_sha256
from tests.lab.engine_helpers import ask, predicted_backend

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.5, 2, 3
SLACK = 0.4  # timer, select() and scheduling slack on a busy 2-vCPU VM (the measured figure is printed)
POLL = 0.02  # how often the test asks the engine for its backends' states
POLL_MARGIN = 0.1  # one poll period plus a control-socket round trip on a loaded machine
DETECT_BOUND = INTERVAL * FALL + TIMEOUT + SLACK + POLL_MARGIN
RECOVER_BOUND = INTERVAL * RISE + TIMEOUT + SLACK + POLL_MARGIN
CUT_TABLE = "pktlb_hc_cut"

# Runs in the client namespace: requests from every source address, one line per request.
CLIENT_LOOP = r"""
import http.client, json, os, sys, threading, time
vip, duration, stop_file, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sources = [f"198.18.1.{i}" for i in range(100, 164)]
end, lock = time.monotonic() + duration, threading.Lock()
def worker(k):
    i = k
    while time.monotonic() < end and not os.path.exists(stop_file):
        src, i = sources[i % len(sources)], i + threads
        start = time.monotonic()
        conn = http.client.HTTPConnection(vip, 80, timeout=3.0, source_address=(src, 0))
        try:
            conn.request("GET", "/")
            result = json.loads(conn.getresponse().read())["backend"]
        except Exception as exc:
            result = "error:" + type(exc).__name__
        finally:
            conn.close()
        with lock:
            print(f"{start:.6f} {time.monotonic():.6f} {src} {result}", flush=True)
        time.sleep(0.03)
pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
[t.start() for t in pool]
[t.join() for t in pool]
"""


@dataclass(frozen=True)
class Request:
    start: float
    end: float
    source: str
    result: str  # the backend that answered, or "error:<exception>"

    @property
    def ok(self) -> bool:
        return not self.result.startswith("error:")


class ClientLoop:
    """A steady, bounded stream of client requests through the VIP, read back when stopped."""

    def __init__(self, lab, workdir: Path, threads: int = 3, duration: float = 60.0) -> None:
        self.stop_file = workdir / "client-loop.stop"
        self.out = workdir / "client-loop.out"
        self.proc = lab.popen(
            "client", [sys.executable, "-c", CLIENT_LOOP, lab.vip, str(duration), str(self.stop_file), str(threads)],
            stdout=open(self.out, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def requests(self) -> list[Request]:
        rows = [line.split() for line in self.out.read_text().splitlines()]
        return [Request(float(r[0]), float(r[1]), r[2], r[3]) for r in rows if len(r) == 4]

    def await_requests(self, predicate: Callable[[Request], bool], count: int, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while sum(map(predicate, self.requests())) < count:
            assert self.proc.poll() is None, f"client loop exited: {self.out.read_text()[-1000:]}"
            assert time.monotonic() < deadline, f"fewer than {count} matching requests after {limit} s"
            time.sleep(0.05)

    def stop(self) -> list[Request]:
        self.stop_file.touch()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.requests()


class Download:
    """A rate-limited curl from a chosen (source, port), so the engine's scheduler sends it to a known backend."""

    def __init__(self, lab, backend: str, size: int, rate: str, first_port: int) -> None:
        self.size = size
        self.source, self.port = find_flow_to(lab, backend, first_port)
        self.client = f"{self.source}:{self.port}"
        cmd = (f"curl -sS --max-time 40 --interface {self.source} --local-port {self.port} --limit-rate {rate} "
               f"http://{lab.vip}/bytes?n={size} | sha256sum")
        self.proc = lab.popen("client", ["bash", "-o", "pipefail", "-c", cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def finish(self, timeout: float = 45) -> tuple[int, str, str]:
        """(curl's exit status, sha256 of what arrived, curl's error text)."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (out.split() or [""])[0], err.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def find_flow_to(lab, backend: str, first_port: int) -> tuple[str, int]:
    """A client (source, port) below the ephemeral range that the full, healthy table sends to ``backend``."""
    for i in range(64):
        source, port = f"198.18.1.{100 + i}", first_port + i
        if predicted_backend(lab, source, port) == backend:
            return source, port
    raise AssertionError(f"no source/port among 64 tries goes to {backend}")


def configure_health(lab, checks: list[str], *, encapsulated: bool = False, on_backend_down: str | None = None) -> None:
    """Rewrite the web service's [service.health] (and policy) in the lab's engine config, reload, await all up."""
    path = lab.paths.config
    text = path.read_text()
    start = text.index("[service.health]\n")
    end = text.index("\n\n", start)
    table = [f"[service.health]\nchecks = {json.dumps(checks)}", f"interval = {INTERVAL}", f"timeout = {TIMEOUT}",
             f"rise = {RISE}", f"fall = {FALL}", f"encapsulated_icmp = {str(encapsulated).lower()}"]
    policy = f'on_backend_down = "{on_backend_down}"\n' if on_backend_down else ""
    path.write_text(text[:start] + policy + "\n".join(table) + text[end:])
    answer = ask(lab, {"cmd": "reload"})
    assert answer["reloaded"], answer
    deadline = time.monotonic() + 10
    while True:
        rows = web(ask(lab, {"cmd": "stats"}))["backends"]
        health = [be["health"] for be in rows]
        if all(h and h["state"] == "up" and [c["type"] for c in h["checks"]] == checks for h in health):
            return
        assert time.monotonic() < deadline, f"backends not all up with checks {checks}: {health}"
        time.sleep(0.05)


def web(stats: dict) -> dict:
    return next(s for s in stats["services"] if s["name"] == "web")


def forwarding_state(lab, backend: str) -> str:
    """The state the engine's control plane built its current snapshot with."""
    return next(r["state"] for r in ask(lab, {"cmd": "backends"}) if r["service"] == "web" and r["backend"] == backend)


@dataclass(frozen=True)
class Seen:
    at: float  # the test's time.monotonic() when it first saw the state (an upper bound of the change)
    decided: float  # the engine's time.monotonic() when its health checks made that state (health.since_monotonic)


def await_state(lab, backend: str, state: str, limit: float) -> Seen:
    """Poll every POLL seconds until the engine forwards with ``state``; when seen and when the engine decided."""
    deadline = time.monotonic() + limit
    while True:
        seen = forwarding_state(lab, backend)
        now = time.monotonic()
        if seen == state:
            health = next(be for be in web(ask(lab, {"cmd": "stats"}))["backends"] if be["name"] == backend)["health"]
            assert health and health["state"] == state and health.get("since_monotonic") is not None, health
            return Seen(now, health["since_monotonic"])
        assert now < deadline, f"{backend} still {seen}, not {state}, after {limit:.2f} s"
        time.sleep(POLL)


def flow_row(lab, client: str) -> dict | None:
    return next((f for f in ask(lab, {"cmd": "flows"})["flows"] if f["client"] == client), None)


def await_flow(lab, client: str, predicate: Callable[[dict], bool], limit: float = 5.0) -> dict:
    deadline = time.monotonic() + limit
    while True:
        row = flow_row(lab, client)
        if row is not None and predicate(row):
            return row
        assert time.monotonic() < deadline, f"flow {client} never matched: {row}"
        time.sleep(0.05)


def stats_line(lab, backend: str) -> str:
    """The backend's row of the web service in `pktlb stats` (text), as a student would read it."""
    done = lab.cli("stats", "-c", str(lab.paths.config))
    assert done.returncode == 0, done.stderr
    block = done.stdout.split("(service web)", 1)[1]
    return next(line for line in block.splitlines() if line.split()[:1] == [backend])


def nft_in(lab, node: str, rule: str) -> Callable[[], None]:
    """Load ``rule`` into an input chain in ``node``'s namespace; returns the function that removes it."""
    ruleset = (f"table inet {CUT_TABLE} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n"
               f"  {rule}\n }}\n}}\n")
    lab.run(node, ["nft", "-f", "-"], stdin=ruleset, check=True)
    return lambda: lab.run(node, ["nft", "delete", "table", "inet", CUT_TABLE], check=True)


def link_cut(lab, node: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Take eth0 down; restoring brings it up and puts back the routes the kernel flushed with it."""
    routes = " && ".join(f"ip route replace {r.dst} via {r.via}" + (f" mtu {r.mtu}" if r.mtu else "")
                         + (f" advmss {r.advmss}" if r.advmss else "") for r in lab.plan.node(node).routes)
    return (lambda: lab.run(node, ["ip", "link", "set", "eth0", "down"], check=True),
            lambda: lab.run(node, ["sh", "-c", "ip link set eth0 up" + (f" && {routes}" if routes else "")],
                            check=True))


@dataclass
class Outcome:
    detection: float
    recovery: float
    down_line: str
    requests: list[Request]


def failover(lab, workdir: Path, cut: Callable[[], None], restore: Callable[[], None], what: str) -> Outcome:
    """Cut be1 off under client load, with a download from be2 running; measure, restore, check everything."""
    before = web(ask(lab, {"cmd": "stats"}))
    slots = before["maglev_slots"]
    up_line = stats_line(lab, "be1")
    assert " up [" in up_line and ":L" in up_line and "OK" in up_line, up_line
    download = Download(lab, "be2", 6 * 1024 * 1024, "1500k", first_port=21000)
    loop = ClientLoop(lab, workdir)
    try:
        await_flow(lab, download.client, lambda row: row["state"] == "est")
        loop.await_requests(lambda r: r.ok, 20)
        t_start = time.monotonic()
        cut()
        t_cut = time.monotonic()  # the cut's last step (a netlink or nft call, a signal) is done by now
        down = await_state(lab, "be1", "down", DETECT_BOUND + 3)
        t_down, detection = down.at, down.decided - t_cut
        down_line = stats_line(lab, "be1")
        change = ask(lab, {"cmd": "stats"})["changes"][-1]
        assert "web/be1 health down" in change["why"], change
        moved = change["ring_moved"]["web"]
        assert slots["be1"] <= moved <= slots["be1"] + 0.03 * (sum(slots.values()) - slots["be1"]), (moved, slots)
        assert flow_row(lab, download.client)["backend"] == "be2"  # a flow to another backend stays put
        loop.await_requests(lambda r: r.start > t_down and r.end < time.monotonic(), 40)
        restore()
        t_restore = time.monotonic()
        up = await_state(lab, "be1", "up", RECOVER_BOUND + 3)
        t_up, recovery = up.at, up.decided - t_restore
        loop.await_requests(lambda r: r.start > t_up and r.result == "be1", 3)
        requests = loop.stop()
        status, digest, err = download.finish()
    finally:
        loop.stop()
        download.kill()
    assert status == 0 and digest == expected_sha256(download.size), f"download from be2 disturbed: {err}"
    after = [r for r in requests if r.start > t_down]
    failed_after = [r for r in after if not r.ok]
    in_window = [r for r in requests if t_start <= r.start <= t_down]
    during = [r for r in after if r.end < t_restore]
    print(f"\n{lab.plan.options.mode} {what}: detected in {detection:.3f} s (bound {DETECT_BOUND:.2f} s = "
          f"interval*fall+timeout {INTERVAL * FALL + TIMEOUT:.1f} + slack), back in service {recovery:.3f} s "
          f"after restore (seen by the test {(t_down - t_cut):.3f} s and {(t_up - t_restore):.3f} s after; the cut itself took {(t_cut - t_start) * 1e3:.0f} ms); maglev slots moved {moved} (be1 owned {slots['be1']}); requests: {len(requests)} in all, "
          f"{sum(not r.ok for r in in_window)} of {len(in_window)} failed between cut and detection, "
          f"{len(failed_after)} of {len(after)} failed after detection\n  stats: {down_line.strip()}")
    assert not failed_after, failed_after[:5]
    assert during and {r.result for r in during} <= {"be2", "be3"}
    assert detection <= DETECT_BOUND, f"detection {detection:.3f} s > {DETECT_BOUND:.2f} s\n{engine_log(lab)}"
    assert recovery <= RECOVER_BOUND, f"recovery {recovery:.3f} s > {RECOVER_BOUND:.2f} s\n{engine_log(lab)}"
    return Outcome(detection, recovery, down_line, requests)


def engine_log(lab, lines: int = 30) -> str:
    """The end of the engine's log (health events, snapshot changes), to explain a failed bound."""
    path = lab.paths.log("lb/engine")
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def new_flow_reaches(lab, backend: str) -> None:
    source, port = find_flow_to(lab, backend, first_port=23000)
    done = lab.run("client", ["curl", "-sS", "--max-time", "5", "--interface", source, "--local-port", str(port),
                              f"http://{lab.vip}/"])
    assert done.returncode == 0 and json.loads(done.stdout)["backend"] == backend, done.stdout + done.stderr
