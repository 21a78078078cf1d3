"""`lab status`: what a lab is (mode, VIP, port) and what is live in it right now.

For every node: its namespace, interfaces with MAC, MTU, state and addresses (read with pyroute2),
and the services running there with their PIDs (from the supervisor's record, each checked alive).
"""

from __future__ import annotations

from typing import Any

from pktlb.lab import state as st
from pktlb.lab.manage import describe_engine_failure, existing_namespaces, service_states
from pktlb.lab.netns import Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.tier.inspect import render_tier, tier_status


def read_interfaces(namespace: str) -> list[dict[str, Any]]:
    """Interfaces of a namespace: name, MAC, MTU, operational state, IPv4 addresses."""
    from pyroute2 import IPRoute

    if not Namespace(namespace).exists():
        return []
    addresses: dict[int, list[str]] = {}
    try:
        with IPRoute(netns=namespace) as ipr:
            links = {link["index"]: link for link in ipr.get_links()}
            for addr in ipr.get_addr(family=2):
                addresses.setdefault(addr["index"], []).append(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
    except OSError:  # not root: the namespace cannot be entered
        return []
    out = []
    for index, link in sorted(links.items()):
        out.append({"ifname": link.get("IFLA_IFNAME"), "mac": link.get("IFLA_ADDRESS"), "mtu": link.get("IFLA_MTU"),
                    "state": link.get("IFLA_OPERSTATE"), "addresses": addresses.get(index, [])})
    return out


def lab_status(prefix: str) -> dict[str, Any]:
    recorded = st.load_state(prefix)
    if recorded is None:
        return {"prefix": prefix, "up": False, "leftover_namespaces": existing_namespaces(prefix)}
    paths = LabPaths.at(recorded["statedir"])
    services = service_states(paths)
    nodes = []
    for node in recorded["nodes"]:
        running = []
        for svc in services.values():
            if svc["node"] != node["name"]:
                continue
            alive = st.is_same_process(svc)
            running.append({"service": svc["name"].split("/", 1)[1], "pid": svc["pid"] if alive else None,
                            "state": svc["state"] if alive or svc["state"] != "running" else "dead",
                            "restarts": svc.get("restarts", 0), "log": svc.get("log")})
        nodes.append({**node, "exists": Namespace(node["namespace"]).exists(),
                      "interfaces": read_interfaces(node["namespace"]), "services": running})
    options = recorded["options"]
    engine = {"name": options["engine"], "ok": True, "problem": None}
    tier = recorded.get("tier")
    service = recorded.get("engine_service", "engine" if options["engine"] == "pktlb" else None)
    engine_services = [f"{lb['name']}/engine" for lb in tier["lbs"]] if tier else [f"lb/{service}"]
    if service is not None:
        for name in engine_services:
            record = services.get(name)
            if not (record and record["state"] == "running" and st.is_same_process(record)):
                engine.update(ok=False, problem=f"{name.split('/')[0]}: {describe_engine_failure(record)}")
    return {
        "prefix": prefix, "up": recorded.get("status") == "up", "status": recorded.get("status"),
        "mode": options["mode"], "layer": recorded.get("layer", 4), "scheduler": options["scheduler"], "engine": engine,
        "topology": options.get("topology", "one-arm"),
        "vip": recorded["vip"], "service_port": recorded["service_port"], "decap": recorded.get("decap_kind"),
        "statedir": str(paths.statedir), "switch": {"namespace": recorded["switch"],
                                              "interfaces": read_interfaces(recorded["switch"])},
        "supervisor": {"pid": (recorded.get("supervisor") or {}).get("pid"),
                       "alive": st.is_same_process(recorded.get("supervisor"))},
        "nodes": nodes, "tier": tier_status(recorded) if tier else None,
    }


def render_status(status: dict[str, Any]) -> str:
    if not status.get("up") and "nodes" not in status:
        left = status.get("leftover_namespaces")
        extra = f"; leftover namespaces: {', '.join(left)} (run `pktlb lab down --prefix {status['prefix']}`)" \
            if left else ""
        return f"no lab with prefix {status['prefix']!r} is up{extra}\n"
    e = status["engine"]
    lines = [f"lab {status['prefix']!r}: {status['status']}, mode {status['mode']}, "
             f"topology {status.get('topology', 'one-arm')}, scheduler {status['scheduler']}, VIP {status['vip']}:{status['service_port']}/tcp",
             f"engine: {e['name']}" + ("" if e["ok"] else f" -- NOT RUNNING: {e['problem']}"),
             f"supervisor: pid {status['supervisor']['pid']} ({'alive' if status['supervisor']['alive'] else 'DEAD'})"
             + (f", decapsulation: {status['decap']}" if status["decap"] else ""),
             f"state: {status['statedir']}"]
    if status.get("tier"):
        lines += render_tier(status["tier"])
    for node in status["nodes"]:
        lines.append(f"\n{node['name']:<8} {node['role']:<8} netns {node['namespace']}"
                     + ("  (added by `lab backend add`)" if node.get("added") else "")
                     + ("" if node["exists"] else "  (MISSING)"))
        for iface in node["interfaces"]:
            addrs = iface["addresses"]
            shown = ", ".join(addrs[:3]) + (f" (+{len(addrs) - 3} more)" if len(addrs) > 3 else "")
            lines.append(f"  {iface['ifname']:<10} {iface['mac'] or '-':<17} mtu {iface['mtu']:<5} "
                         f"{(iface['state'] or '?').lower():<8} {shown}")
        for svc in node["services"]:
            pid = f"pid {svc['pid']}" if svc["pid"] else "no process"
            lines.append(f"  service {svc['service']:<8} {svc['state']:<8} {pid}"
                         + (f", {svc['restarts']} restarts" if svc["restarts"] else ""))
    return "\n".join(lines) + "\n"
