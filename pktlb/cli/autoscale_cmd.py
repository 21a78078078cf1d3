"""``pktlb autoscale``: target tracking on a running engine, or ``--replay`` of a recorded run."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pktlb.cli.common import emit_json, load_config_or_exit
from pktlb.core.config import LbConfig
from pktlb.core.policy.autoscale import REMOVAL_ORDERS, ScalingConfig
from pktlb.daemon.autoscale.controller import Controller, LoopSettings
from pktlb.daemon.autoscale.engine import EngineActuator, EngineControl
from pktlb.daemon.autoscale.interfaces import (
    METRICS,
    AutoscaleError,
    BackendProvider,
    MetricSource,
    MonotonicClock,
    NewBackend,
)
from pktlb.daemon.autoscale.journal import Journal, read_journal
from pktlb.daemon.autoscale.latency import LatencyFeed, WithLatency
from pktlb.daemon.autoscale.metrics import EngineMetrics, require_cpu
from pktlb.daemon.autoscale.pool import StandbyPool, parse_pool_entry
from pktlb.lab.loadgen import Phase, parse_load, start_in_lab
from pktlb.lab.paths import BadPrefix, LabPaths
from pktlb.lab.scaling import LabBackendProvider
from pktlb.lab.state import load_state
from pktlb.lab.topology import MAX_BACKENDS, LabError
from pktlb.reports.autoscale.replay import ReplayError, recorded_start, replay
from pktlb.reports.autoscale.summary import render_summary, summarize
from pktlb.reports.autoscale.timeline import timeline_chart

# Policy options: (option, ScalingConfig field, type, default for a live run, help).  Default None
# everywhere in click, so a replay can tell an option given from one left out (then the recording's value).
POLICY_OPTIONS: list[tuple[str, str, Any, Any, str]] = [
    ("--target", "target", float, None, "Metric value per backend to keep (required for a live run)."),
    ("--min", "min_backends", int, 1, "Fewest serving backends."),
    ("--max", "max_backends", int, 4, "Most serving backends."),
    ("--tolerance", "tolerance", float, 0.1, "No change while |metric per backend / target - 1| <= this."),
    ("--warmup", "warmup", float, 5.0, "Seconds a new backend warms up: its values set aside, no scale-in."),
    ("--cooldown", "cooldown", float, 10.0, "Seconds after an action before the next one."),
    ("--scale-in-window", "scale_in_window", float, 30.0,
     "Seconds of recommendations whose highest one decides a scale-in (the HPA uses 300)."),
    ("--scale-out-step", "scale_out_step", int, 4, "Scale-out cap: at most this many backends per action..."),
    ("--scale-out-percent", "scale_out_percent", float, 100.0, "...or this % of the current count, if more."),
    ("--scale-in-step", "scale_in_step", int, 1, "At most this many backends removed per action."),
    ("--removal", "removal", click.Choice(REMOVAL_ORDERS), "newest", "Which backend a scale-in removes."),
]
FIELD_OPTIONS = {f: o for o, f, *_ in POLICY_OPTIONS} | {"scale_in_enabled": "--no-scale-in"}
DEFAULT_METRIC, DEFAULT_PERIOD, DEFAULT_SMOOTHING, DEFAULT_DRAIN_TIMEOUT = "new_flows_per_s", 1.0, 5.0, 30.0


def _policy_options(fn: Any) -> Any:
    for opt, field, kind, default, text in reversed(POLICY_OPTIONS):
        shown = f" [live default: {default}]" if default is not None else ""
        fn = click.option(opt, field, type=kind, default=None, help=text + shown)(fn)
    return fn


def _policy(given: dict[str, Any], fallback: dict[str, Any]) -> ScalingConfig:
    values = {f: given[f] if given.get(f) is not None else fallback.get(f, d) for _, f, _, d, _ in POLICY_OPTIONS}
    values["scale_in_enabled"] = False if given.get("no_scale_in") else fallback.get("scale_in_enabled", True)
    if values["target"] is None:
        raise click.UsageError("--target is required: the metric value each backend should carry")
    try:
        return ScalingConfig(**values)
    except ValueError as exc:
        message = str(exc)
        for field, opt in FIELD_OPTIONS.items():
            message = message.replace(field + " = ", opt + " ")
        raise click.BadParameter(message) from None


@click.command()
@click.option("--metric", type=click.Choice(list(METRICS)), default=None,
              help="What to track: " + "; ".join(f"{k}: {v}" for k, v in METRICS.items())
              + f" [live default: {DEFAULT_METRIC}]")
@_policy_options
@click.option("--no-scale-in", is_flag=True, help="Never remove backends (scale out only).")
@click.option("--drain-timeout", type=float, default=None,
              help="Seconds a drained backend may keep flows before it is removed anyway [live default: 30].")
@click.option("--period", type=float, default=None, help="Seconds between evaluations [live default: 1].")
@click.option("--smoothing", type=float, default=None,
              help="EWMA time constant in seconds, 0 for none [live default: 5].")
@click.option("--service", default="web", show_default=True, help="The engine's service to scale.")
@click.option("-s", "--socket", "socket_path", default=None, help="Control socket of the engine.")
@click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Read the control socket path from this engine config.")
@click.option("--lab", "lab_prefix", default=None, help="Scale the engine of the lab with this prefix (e.g. pktlb-).")
@click.option("--pool", "pool", multiple=True, metavar="NAME=ADDRESS[:PORT]",
              help="A standby backend (running, not in the engine) that a scale-out may add; repeat.  "
                   "With --lab and no --pool: the lab's backends that the engine does not have.")
@click.option("--load", "load_text", default=None, metavar="RATE:SECONDS[,RATE:SECONDS...]",
              help="With --lab: drive a stepped HTTP load at the VIP from the lab's client (pktlb.lab.loadgen: "
                   "requests/s for seconds, each step in turn, a new connection per request); the samples get "
                   "its p99 latency and the run lasts the load plus --scale-in-window and --drain-timeout "
                   "unless --duration says otherwise.")
@click.option("--protect", multiple=True, metavar="NAME", help="Never remove this backend; repeat.")
@click.option("--protect-initial/--no-protect-initial", default=True, show_default=True,
              help="Never remove the backends the engine had at the start.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/autoscale", show_default=True,
              help="Where autoscale.jsonl and timeline.png go.")
@click.option("--replay", "replay_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run the policy on the samples of a recorded autoscale.jsonl instead (no engine, no root).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def autoscale(metric: str | None, drain_timeout: float | None, period: float | None, smoothing: float | None,
              service: str, socket_path: str | None, config_path: str | None, lab_prefix: str | None,
              pool: tuple[str, ...], load_text: str | None, protect: tuple[str, ...], protect_initial: bool,
              duration: float | None, out_dir: str, replay_file: str | None, as_json: bool, **given: Any) -> None:
    """Add backends under load and remove them when it passes (target tracking, as Kubernetes' HPA).

    Every --period the engine's metric is read from its control socket, smoothed (EWMA), divided by
    the serving backends and compared with --target: desired = ceil(backends x metric per backend /
    target), outside a tolerance band.  Scale-out comes at once (rate-capped), scale-in only on the
    highest recommendation of the --scale-in-window; new backends warm up; a removed backend is
    drained first.  Writes OUT/autoscale.jsonl (every sample and action) and OUT/timeline.png.
    """
    out = Path(out_dir)
    load: list[Phase] = []
    if load_text is not None:
        if replay_file or not lab_prefix:
            raise click.UsageError("--load drives the lab's client: it needs --lab PREFIX (and no --replay)")
        try:
            load = parse_load(load_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--load") from None
    out.mkdir(parents=True, exist_ok=True)
    load_end: dict[str, Any] | None = None
    if replay_file:
        records = _replay(replay_file, metric, smoothing, given)
    else:
        policy = _policy(given, {})
        socket = _control_socket(socket_path, config_path, lab_prefix)
        if load and duration is None:
            duration = sum(p.seconds for p in load) + policy.scale_in_window + policy.cooldown \
                + (DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout) / 2
        records, load_end = _live(metric or DEFAULT_METRIC, policy, drain_timeout, period, smoothing, service,
                                  socket, pool, protect, protect_initial, duration, out, lab_prefix, load)
    if replay_file:
        with open(out / "autoscale.jsonl", "w", encoding="utf-8") as f:
            journal = Journal(f)
            for record in records:
                journal(record)
    timeline_chart(records, out / "timeline.png")
    summary = summarize(records)
    summary["files"] = {"journal": str(out / "autoscale.jsonl"), "timeline": str(out / "timeline.png")}
    if load:
        summary["load"] = load_end or {"error": f"the load generator wrote no totals (log: {out / 'load.log'})"}
        summary["files"]["load"] = str(out / "load.jsonl")
    if as_json:
        emit_json(summary)
    else:
        click.echo(render_summary(summary))
        if load:
            click.echo(render_load(summary["load"]))
        click.echo(f"\nwrote {summary['files']['journal']} and {summary['files']['timeline']}")


def _replay(path: str, metric: str | None, smoothing: float | None, given: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        records = read_journal(path)
        start = recorded_start(records)
        policy = _policy(given, start.get("policy") or {})
        recorded_smoothing = float(start.get("smoothing", DEFAULT_SMOOTHING))
        return replay(records, policy, metric or str(start.get("metric") or DEFAULT_METRIC),
                      smoothing if smoothing is not None else recorded_smoothing, source=path)
    except (ReplayError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _control_socket(socket_path: str | None, config_path: str | None, lab_prefix: str | None) -> str:
    if socket_path:
        return socket_path
    if config_path:
        return load_config_or_exit(config_path).lb.control_socket
    if lab_prefix:
        try:
            path = LabPaths(lab_prefix).control_socket
        except BadPrefix as exc:
            raise click.BadParameter(str(exc), param_hint="--lab") from None
        if not path.exists():
            raise click.ClickException(f"no lab {lab_prefix!r} with a pktlb engine is up (no control socket at "
                                       f"{path}): start one with `pktlb lab up --prefix {lab_prefix}`")
        return str(path)
    return LbConfig.control_socket


def _live(metric: str, policy: ScalingConfig, drain_timeout: float | None, period: float | None,
          smoothing: float | None, service: str, socket_path: str, pool: tuple[str, ...], protect: tuple[str, ...],
          protect_initial: bool, duration: float | None, out: Path, lab_prefix: str | None,
          load: list[Phase]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    try:
        settings = LoopSettings(metric, service, DEFAULT_PERIOD if period is None else period,
                                DEFAULT_SMOOTHING if smoothing is None else smoothing,
                                DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout)
        standby = [parse_pool_entry(p) for p in pool]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    engine = EngineControl(socket_path, service)
    try:
        counters = engine.counters()
        if metric == "cpu":
            require_cpu(counters)
    except AutoscaleError as exc:
        raise click.ClickException(str(exc)) from None
    initial = sorted(counters.backends)
    provider: BackendProvider
    if lab_prefix and not pool:  # the lab's standby hosts first, then new backend namespaces
        provider = LabBackendProvider(lab_prefix, standby=[b.name for b in _lab_standby(lab_prefix, set(initial))])
    else:
        provider = StandbyPool(standby, in_use=initial)
    # how many more backends there can be: the pool's free hosts, or as many as a lab can hold
    more = len(provider.free()) if isinstance(provider, StandbyPool) else MAX_BACKENDS - len(initial)
    room = len(initial) + more
    if policy.max_backends > len(initial) and room < policy.max_backends:
        where = "the lab has" if lab_prefix and not pool else "--pool gives"
        raise click.UsageError(f"--max {policy.max_backends} needs up to {policy.max_backends - len(initial)} backends "
                               f"beyond the {len(initial)} the engine has, and {where} {more} "
                               "standby ones: add --pool NAME=ADDRESS entries (hosts that run but are not in the "
                               "engine; in a lab, e.g. `pktlb lab up --backends 4` then `pktlb backend remove be4`) "
                               "or lower --max")
    protected = sorted(set(protect) | (set(initial) if protect_initial else set()))
    stopping: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: stopping.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    source: MetricSource = EngineMetrics(engine)
    generator = feed = None
    load_started = 0.0
    try:
        if load and lab_prefix:
            (out / "load.jsonl").unlink(missing_ok=True)
            feed = LatencyFeed(out / "load.jsonl")
            source = WithLatency(source, feed)
            with open(out / "load.log", "ab") as log:
                generator = start_in_lab(lab_prefix, load, str((out / "load.jsonl").resolve()), log=log)
                load_started = time.monotonic()
        with open(out / "autoscale.jsonl", "w", encoding="utf-8") as f:
            journal = Journal(f)
            controller = Controller(policy, settings, source, EngineActuator(engine, provider),
                                    MonotonicClock(), journal, initial=initial, protected=protected,
                                    wall=datetime.now(UTC).isoformat(timespec="seconds"))
            controller.run(duration, stop=lambda: bool(stopping))
    except (ValueError, LabError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if generator is not None:
            left = load_started + sum(p.seconds for p in load) - time.monotonic()
            _finish(generator, timeout=0.0 if stopping else max(0.0, left) + 15)  # its last answers: <= 5 s
    if feed is not None:
        feed.poll()
    return journal.records, feed.end if feed is not None else None


def _finish(generator: Any, timeout: float) -> None:
    """Let the load generator end (its phases are bounded), else stop it."""
    try:
        generator.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        generator.terminate()
        try:
            generator.wait(timeout=5)
        except subprocess.TimeoutExpired:
            generator.kill()
            generator.wait()


def render_load(end: dict[str, Any]) -> str:
    if "error" in end:
        return f"load: {end['error']}"
    text = (f"load: {end['sent']} requests sent in {end['seconds']:.0f} s, {end['ok']} answered, {end['failed']} "
            f"failed, {end['shed']} not sent (too many in flight); latency p50 {end['p50_ms']} ms, "
            f"p99 {end['p99_ms']} ms")
    return text + "".join(f"\n  {e}" for e in end.get("errors", [])[:5])


def _lab_standby(prefix: str, in_engine: set[str]) -> list[NewBackend]:
    """The lab's backends that the engine does not have (e.g. `pktlb lab up --backends 4` and then
    `pktlb backend remove be3` and `be4`): standby hosts, already running their services."""
    recorded = load_state(prefix) or {}
    return [NewBackend(n["name"], n["address"]) for n in recorded.get("nodes", [])
            if n.get("role") == "backend" and n["name"] not in in_engine and n.get("address")]


COMMANDS = [autoscale]
