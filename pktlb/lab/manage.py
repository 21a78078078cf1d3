"""`lab up`, `lab down` and `lab exec`: build a lab from its plan, record it, remove it.

`lab up` records what it is about to create before creating it (state.json with status
"building"), so a crash at any point leaves enough for `lab down` to clean up.  `lab down` stops
the supervisor and every recorded process (PID and start time checked), kills what is still inside
the lab's namespaces, deletes the namespaces (recorded ones and any whose name is the prefix plus a
lab node name) and removes the state directory.  It is idempotent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pktlb.adapters.certs import make_lab_pki
from pktlb.lab import state as st
from pktlb.lab.builder import build_steps, render_dry_run
from pktlb.lab.engine_config import checked_engine_config
from pktlb.lab.l7 import await_backends_up, engine_socket, l7_files
from pktlb.lab.netns import CommandError, Namespace, namespaces
from pktlb.lab.paths import BadPrefix, LabPaths
from pktlb.lab.steps import Step, StepError, apply_steps
from pktlb.lab.tier.apply import TierBuild, apply_tier
from pktlb.lab.tier.inspect import next_hops, sessions, wait_for
from pktlb.lab.topology import (
    LabError,
    LabOptions,
    Plan,
    check_options,
    load_topology,
    make_plan,
    node_name_pattern,
)

TIER_CONVERGE_TIMEOUT = 25.0  # seconds lab up waits for the router to route the VIP via every LB
READY_TIMEOUT = 15.0  # seconds lab up waits for every backend service to listen
ENGINE_SETTLE = 3.0  # seconds lab up watches the engine for an immediate exit (until its control socket)


def kernel_has_ipip() -> bool:
    """Whether the kernel can do IP-in-IP itself (module loaded, built in, or installable)."""
    if Path("/sys/module/ipip").exists() or Path("/sys/class/net/tunl0").exists():
        return True
    if shutil.which("modprobe") is None:
        return False
    try:
        return Namespace.current().run(["modprobe", "-n", "-q", "ipip"], timeout=5, check=False).returncode == 0
    except CommandError:
        return False


def pktlb_program() -> str:
    return str(Path(sys.executable).parent / "pktlb")


def plan_lab(options: LabOptions, data: dict[str, Any] | None = None) -> Plan:
    data = data or load_topology()
    return make_plan(options, data, statedir=str(LabPaths(options.prefix).statedir), python=sys.executable,
                     pktlb=pktlb_program(), kernel_has_ipip=kernel_has_ipip(), has_binary=shutil.which)


def tier_build(plan: Plan) -> TierBuild | None:
    """The LB tier's changes to the plan (``--lbs`` 2..8), or None for the single-LB lab."""
    if plan.options.lbs == 1:
        return None
    if plan.layer != 4:
        raise LabError(f"--lbs {plan.options.lbs}: the LB tier is built for the L4 modes (nat, fullnat, tunnel, dsr), "
                       f"not mode {plan.options.mode}")
    return apply_tier(plan, pktlb=pktlb_program())


def lab_files(plan: Plan) -> dict[str, str]:
    """The single-LB lab's config files (name in the state directory -> text): the engine's pktlb.toml,
    or in mode l7 the proxy's (and haproxy.cfg rendered from it).  ConfigError for a bad one."""
    if plan.layer == 7:
        return l7_files(plan)[0]
    text, _ = checked_engine_config(plan)
    return {LabPaths.at(plan.statedir).config.name: text}


def _files_comment(plan: Plan, files: dict[str, str]) -> str:
    return "".join(f"\n# {plan.statedir}/{name}:\n" + "".join(f"#   {line}\n" for line in text.splitlines())
                   for name, text in sorted(files.items()))


def dry_run(options: LabOptions) -> str:
    plan = plan_lab(options)
    tier = tier_build(plan)
    if tier is None:
        files = lab_files(plan)
        main = files.pop(LabPaths.at(plan.statedir).config.name)
        rendered = "".join(f"\n# {name}, rendered from it:\n{text}" for name, text in files.items())
        return render_dry_run(plan, build_steps(plan), main + rendered)
    return render_dry_run(plan, build_steps(plan) + tier.steps, _files_comment(plan, tier.files))


