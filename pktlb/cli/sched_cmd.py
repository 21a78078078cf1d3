"""``pktlb ring`` and ``pktlb simulate``: the hashing lab (Maglev table summary, flow placement and movement)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import click

from pktlb.cli.common import emit_json, load_config_or_exit
from pktlb.core.sched.maglev import MaglevScheduler
from pktlb.core.sched.registry import make_scheduler
from pktlb.core.simulate import RingSummary, Simulation, ring_summary, simulate, synthetic_flows
from pktlb.core.snapshot import ServiceView, Snapshot, build_snapshot

CONFIG_OPTION = click.option("-c", "--config", "config_path", required=True,
                             type=click.Path(exists=True, dir_okay=False), help="TOML configuration file.")


def _snapshot(config_path: str) -> Snapshot:
    config = load_config_or_exit(config_path)
    try:
        return build_snapshot(config)
    except ValueError as exc:  # a scheduler refusing its parameters, e.g. maglev_table_size
        raise click.ClickException(f"{config_path}: {exc}") from None


def _services(snapshot: Snapshot, name: str | None) -> list[ServiceView]:
    services = list(snapshot.services.values())
    if name is None:
        return services
    chosen = [s for s in services if s.name == name]
    if not chosen:
        raise click.BadParameter(f"got {name!r}, expected one of {', '.join(s.name for s in services)}",
                                 param_hint="--service")
    return chosen


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], left: Sequence[int] = (0,)) -> str:
    """Plain aligned text columns: the ``left`` columns left-aligned, the others (figures) right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) if i in left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _maglev_for(service: ServiceView, seed: int) -> MaglevScheduler:
    if isinstance(service.scheduler, MaglevScheduler):
        return service.scheduler
    eligible = [b for b in service.backends if b.eligible]
    try:
        scheduler = make_scheduler("maglev", eligible, seed=seed, table_size=service.config.maglev_table_size)
    except ValueError as exc:
        raise click.ClickException(f"service {service.name}: {exc}") from None
    assert isinstance(scheduler, MaglevScheduler)
    return scheduler


def _ring_text(summary: RingSummary) -> str:
    note = "" if summary.configured == "maglev" else f" (service uses {summary.configured}; the table maglev would use)"
    rows = [(r.backend, r.weight, r.state, r.slots, _pct(r.share, 3), _pct(r.fair, 3),
             f"{100 * (r.share - r.fair):+.3f}%") for r in summary.rows]
    return "\n".join([
        f"service {summary.service}: maglev table of {summary.table_size} slots, seed 0x{summary.seed:08x}{note}",
        _table(("backend", "weight", "state", "slots", "share", "fair", "deviation"), rows),
        f"imbalance {_pct(summary.imbalance, 4)} (largest share / fair share = {summary.peak_to_fair:.5f})",
    ])


@click.command("ring")
@CONFIG_OPTION
@click.option("--service", "service_name", metavar="NAME", help="Only this service (default: every service).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ring_command(config_path: str, service_name: str | None, as_json: bool) -> None:
    """Summarise each service's Maglev table: slots per backend, share, fair share and imbalance."""
    snapshot = _snapshot(config_path)
    summaries = []
    for service in _services(snapshot, service_name):
        maglev = _maglev_for(service, snapshot.seed)
        summaries.append(ring_summary(service.name, service.config.scheduler, service.backends, maglev.table,
                                      seed=snapshot.seed))
    if as_json:
        emit_json({"services": [asdict(s) for s in summaries]})
    else:
        click.echo("\n\n".join(_ring_text(s) for s in summaries))


def _label(run_name: str, configured: str) -> str:
    label = {"hash": "hash (mod-N)", "sh": "sh (mod-N)"}.get(run_name, run_name)
    return label + (" *" if run_name == configured else "")


def _simulation_text(sim: Simulation) -> str:
    names = sim.backends
    lines = [f"service {sim.service}: {sim.flows} synthetic flows over {len(names)} backends "
             f"(maglev table {sim.table_size}); * marks the configured scheduler ({sim.configured})",
             "", "Where the flows go (share of flows per backend; fair = weight share, rr ignores weights):"]
    rows: list[list[object]] = [[_label(r.scheduler, sim.configured), *(_pct(r.shares.get(n, 0.0)) for n in names), _pct(r.max_deviation),
             r.summary] for r in sim.runs]
    if sim.runs:
        weighted_fair = next((r.fair for r in sim.runs if r.scheduler != "rr"), sim.runs[0].fair)
        rows.append(["fair", *(_pct(weighted_fair.get(n, 0.0)) for n in names), "", ""])
    lines.append(_table(["scheduler", *names, "max dev", "kind"], rows, left=(0, len(names) + 2)))
    bw = next((r for r in sim.runs if r.scheduler == "bw"), None)
    if bw is not None:
        lines.append("bw balances bytes/s, its share of the bytes: "
                     + ", ".join(f"{n} {_pct(bw.byte_shares.get(n, 0.0))}" for n in names))
    if sim.removed is None:
        return "\n".join(lines)
    lines += ["", f"After removing {sim.removed} (every flow placed again, as when the flow table is lost):"]
    rows = [[_label(r.scheduler, sim.configured), r.moved, _pct(r.moved_fraction), r.must_move, r.needless,
             _pct(r.needless_fraction), "" if r.slots_moved is None else f"{r.slots_moved} of {sim.table_size}"]
            for r in sim.runs]
    lines.append(_table(["scheduler", "moved", "moved %", "had to move", "needless", "needless %", "slots moved"],
                        rows))
    lines.append("needless % = flows moved although their backend stayed, as a share of those flows; "
                 "a consistent hash keeps it near 0, mod-N hashing moves most of them.")
    return "\n".join(lines)


@click.command("simulate")
@CONFIG_OPTION
@click.option("--flows", "flow_count", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True,
              help="Number of synthetic flows.")
@click.option("--remove", "remove", metavar="BACKEND", help="Also show how many flows move when BACKEND leaves.")
@click.option("--service", "service_name", metavar="NAME", help="Service to simulate (default: the first one).")
@click.option("--scheduler", "schedulers", multiple=True, metavar="NAME",
              help="Only these schedulers (repeatable; default: every scheduler).")
@click.option("--seed", "flow_seed", type=int, default=1, show_default=True, help="Seed of the synthetic flows.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def simulate_command(config_path: str, flow_count: int, remove: str | None, service_name: str | None,
                     schedulers: tuple[str, ...], flow_seed: int, as_json: bool) -> None:
    """Place N synthetic flows with every scheduler and show the shares; with --remove, how many move.

    Mod-N hashing (hash, sh) is shown next to Maglev: removing one backend out of N moves about
    (N-1)/N of the flows under mod-N hashing, and only the removed backend's flows under Maglev.
    """
    snapshot = _snapshot(config_path)
    service = _services(snapshot, service_name)[0]
    flows = synthetic_flows(flow_count, proto=service.proto, vip=service.vip, port=service.port,
                            hash_seed=snapshot.seed, flow_seed=flow_seed)
    try:
        # The state in the snapshot is "up" for every backend: simulate with the configured weights.
        result = simulate(service.name, service.config.scheduler, [b for b in service.backends if b.eligible], flows,
                          seed=snapshot.seed, table_size=service.config.maglev_table_size, remove=remove,
                          schedulers=list(schedulers) or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(asdict(result))
    else:
        click.echo(_simulation_text(result))


COMMANDS = [ring_command, simulate_command]
