"""``pktlb stats`` as text, in the spirit of ``ipvsadm -L --stats --rate``."""

from __future__ import annotations

from typing import Any


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def fastpath_line(fast: dict[str, Any], totals: dict[str, Any]) -> str:
    """One line about the kernel fast path: on (how much it forwarded, its punts by reason) or off and why."""
    if fast.get("hook", "off") == "off":
        return f"fast path: off ({fast.get('reason', '')})"
    punts = fast.get("punts") or {}
    top = ", ".join(f"{k} {v}" for k, v in sorted(punts.items(), key=lambda kv: -kv[1])[:5])
    return (f"fast path: {fast['hook']}, {totals.get('kernel_forwarded', 0)} of the forwarded frames in the kernel "
            f"({fast.get('forwarded', {}).get('new_flow', 0)} new flows scheduled there"
            + (f", {fast['forwarded']['redirected']} sent out of another interface"
               if fast.get("forwarded", {}).get("redirected") else "") + "); punted to Python: "
            f"{top or 'none'}" + (f"; {fast['errors']} map errors" if fast.get("errors") else "")
            + (f"; kernel flow map keeps {fast.get('flow_map_entries')} entries until restart "
               f"(the reloaded config asks {fast['flow_map_wanted']})" if fast.get("flow_map_wanted") else ""))


def render_stats(data: dict[str, Any]) -> str:
    t = data["totals"]
    lines = [f"pktlb engine: snapshot {data['generation']}, up {data['uptime']} s, "
             f"flows {data['flows']['entries']}/{data['flows']['max_entries']} "
             f"(evicted {data['flows']['evicted']}, expired {data['flows']['expired']})",
             f"frames: {t['received']} received = {t['forwarded']} forwarded + {t['replied']} replied + "
             f"{t['dropped']} dropped"]
    fast = data.get("fastpath")
    if fast:
        lines.append(fastpath_line(fast, t))
    port = data.get("port") or {}
    if port.get("kernel_drops") or port.get("rx_truncated"):
        lines.append(f"socket: {port.get('kernel_drops', 0)} frames lost in the kernel before the engine read them "
                     f"(receive queue full), {port.get('rx_truncated', 0)} larger than the receive slot")
    interfaces = data.get("interfaces") or []
    if interfaces:
        lines.append("interfaces: " + ", ".join(
            f"{i['name']} rx {i['rx']} tx {i['tx']}" + ("" if i.get("receives", True) else " (send only)")
            for i in interfaces))
    routing = data.get("routing") or {}
    if routing:
        unresolved = routing.get("unresolved") or {}
        lines.append(f"routing: {routing.get('routes', 0)} routes, {routing.get('neighbours', 0)} neighbours, "
                     f"{routing.get('resolves', 0)} resolutions asked"
                     + (f"; waiting for {', '.join(f'{a} ({r})' for a, r in unresolved.items())}" if unresolved else ""))
    for svc in data["services"]:
        lines.append("")
        lines.append(f"{svc['protocol'].upper()} {svc['vip']}:{svc['port']} {svc['mode']} {svc['scheduler']} "
                     f"(service {svc['name']})")
        lines.append(f"  {'backend':<8} {'address':<20} {'state':<6} {'wt':>3} {'flows':>6} {'pkts in':>9} "
                     f"{'bytes in':>9} {'pkts out':>9} {'bytes out':>9} {'pps in':>7} {'pps out':>7}  health")
        for be in svc["backends"]:
            health = be.get("health")
            if health:
                checks = ",".join(f"{c['type']}:{c['status']}" for c in health["checks"])
                rtt = f" rtt {health['last_rtt_ms']} ms" if health.get("last_rtt_ms") is not None else ""
                htext = f"{health['state']} [{checks}]{rtt} {health.get('since_s')} s ago"
            else:
                htext = "unchecked"
            lines.append(f"  {be['name']:<8} {be['address'] + ':' + str(be['port']):<20} {be['state']:<6} "
                         f"{be['weight']:>3} {be['active_flows']:>6} {be['packets_in']:>9} {_si(be['bytes_in']):>9} "
                         f"{be['packets_out']:>9} {_si(be['bytes_out']):>9} {be['pps_in']:>7.0f} "
                         f"{be['pps_out']:>7.0f}  {htext}")
        if svc.get("drops"):
            lines.append("  drops: " + ", ".join(f"{r} {n}" for r, n in sorted(svc["drops"].items())))
    if t["drops"]:
        lines.append("")
        lines.append("drops by reason:")
        for reason, n in sorted(t["drops"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {reason:<22} {n:>9}  {data['drop_reasons'].get(reason, '')}")
    return "\n".join(lines)