def existing_namespaces(prefix: str) -> list[str]:
    pattern = node_name_pattern(prefix)
    return [n for n in namespaces(prefix) if pattern.match(n)]


@dataclass
class UpResult:
    plan: Plan
    reused: bool = False
    seconds: float = 0.0
    steps: int = 0
    engine_problem: str | None = None
    warnings: list[str] = field(default_factory=list)


def lab_up(options: LabOptions, *, progress: Callable[[Step], None] | None = None) -> UpResult:
    started = time.monotonic()
    data = load_topology()
    check_options(options, data)
    if os.geteuid() != 0:
        raise LabError("lab up needs root (network namespaces); try `pktlb lab up --dry-run` to see the commands")
    plan = plan_lab(options, data)
    tier = tier_build(plan)  # checks --lbs, the engine and BIRD before anything is created
    reused = _reuse_or_refuse(options)
    if reused:
        return UpResult(plan, reused=True, seconds=time.monotonic() - started)
    files = lab_files(plan) if tier is None else {}
    paths = LabPaths.at(plan.statedir)
    paths.statedir.mkdir(parents=True, exist_ok=True)
    for sub in (paths.logs, paths.ready, paths.statedir / "bird"):
        sub.mkdir(exist_ok=True)
    record = {"version": 1, "prefix": options.prefix, "options": options.as_dict(), "status": "building",
              "namespaces": plan.namespaces, "statedir": plan.statedir, "decap_kind": plan.decap_kind,
              "created": time.time(), "vip": plan.constants["vip"], "service_port": int(plan.constants["service_port"]),
              "nodes": [{"name": n.name, "role": n.role, "namespace": n.namespace, "address": n.address}
                        for n in plan.nodes],
              "switch": plan.switch_namespace, "supervisor": None, "tier": tier.record() if tier else None,
              "layer": plan.layer, "engine_service": plan.engine_service}
    st.write_json(paths.state_file, record)
    steps = build_steps(plan) + (tier.steps if tier else [])
    for name, text in (tier.files.items() if tier else ()):
        (paths.statedir / name).write_text(text)
    try:
        count = apply_steps(steps, progress=progress)
    except (StepError, CommandError) as exc:
        lab_down(options.prefix)
        raise LabError(f"lab up failed, everything it created was removed: {exc}") from None
    for name, text in files.items():
        (paths.statedir / name).write_text(text)
    if options.tls:  # before any service starts: the proxy or the backends' HTTPS read these files
        make_lab_pki(paths.tls_dir, [plan.constants["vip"]], [b.address for b in plan.by_role("backend")])
    result = UpResult(plan, steps=count)
    if plan.services:
        st.write_json(paths.services_file, [
            {"name": s.name, "node": s.node, "namespace": s.namespace, "argv": s.argv, "ready_file": s.ready_file}
            for s in plan.services])
        record["supervisor"] = _start_supervisor(paths)
        st.write_json(paths.state_file, record)
        try:
            _await_ready(plan, paths)
        except LabError:
            lab_down(options.prefix)
            raise
        if tier is not None:
            _await_tier(plan, tier, paths)
        elif plan.engine_service is not None:
            result.engine_problem = _engine_problem(paths, f"lb/{plan.engine_service}", engine_socket(plan))
            if plan.layer == 7 and result.engine_problem is None:
                down = await_backends_up(plan, READY_TIMEOUT)
                result.warnings += [f"the proxy does not count {', '.join(down)} up after {READY_TIMEOUT:.0f} s "
                                    "(its health checks fail: `pktlb stats --lab` says why)"] if down else []
    skipped = {s["requires"] for s in data["service"].values() if s.get("requires") and not shutil.which(s["requires"])}
    result.warnings += [f"{program} is not installed: its service does not run (make deps installs it)"
                        for program in sorted(skipped)]
    record["status"] = "up"
    st.write_json(paths.state_file, record)
    result.seconds = time.monotonic() - started
    return result


