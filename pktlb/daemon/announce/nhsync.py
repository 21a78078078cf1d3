"""`pktlb nhsync`: mirror BIRD's multipath routes into kernel resilient next-hop groups.

With ``--ecmp resilient`` the router's BIRD installs its merged BGP routes into a side table
(``kernel table 200``) that no rule consults; this program watches that table over netlink and, for
each prefix, keeps one next-hop object per gateway and one *resilient* group of them (``ip nexthop
... type resilient``), with the main table's route pointing at the group (``nhid``).

Why: an ordinary multipath route is hash-threshold: each next hop owns a contiguous range of the
hash space, so removing one shifts the ranges of the others and moves flows between survivors
(about 1/4 of them with 3 next hops, measured).  A resilient group is a table of buckets; removing
a member hands only its buckets to the others, so flows on the survivors stay where they are.

``plan`` is pure (wanted state and current state in, ``ip`` argument lists out); ``NexthopSync``
applies it on every route event, and once a second as a safety net.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pktlb.adapters.nexthops import NexthopError, RouteEvents, run_ip

log = logging.getLogger("pktlb.nhsync")
NH_ID_BASE = 10_000  # a gateway's next-hop id: NH_ID_BASE + its address's last 16 bits
GROUP_ID_BASE = 1_000  # a prefix's group id: GROUP_ID_BASE + its index in sorted order (stable for the lab)
BUCKETS = 128


def nexthop_id(gateway: str) -> int:
    return NH_ID_BASE + (int(ipaddress.IPv4Address(gateway)) & 0xFFFF)


@dataclass
class Programmed:
    """What this program has put into the kernel: prefix -> (group id, members)."""

    groups: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    nexthops: set[str] = field(default_factory=set)


def plan(wanted: dict[str, tuple[str, ...]], have: Programmed, dev: str, buckets: int = BUCKETS,
         group_ids: dict[str, int] | None = None) -> list[list[str]]:
    """The ``ip`` commands that turn ``have`` into ``wanted`` (and update ``have`` as if they ran)."""
    cmds: list[list[str]] = []
    ids = group_ids or {}
    needed = {gw for gws in wanted.values() for gw in gws}
    for gw in sorted(needed - have.nexthops):
        cmds.append(["nexthop", "replace", "id", str(nexthop_id(gw)), "via", gw, "dev", dev])
    for prefix, gws in sorted(wanted.items()):
        current = have.groups.get(prefix)
        if current is not None and current[1] == gws:
            continue
        gid = current[0] if current else ids.get(prefix, GROUP_ID_BASE + len(have.groups) + 1)
        while current is None and gid in {g for g, _ in have.groups.values()}:
            gid += 1
        members = "/".join(str(nexthop_id(gw)) for gw in gws)
        cmds.append(["nexthop", "replace", "id", str(gid), "group", members, "type", "resilient",
                     "buckets", str(buckets)])
        if current is None:
            cmds.append(["route", "replace", prefix, "nhid", str(gid)])
        have.groups[prefix] = (gid, gws)
    for prefix in sorted(set(have.groups) - set(wanted)):
        gid, _ = have.groups.pop(prefix)
        cmds.append(["route", "del", prefix, "nhid", str(gid)])
        cmds.append(["nexthop", "del", "id", str(gid)])
    for gw in sorted(have.nexthops - needed):
        cmds.append(["nexthop", "del", "id", str(nexthop_id(gw))])
    have.nexthops = set(needed)
    return cmds


class NexthopSync:
    def __init__(self, table: int, dev: str, *, ready_file: str | None = None, buckets: int = BUCKETS) -> None:
        self.table, self.dev, self.buckets = table, dev, buckets
        self.ready_file = ready_file
        self.have = Programmed()
        self.stopping = False
        self.changes = 0

    def sync(self, events: RouteEvents) -> None:
        wanted = {p: gws for p, gws in events.routes(self.table).items()}
        for args in plan(wanted, self.have, self.dev, self.buckets):
            try:
                run_ip(args)
            except NexthopError as exc:
                log.warning("%s", exc)
                self.have = Programmed()  # unsure what the kernel holds now: redo everything next time
                return
            log.info("ip %s", " ".join(args))
            self.changes += 1

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        events = RouteEvents()
        try:
            self.sync(events)
            if self.ready_file:
                Path(self.ready_file).write_text("ready\n")
            next_full = time.monotonic() + 1.0
            while not self.stopping:
                try:
                    ready, _, _ = select.select([events], [], [], max(0.0, next_full - time.monotonic()))
                except InterruptedError:
                    continue
                if ready:
                    events.drain()
                elif time.monotonic() < next_full:
                    continue
                else:
                    next_full = time.monotonic() + 1.0
                self.sync(events)
        finally:
            for args in plan({}, self.have, self.dev):  # leave no route or group behind
                try:
                    run_ip(args)
                except NexthopError as exc:
                    log.warning("cleanup: %s", exc)
            events.close()
        return 0
