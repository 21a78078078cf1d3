"""The measures that tell L4 from L7 balancing, taken the same way for every mode and engine.

* Backend connections per request: the TCP connections the backends accepted during a load run
  (``PassiveOpens`` of ``/proc/net/snmp``, read in each backend's namespace before and after),
  divided by the responses the client got.  An L4 balancer forwards the client's connection, so with
  a new client connection per request every request costs the backend one connection (1.00); a
  proxy keeps its own pooled connections to the backends and opens far fewer.  The backends also
  accept the proxy's HTTP health checks (about one per backend per second in the l7 lab), so for a
  proxy the figure comes from its own count of the connections it opened (``proxy_opened``: pktlb
  proxy's stats, HAProxy's ``connect``); the backends' count is kept beside it.
* Four requests on one kept-alive client connection (curl with four URLs): which backend answered
  each.  An L4 balancer chooses once per connection (the same backend four times); a proxy chooses
  per request.
* What the backend learned about the client: the peer address it saw and the X-Forwarded-For it got.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pktlb.lab.netns import CommandError, Namespace
from pktlb.reports.compare.workload import PROBE_MAX_SECONDS, WorkloadError

KEEPALIVE_REQUESTS = 4
_CONNECTS = re.compile(r"^CONNECTS (\d+)$")


def passive_opens(namespace: str) -> int:
    """TCP connections this namespace's kernel has accepted since it was made (``Tcp: PassiveOpens``)."""
    done = Namespace(namespace).run(["cat", "/proc/net/snmp"], timeout=5)
    tcp = [line.split() for line in done.stdout.splitlines() if line.startswith("Tcp:")]
    if len(tcp) != 2 or "PassiveOpens" not in tcp[0]:
        raise WorkloadError(f"no Tcp PassiveOpens in {namespace}'s /proc/net/snmp")
    return int(tcp[1][tcp[0].index("PassiveOpens")])


class BackendConnections:
    """Counts the connections the backends accept between ``start()`` and ``stop(responses)``, and those
    a proxy says it opened (``proxy_opened()``, a running total; None: not a proxy)."""

    def __init__(self, namespaces: Iterable[str], proxy_opened: Callable[[], int | None] | None = None) -> None:
        self.namespaces = list(namespaces)
        self.proxy_opened = proxy_opened or (lambda: None)
        self.before: dict[str, int] = {}
        self.proxy_before: int | None = None

    def start(self) -> BackendConnections:
        self.before = {ns: passive_opens(ns) for ns in self.namespaces}
        self.proxy_before = self.proxy_opened()
        return self

    def stop(self, responses: int) -> dict[str, Any]:
        accepted = sum(passive_opens(ns) - before for ns, before in self.before.items())
        proxy_after = self.proxy_opened()
        by_proxy = proxy_after - self.proxy_before if proxy_after is not None and self.proxy_before is not None else None
        opened = accepted if by_proxy is None else by_proxy
        return {"opened": opened, "responses": responses, "accepted_by_backends": accepted,
                "counted_by": "the backends (PassiveOpens)" if by_proxy is None else "the proxy's own counters",
                "per_request": round(opened / responses, 4) if responses else None}


def one_connection_spread(namespace: str, url: str, n: int = KEEPALIVE_REQUESTS) -> dict[str, Any]:
    """n requests on one kept-alive client connection (one curl, n URLs): the backend of each answer."""
    argv = ["curl", "-sS", "--max-time", str(PROBE_MAX_SECONDS * n), "-w", r"\nCONNECTS %{num_connects}\n"] + [url] * n
    try:
        done = Namespace(namespace).run(argv, timeout=PROBE_MAX_SECONDS * n + 5, check=False)
    except CommandError as exc:
        raise WorkloadError(f"curl with {n} URLs: {exc}") from None
    answers, connects = [], 0
    for line in done.stdout.splitlines():
        line = line.strip()
        match = _CONNECTS.match(line)
        if match:
            connects += int(match.group(1))
        elif line.startswith("{"):
            answers.append(json.loads(line))
    if len(answers) != n:
        raise WorkloadError(f"{n} requests on one connection got {len(answers)} answers ({done.stderr.strip()})")
    backends = [a.get("backend") for a in answers]
    return {"requests": n, "client_connections": connects, "backends": backends,
            "distinct_backends": len(set(backends)),
            "backend_ports": [a.get("client_port") for a in answers]}


def what_the_backend_learned(answer: dict[str, Any], client_address: str) -> dict[str, Any]:
    """The peer address the backend saw and the forwarding headers it got, beside the client's real address."""
    return {"client_address": client_address, "peer": answer.get("client"),
            "x_forwarded_for": answer.get("x_forwarded_for"), "forwarded": answer.get("forwarded"),
            "client_address_visible": client_address in (answer.get("client"), answer.get("x_forwarded_for"))}