def _reuse_or_refuse(options: LabOptions) -> bool:
    """True if an identical, healthy lab is already up; LabError saying what to do if another is."""
    prefix = options.prefix
    recorded = st.load_state(prefix)
    down_hint = f"run `pktlb lab down --prefix {prefix}` first, or pick another --prefix"
    if recorded is None:
        leftovers = existing_namespaces(prefix)
        if leftovers:
            raise LabError(f"namespaces from an earlier lab are still there ({', '.join(leftovers)}); {down_hint}")
        return False
    if recorded.get("status") != "up":
        raise LabError(f"a lab with prefix {prefix!r} was left half-built (a crash?); {down_hint}")
    missing = [ns for ns in recorded["namespaces"] if not Namespace(ns).exists()]
    supervisor_ok = recorded.get("supervisor") is None or st.is_same_process(recorded["supervisor"])
    if recorded["options"] == options.as_dict() and not missing and supervisor_ok:
        return True
    o = recorded["options"]
    what = f"mode {o['mode']}, engine {o['engine']}, {o['backends']} backends, {o['clients']} clients"
    if missing or not supervisor_ok:
        raise LabError(f"the lab {prefix!r} ({what}) is broken (missing: {', '.join(missing) or 'its supervisor'}); "
                       f"{down_hint}")
    raise LabError(f"a different lab is already up with prefix {prefix!r} ({what}); {down_hint}")


def _start_supervisor(paths: LabPaths) -> dict[str, int]:
    with open(paths.supervisor_log, "ab") as log:
        proc = Namespace.current().popen([sys.executable, "-m", "pktlb.lab.supervisor", str(paths.statedir)],
                                         stdout=log, stderr=log, start_new_session=True, close_fds=True)
    return st.proc_record(proc.pid)


def service_states(paths: LabPaths) -> dict[str, dict[str, Any]]:
    """The supervisor's record of each service (PID and start time, state, restarts, log)."""
    services: dict[str, dict[str, Any]] = (st.read_json(paths.services_state_file) or {}).get("services", {})
    return services


def _await_ready(plan: Plan, paths: LabPaths) -> None:
    """Wait until every service with a ready file has written it; LabError naming the laggards."""
    pending = {s.name: Path(s.ready_file) for s in plan.services if s.ready_file}
    deadline = time.monotonic() + READY_TIMEOUT
    while pending and time.monotonic() < deadline:
        pending = {name: path for name, path in pending.items() if not path.exists()}
        failed = [n for n, s in service_states(paths).items() if n in pending and s.get("state") == "failed"]
        if failed:
            raise LabError(f"lab services failed to start: {', '.join(failed)} (logs in {paths.logs})")
        time.sleep(0.02)
    if pending:
        raise LabError(f"lab services not ready after {READY_TIMEOUT:.0f} s: {', '.join(sorted(pending))} "
                       f"(logs in {paths.logs}); the lab was removed")


def _await_tier(plan: Plan, tier: TierBuild, paths: LabPaths) -> None:
    """Wait until the router routes the VIP via every LB; otherwise remove the lab and say why."""
    router_ns = plan.node("router").namespace
    wanted = sorted((lb.address for lb in tier.tier.lbs), key=lambda a: int(a.rsplit(".", 1)[1]))
    vip = plan.constants["vip"]
    failed: list[str] = []

    def converged() -> bool:
        states = service_states(paths)
        failed[:] = [n for n, s in states.items() if s.get("state") == "failed" or s.get("restarts")]
        return bool(failed) or next_hops(router_ns, vip) == wanted

    waited = wait_for(converged, TIER_CONVERGE_TIMEOUT)
    if failed or waited is None:
        states = service_states(paths)
        if failed:
            why = "; ".join(f"{n} exited ({log_tail(states[n].get('log')) or 'no log'})" for n in failed)
        else:
            why = (f"the router routes {vip} via {', '.join(next_hops(router_ns, vip)) or 'nothing'} after "
                   f"{TIER_CONVERGE_TIMEOUT:.0f} s, not via all of {', '.join(wanted)}; BGP sessions: "
                   f"{sessions(str(paths.statedir))}")
        lab_down(plan.options.prefix)
        raise LabError(f"the LB tier did not come up: {why}; everything was removed")


