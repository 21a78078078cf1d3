"""One run of `pktlb compare`: one mode with one engine (pktlb's own, or the kernel's nftables baseline:
DNAT for nat and fullnat, a netdev ingress MAC rewrite for dsr) in a lab built, measured and removed:

1. lab up (a fresh lab per run, prefix ``pktlb-cmp-`` by default), then the VIP is polled until it answers;
2. warm-up: one second of load;
3. probe: one request from each of the client's extra source addresses (new connection each):
   which backend answered (the spread), which client address it saw, and the frames the LB handled
   for them (engine counters, and a capture on the LB's interface);
4. captures: one request seen at the client, at the LB and at the backend that served it (pcaps);
5. MTU: a request with a 4000-byte header, after which the client's route cache holds the path MTU;
6. load: wrk for --duration seconds (or ab for --requests requests), with the engine's CPU time
   and counters read before and after;
7. keep-alive: which backends answer 4 requests on one client connection, then wrk again with
   kept-alive client connections (half the duration); the backends' accepted connections are
   counted around both load runs (``connections.py``: what tells L4 from L7);
8. throughput: a timed HTTP download through the VIP, and iperf3 both ways (client to backend,
   and -R) where the lab's load balancer has a VIP service on the iperf3 port.

Mode l7 (an HTTP proxy owning the VIP, ``pktlb lab up --mode l7``) is measured the same way with
``pktlb proxy`` and HAProxy, with the L7 scheduler (rr by default: per request).

The lab is torn down after the run, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from pktlb.adapters.configfile import load_config
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.l7 import proxy_connections_opened
from pktlb.lab.manage import existing_namespaces, lab_down, lab_up
from pktlb.lab.netns import CommandError, Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.state import load_state
from pktlb.lab.status import lab_status
from pktlb.lab.topology import LabError, LabOptions, mode_default
from pktlb.reports.compare import workload as wl
from pktlb.reports.compare.capture_stats import count_frames, lb_frames
from pktlb.reports.compare.connections import (
    BackendConnections,
    one_connection_spread,
    what_the_backend_learned,
)
from pktlb.reports.compare.lab_facts import (
    TRAFFIC,
    backend_counters,
    cpu_seconds,
    cpu_us_per_request,
    delta,
    engine_stats,
    mode_requirements,
    per_request,
    totals,
    traffic_per_request,
)
from pktlb.reports.compare.plan import CompareSettings, Progress, lab_engine

PROBE_SOURCES = 64
READY_TIMEOUT = 20.0
CAPTURE_GRACE = 0.3  # seconds after the request for its last ACKs to reach every capture
# The fast path's counters reach the engine's stats once a second: they count as settled once they held
# still for SETTLED seconds (polled every SETTLE_POLL), at most SETTLE_TIMEOUT.
SETTLED, SETTLE_POLL, SETTLE_TIMEOUT = 1.3, 0.1, 6.0
CAPTURE_FILTER = "tcp port {port} or ip proto 4"


def _read_backs(stats: dict[str, Any]) -> int | None:
    """The engine's count of fast-path read-back ticks (None from an engine that does not report it)."""
    value = (stats.get("fastpath") or {}).get("read_backs")
    return int(value) if value is not None else None


