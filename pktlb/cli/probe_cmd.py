"""``pktlb probe``: run the health checker's ICMP prober once, like ping, to see what it sees.

One line per probe (reply with its RTT, unreachable, or no reply within the timeout) and a
summary.  ``--tunnel-vip`` sends the probes the way tunnel mode's encapsulated health check does:
IP-in-IP to the target, whose decapsulator delivers them to the VIP, which answers.  Needs
CAP_NET_RAW (root), and so usually runs inside the LB's namespace:
``sudo ip netns exec pktlb-lb pktlb probe --target 198.18.0.11``.
"""

from __future__ import annotations

import click

from pktlb.cli.common import emit_json, refuse_root_namespace
from pktlb.core.health import L3OK
from pktlb.core.packet.addr import in_network, ip_to_int
from pktlb.daemon.health.icmp import ProbeOutcome, probe_once

# Where probes may go without --allow-outside-lab: the lab's benchmarking range and loopback.
SAFE_NETWORKS = (("198.18.0.0", 15), ("127.0.0.0", 8))


def _address(value: str | None, option: str, allow_outside_lab: bool) -> str | None:
    if value is None:
        return None
    try:
        number = ip_to_int(value)
    except ValueError:
        raise click.BadParameter(f"got {value!r}, expected an IPv4 address like 198.18.0.11",
                                 param_hint=option) from None
    if not allow_outside_lab and not any(in_network(number, ip_to_int(net), bits) for net, bits in SAFE_NETWORKS):
        raise click.BadParameter(f"{value} is outside the lab range 198.18.0.0/15 (and loopback); "
                                 "pass --allow-outside-lab to probe it anyway", param_hint=option)
    return value


def _line(outcome: ProbeOutcome) -> str:
    numbers = f"icmp_seq={outcome.seq} ident=0x{outcome.ident:04x}"
    if outcome.status == L3OK and outcome.rtt is not None:
        return f"reply from {outcome.reply_from}: {numbers} ttl={outcome.ttl} time={outcome.rtt * 1e3:.3f} ms"
    if outcome.reply_from:
        return f"from {outcome.reply_from}: {numbers} {outcome.reason} ({outcome.status})"
    return f"no reply: {numbers} {outcome.reason} ({outcome.status})"


def _summary(outcomes: list[ProbeOutcome], counters: dict[str, int]) -> dict[str, object]:
    rtts = [o.rtt * 1e3 for o in outcomes if o.status == L3OK and o.rtt is not None]
    probes = counters.get("started", 0)
    return {
        "probes": probes, "sent": counters.get("sent", 0), "replies": len(rtts),
        "loss_pct": round(100 * (1 - len(rtts) / probes), 1) if probes else 100.0,
        "rtt_min_ms": min(rtts, default=None), "rtt_avg_ms": sum(rtts) / len(rtts) if rtts else None,
        "rtt_max_ms": max(rtts, default=None), "timeouts": counters.get("timeouts", 0),
        "unreachable": counters.get("unreachable", 0), "send_errors": counters.get("send_errors", 0),
        "unmatched_ignored": counters.get("unmatched", 0), "malformed_ignored": counters.get("malformed", 0),
    }


@click.command("probe")
@click.option("--target", required=True, help="Address to probe (a backend), e.g. 198.18.0.11.")
@click.option("--count", default=4, show_default=True, type=click.IntRange(1, 10000), help="Probes to send.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.01, 60),
              help="Seconds between probes.")
@click.option("--timeout", default=1.0, show_default=True, type=click.FloatRange(0.01, 60),
              help="Seconds to wait for each reply.")
@click.option("--tunnel-vip", default=None, metavar="VIP",
              help="Send IP-in-IP through the target's decapsulator to this VIP (tunnel mode's check).")
@click.option("--source", default=None, metavar="ADDR",
              help="Source address of encapsulated probes (default: the route's source towards the target).")
@click.option("--allow-outside-lab", is_flag=True, help="Allow targets outside 198.18.0.0/15 and loopback.")
@click.option("--json", "as_json", is_flag=True, help="Print the probes and summary as JSON at the end.")
def probe(target: str, count: int, interval: float, timeout: float, tunnel_vip: str | None, source: str | None,
          allow_outside_lab: bool, as_json: bool) -> None:
    """Send ICMP echo requests the way the health checker does; one line per reply with its RTT."""
    target = _address(target, "--target", allow_outside_lab) or target
    if not target.startswith("127."):
        refuse_root_namespace("pktlb probe", allow_outside_lab,
                              f"e.g. `pktlb lab exec lb -- pktlb probe --target {target}`")
    tunnel_vip = _address(tunnel_vip, "--tunnel-vip", allow_outside_lab)
    source = _address(source, "--source", allow_outside_lab)
    how = f"IP-in-IP via {target} to VIP {tunnel_vip}" if tunnel_vip else "ICMP echo"
    if not as_json:
        click.echo(f"PROBE {target}: {how}, {count} probe(s) every {interval:g} s, timeout {timeout:g} s")
    outcomes: list[ProbeOutcome] = []
    counters: dict[str, int] = {}
    try:
        for outcome in probe_once(target, count, interval, timeout, tunnel_vip=tunnel_vip, source=source,
                                  counters=counters):
            outcomes.append(outcome)
            if not as_json:
                click.echo(_line(outcome))
    except PermissionError:
        raise click.ClickException(
            "raw ICMP sockets need CAP_NET_RAW: run as root, e.g. "
            f"sudo ip netns exec pktlb-lb pktlb probe --target {target}") from None
    except OSError as exc:
        raise click.ClickException(f"probing {target} failed: {exc.strerror or exc}") from None
    summary = _summary(outcomes, counters)
    if as_json:
        emit_json({"target": target, "tunnel_vip": tunnel_vip, "count": count, "interval": interval,
                   "timeout": timeout, "probes": [
                       {"seq": o.seq, "ident": o.ident, "status": o.status,
                        "rtt_ms": o.rtt * 1e3 if o.rtt is not None else None, "ttl": o.ttl,
                        "reply_from": o.reply_from, "reason": o.reason} for o in outcomes],
                   "summary": summary})
    else:
        click.echo(f"--- {target} probe statistics ---")
        line = f"{summary['probes']} probes, {summary['replies']} replies, {summary['loss_pct']:g}% loss"
        if summary["replies"]:
            line += (f"; rtt min/avg/max = {summary['rtt_min_ms']:.3f}/{summary['rtt_avg_ms']:.3f}/"
                     f"{summary['rtt_max_ms']:.3f} ms")
        click.echo(line)
        click.echo(f"ignored: {summary['unmatched_ignored']} unmatched, {summary['malformed_ignored']} malformed")
    if not summary["replies"]:
        raise SystemExit(1)


COMMANDS = [probe]