def _engine_problem(paths: LabPaths, service: str = "lb/engine", socket: str | None = None) -> str | None:
    """None once the engine serves its control socket (or still runs after ENGINE_SETTLE s), else
    what happened to it (it exited at once, e.g. a bad config or a missing `pktlb run`)."""
    deadline = time.monotonic() + ENGINE_SETTLE
    control_socket = Path(socket) if socket else paths.control_socket
    while time.monotonic() < deadline:
        engine = service_states(paths).get(service)
        if engine and (engine.get("restarts") or engine.get("state") != "running"):
            break
        if engine and control_socket.exists():
            return None
        time.sleep(0.05)
    engine = service_states(paths).get(service)
    if engine and engine.get("state") == "running" and not engine.get("restarts"):
        return None
    return describe_engine_failure(engine)


def describe_engine_failure(engine: dict[str, Any] | None) -> str:
    if not engine:
        return "the engine service was not started"
    tail = log_tail(engine.get("log"))
    return (f"the engine (`{' '.join(engine['argv'])}`) exited with code {engine.get('last_exit')} "
            f"({engine.get('restarts', 0)} restarts, state {engine.get('state')}); last log line: {tail or '(empty)'}; "
            f"log: {engine.get('log')}")


def log_tail(path: str | None) -> str:
    try:
        lines = [ln for ln in Path(path or "").read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("--- ")]
    except (FileNotFoundError, IsADirectoryError):
        return ""
    return lines[-1].strip() if lines else ""


def lab_down(prefix: str) -> dict[str, Any]:
    """Remove everything the lab with this prefix created; safe to run any number of times.

    Every namespace is attempted even if one fails; failures are listed under ``errors``."""
    try:
        paths = LabPaths(prefix)
    except BadPrefix as exc:
        raise LabError(str(exc)) from None
    recorded = st.load_state(prefix) or {}
    report: dict[str, Any] = {"prefix": prefix, "stopped_pids": [], "namespaces_removed": [], "statedir_removed": False,
                              "errors": []}
    if recorded.get("supervisor"):
        report["stopped_pids"] += st.stop_processes([recorded["supervisor"]], grace=5.0)
    services = service_states(paths)
    report["stopped_pids"] += st.stop_processes([s for s in services.values() if s.get("pid")])
    names = set(recorded.get("namespaces", [])) | set(existing_namespaces(prefix))
    for ns in sorted(names):
        stragglers = st.pids_in_namespace(ns)
        report["stopped_pids"] += st.stop_processes([st.proc_record(p) for p in stragglers], grace=1.0)
        if Namespace(ns).exists():
            try:
                Namespace.current().run(["ip", "netns", "delete", ns])
                report["namespaces_removed"].append(ns)
            except CommandError as exc:
                report["errors"].append(f"{ns}: {exc}")
    if paths.statedir.exists():
        shutil.rmtree(paths.statedir, ignore_errors=True)
        report["statedir_removed"] = True
    try:
        paths.root.rmdir()  # only if no other lab is using it
    except OSError:
        pass
    return report


def node_namespace(prefix: str, node: str) -> Namespace:
    """The namespace of a lab node; LabError naming the lab's nodes for an unknown one."""
    namespace = Namespace(prefix + node)
    if not namespace.exists():
        recorded = st.load_state(prefix)
        nodes = ", ".join(n["name"] for n in recorded["nodes"]) if recorded else "(no lab is up)"
        raise LabError(f"no node {node!r} in the lab {prefix!r}; nodes: {nodes}")
    return namespace


def exec_argv(prefix: str, node: str, argv: list[str]) -> list[str]:
    """The `ip netns exec` command that runs argv in a lab node; LabError for an unknown node."""
    namespace = node_namespace(prefix, node)
    if not argv:
        raise LabError("nothing to run: give a command after --")
    return namespace.argv(argv)


def lab_exec(prefix: str, node: str, argv: list[str], *, timeout: float | None = None) -> int:
    """Run a command in a node with this terminal; its exit code (124 after a timeout, like timeout(1))."""
    exec_argv(prefix, node, argv)  # LabError for an unknown node or an empty command
    try:
        proc = node_namespace(prefix, node).popen(argv, stdin=None)
    except CommandError as exc:
        raise LabError(str(exc)) from None
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return 124