class ModeRun:
    """One mode with one engine: build the lab, measure, remove it."""

    def __init__(self, settings: CompareSettings, mode: str, engine: str, label: str, progress: Progress):
        self.settings, self.mode, self.engine, self.label = settings, mode, engine, label
        self.lab_engine, self.fastpath = lab_engine(engine)
        self.say = lambda text: progress(f"[{label}] {text}")
        self.prefix = settings.prefix
        self.result: dict[str, Any] = {"mode": mode, "engine": engine, "available": True, "errors": []}
        if self.fastpath != "off":
            self.result["fastpath"] = self.fastpath

    def ns(self, node: str) -> str:
        return self.prefix + node

    def run(self, data: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        created = False  # tear down only a lab this run built (never someone else's at the same prefix)
        try:
            if existing_namespaces(self.prefix) or load_state(self.prefix):
                raise LabError(f"a lab already exists with prefix {self.prefix!r}: remove it with "
                               f"`pktlb lab down --prefix {self.prefix}` or pass another --prefix")
            layer = mode_default(data, self.mode, "layer", 4)
            scheduler = self.settings.scheduler if layer == 4 else self.settings.l7_scheduler
            self.say(f"lab up ({self.settings.backends} backends, scheduler {scheduler})")
            created = True
            up = lab_up(LabOptions(mode=self.mode, backends=self.settings.backends, scheduler=scheduler,
                                   prefix=self.prefix, engine=self.lab_engine, fastpath=self.fastpath,
                                   topology=self.settings.topology))
            if up.engine_problem:
                raise LabError(up.engine_problem)
            self.plan = up.plan
            self.result.update(layer=up.plan.layer, scheduler=scheduler)
            self.result["summary"] = data["mode"][self.mode].get("summary", "")
            self.result["decap"] = up.plan.decap_kind
            self.result["requirements"] = mode_requirements(data, self.mode, self.lab_engine, up.plan.decap_kind,
                                                            self.settings.topology)
            self._measure()
        except (LabError, wl.WorkloadError, CommandError, ControlClientError, OSError) as exc:
            self.result["errors"].append(str(exc))
            self.say(f"FAILED: {exc}")
        except Exception as exc:  # noqa: BLE001 - an unexpected answer spoils this run, not the other modes
            self.result["errors"].append(f"{type(exc).__name__}: {exc}")
            self.say(f"FAILED ({type(exc).__name__}): {exc}")
        finally:
            if created:
                self.say("lab down")
                lab_down(self.prefix)
        self.result["seconds"] = round(time.monotonic() - started, 1)
        return self.result

    def _measure(self) -> None:
        c = self.plan.constants
        self.vip, self.port = c["vip"], int(c["service_port"])
        self.url = f"http://{self.vip}:{self.port}/"
        client = self.plan.node("client")
        self.client_address = client.address
        self.sources = [a.split("/")[0] for a in client.interface("eth0").addresses[1:]][:PROBE_SOURCES]
        status = lab_status(self.prefix)
        lb_node = next(n for n in status["nodes"] if n["role"] == "lb")
        self.engine_pid = next((s["pid"] for s in lb_node["services"] if s["service"] == self.plan.engine_service), None)
        self.lb_mtu = next((i["mtu"] for i in lb_node["interfaces"] if i["ifname"] == "eth0"), 1500)
        self.socket = (load_config(str(LabPaths.at(self.plan.statedir).config)).lb.control_socket
                       if self.lab_engine == "pktlb" and self.plan.layer == 4 else None)
        self.lb_mac = self.plan.node("lb").interface("eth0").mac
        arms = [iface for iface in self.plan.node("lb").interfaces if iface.segment]  # two-arm: eth0 and eth1
        self.lb_arms, self.lb_macs = [iface.ifname for iface in arms], [iface.mac or "" for iface in arms]
        self.say("waiting for the VIP to answer")
        self.result["ready_seconds"] = round(wl.await_vip(self.ns("client"), self.url, timeout=READY_TIMEOUT), 2)
        if self.fastpath != "off":
            self._check_fastpath()
        self.say("warm-up: 1 s of load")
        wl.run_wrk(self.ns("client"), self.url, 1)
        self._probe()
        self._capture_one_request()
        self._mtu()
        self._load()
        self._keepalive()
        self._throughput()

    def _stats(self) -> dict[str, dict[str, int]] | None:
        if not self.socket:
            return None
        if self.fastpath == "off":
            return engine_stats(self.socket)
        # With the fast path the engine adds what the kernel forwarded once per read-back tick: the figures
        # cover exactly the run once a read-back that began after it is done (``read_backs`` grew: the tick
        # and the control socket share the engine's one loop; a tick late under load once fooled a wait on
        # stillness alone) and the counters have held still for longer than a tick (a big flow map is read
        # a slice per tick).
        answer = request(self.socket, {"cmd": "stats"})
        ticks = _read_backs(answer)
        last, since, deadline = backend_counters(answer), time.monotonic(), time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            ticked = ticks is None or (_read_backs(answer) or 0) > ticks
            if ticked and time.monotonic() - since >= SETTLED:
                break
            time.sleep(SETTLE_POLL)
            answer = request(self.socket, {"cmd": "stats"})
            now = backend_counters(answer)
            if now != last:
                last, since = now, time.monotonic()
        return last

    def _probe(self) -> None:
        self.say(f"probe: {len(self.sources)} requests, one per source address")
        tmps = [self.settings.out / "captures" / f".{self.mode}-{self.engine}-probe-{arm}.pcap" for arm in self.lb_arms]
        captures = []
        try:
            for arm, tmp in zip(self.lb_arms, tmps, strict=True):
                captures.append(wl.Capture(self.ns("lb"), arm, tmp, f"tcp port {self.port}", max_packets=20000,
                                           inbound_only=True).start())
            before = self._stats()
            answers = wl.probe_requests(self.ns("client"), self.url, self.sources)
            time.sleep(CAPTURE_GRACE)
            for capture in captures:
                capture.stop()
            after = self._stats()
            frames = lb_frames([str(t) for t in tmps], self.lb_macs, self.port)
        finally:
            for capture in captures:
                capture.stop()
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        ok = [a for a in answers if "backend" in a]
        self.result["spread"] = {"probe": dict(sorted(Counter(a["backend"] for a in ok).items()))}
        seen_as = Counter("own address" if a["client"] == src else a["client"]
                          for a, src in zip(answers, self.sources, strict=False) if "client" in a)
        self.result["probe"] = {"requests": len(self.sources), "answered": len(ok), "backend_saw": dict(seen_as)}
        n = len(ok)
        captured = traffic_per_request(frames.as_dict(), n)
        lb: dict[str, Any] = {"requests": n, "capture": {**captured,
                                                         "method": f"tcpdump -Q in on the LB's {', '.join(self.lb_arms)}"}}
        if before is not None and after is not None:
            lb.update(method="engine counters (pktlb stats) before and after the probe",
                      **traffic_per_request(totals(delta(before, after)), n))
        else:
            lb.update(method=f"capture on the LB's {', '.join(self.lb_arms)} (the kernel has no per-service counters "
                             "here)", **captured)
        self.result["lb"] = lb

    def _capture_one_request(self) -> None:
        self.say("captures: one request at the client, the LB and the backends")
        folder = self.settings.out / "captures"
        stem = self.mode if self.engine == "pktlb" else f"{self.mode}-{self.engine}"
        bpf = CAPTURE_FILTER.format(port=self.port)
        places = {"client": (self.ns("client"), folder / f"{stem}-client.pcap"),
                  "lb": (self.ns("lb"), folder / f"{stem}-lb.pcap")}
        for arm in self.lb_arms[1:]:  # a two-armed LB: its client-side arm too
            places[f"lb-{arm}"] = (self.ns("lb"), folder / f"{stem}-lb-{arm}.pcap")
        for backend in self.plan.by_role("backend"):
            places[backend.name] = (backend.namespace, folder / f".{stem}-{backend.name}.pcap")
        captures: dict[str, wl.Capture] = {}
        try:
            for place, (namespace, path) in places.items():
                ifname = place[3:] if place.startswith("lb-") else "eth0"
                captures[place] = wl.Capture(namespace, ifname, path, bpf, max_packets=500).start()
            answer = wl.curl_json(self.ns("client"), self.url)
            time.sleep(CAPTURE_GRACE)
            served = answer["backend"]
            backend_path = folder / f"{stem}-backend.pcap"
            for capture in captures.values():
                capture.stop()
            places[served][1].replace(backend_path)
        finally:
            for capture in captures.values():
                capture.stop()
            for backend in self.plan.by_role("backend"):  # the backends that did not serve it
                places[backend.name][1].unlink(missing_ok=True)
        lb_pcaps = [str(places["lb"][1])] + [str(places[f"lb-{arm}"][1]) for arm in self.lb_arms[1:]]
        frames = lb_frames(lb_pcaps, self.lb_macs, self.port)
        self.result["request"] = {"client_address": self.client_address, "answer": answer,
                                  "backend_saw": answer["client"], "lb_frames": frames.as_dict()}
        self.result["captures"] = {
            "client": str(places["client"][1]), "lb": str(places["lb"][1]), "backend": str(backend_path),
            "backend_node": served,
            "frames": {"client": count_frames(str(places["client"][1])), "lb": count_frames(str(places["lb"][1])),
                       "backend": count_frames(str(backend_path))}}
        self.result["header_overhead_bytes"] = frames.header_overhead
        self.result["learned"] = what_the_backend_learned(answer, self.client_address)

    def _mtu(self) -> None:
        self.say("MTU: one request with a 4000-byte header")
        try:
            wl.curl_json(self.ns("client"), self.url, headers=["X-Pad: " + "x" * 4000])
            big_ok = True
        except (wl.WorkloadError, CommandError) as exc:
            big_ok = False
            self.result["errors"].append(f"the 4000-byte request failed: {exc}")
        learned = wl.path_mtu(self.ns("client"), self.vip)
        overhead = self.result.get("header_overhead_bytes") or 0
        self.result["mtu"] = {"lb_link": self.lb_mtu, "inner": self.lb_mtu - overhead, "client_path_mtu": learned,
                              "big_request_ok": big_ok}

    def _load(self) -> None:
        s = self.settings
        what = f"ab -n {s.requests}" if s.requests else f"wrk {s.duration:g} s"
        self.say(f"load: {what}, {wl.CONNECTIONS} connections, a new connection per request")
        cpu_before, before = cpu_seconds(self.engine_pid), self._stats()
        counting = self._backend_connections().start()
        if s.requests:
            http = wl.run_ab(self.ns("client"), self.url, s.requests, s.out)
        else:
            http = wl.run_wrk(self.ns("client"), self.url, s.duration)
        cpu_after, after = cpu_seconds(self.engine_pid), self._stats()
        self.result["http"] = http.as_dict()
        self.result["backend_connections"] = {"close": counting.stop(http.requests)}
        lb = self.result["lb"]
        if cpu_before is not None and cpu_after is not None:
            lb["cpu_us_per_request"] = cpu_us_per_request(cpu_before, cpu_after, http.requests)
            lb["cpu_method"] = "utime+stime of the engine process (/proc/PID/stat) over the load run"
        else:
            lb["cpu_us_per_request"] = None
            lb["cpu_method"] = ("n/a: the kernel forwards in softirq context, which is not attributable to "
                                "the LB namespace on a shared machine")
        if before is not None and after is not None:
            changes = delta(before, after)
            total = totals(changes)
            lb["load_run"] = {k: per_request(total[k], http.requests) for k in TRAFFIC}
            self.result["spread"]["load"] = {name: c["new_flows"] for name, c in sorted(changes.items())}

    def _backend_connections(self) -> BackendConnections:
        plan = self.plan
        counter = (lambda: proxy_connections_opened(plan)) if plan.layer == 7 else None
        return BackendConnections((b.namespace for b in plan.by_role("backend")), counter)

    def _keepalive(self) -> None:
        """4 requests on one client connection, then wrk over kept-alive client connections."""
        self.say("keep-alive: 4 requests on one client connection")
        self.result["one_connection"] = one_connection_spread(self.ns("client"), self.url)
        seconds = max(1, round(self.settings.duration / 2))
        self.say(f"load: wrk {seconds} s, {wl.CONNECTIONS} kept-alive connections")
        cpu_before = cpu_seconds(self.engine_pid)
        counting = self._backend_connections().start()
        http = wl.run_wrk(self.ns("client"), self.url, seconds, keepalive=True)
        cpu_after = cpu_seconds(self.engine_pid)
        self.result["http_keepalive"] = http.as_dict()
        self.result["backend_connections"]["keepalive"] = counting.stop(http.requests)
        cpu_us = cpu_us_per_request(cpu_before, cpu_after, http.requests)
        if cpu_us is not None:
            self.result["http_keepalive"]["cpu_us_per_request"] = cpu_us

    def _check_fastpath(self) -> None:
        """The engine's own word that its fast path runs at the hook asked for (else this run is void)."""
        said = request(str(self.socket), {"cmd": "stats"}).get("fastpath") or {}
        if said.get("hook") != self.fastpath:
            raise LabError(f"the engine runs without its fast path at {self.fastpath}: {said.get('reason', said)}")
        self.result["fastpath_stats"] = said

    def _throughput(self) -> None:
        client = self.ns("client")
        self.say(f"throughput: HTTP download of {wl.DOWNLOAD_BYTES >> 20} MiB")
        self.result["throughput"] = wl.run_download(client, self.vip, self.port).as_dict()
        iperf_port = int(self.plan.constants.get("iperf_port", 5201))
        if not self._vip_serves(iperf_port):
            self.result["iperf3"] = {"unavailable": f"this lab's {self.engine} load balancer has no VIP service on "
                                                    f"the iperf3 port {iperf_port}"}
            return
        iperf: dict[str, Any] = {}
        for direction, reverse in (("upload", False), ("download", True)):
            self.say(f"throughput: iperf3 {direction} {self.settings.duration:g} s")
            try:
                iperf[direction] = wl.run_iperf3(client, self.vip, iperf_port, self.settings.duration,
                                                 reverse=reverse).as_dict()
                for failure in iperf[direction]["retried_after"]:
                    self.result.setdefault("warnings", []).append(f"iperf3 {direction} retried after: {failure}")
            except (wl.WorkloadError, CommandError) as exc:  # the HTTP figures stand without it
                iperf[direction] = {"error": str(exc)}
                self.result.setdefault("warnings", []).append(f"iperf3 {direction}: {exc}")
        self.result["iperf3"] = iperf

    def _vip_serves(self, port: int) -> bool:
        """Whether the lab's load balancer has a service for the VIP on this port."""
        if self.lab_engine == "pktlb":
            config = load_config(str(LabPaths.at(self.plan.statedir).config))
            return any(s.port == port and s.protocol == "tcp" for s in config.services)
        done = Namespace(self.ns("lb")).run(["nft", "list", "ruleset"], timeout=10, check=False)
        return f"dport {port} " in done.stdout
