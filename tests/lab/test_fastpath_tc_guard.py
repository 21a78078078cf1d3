"""The tc fast path with the guard at ip prerouting (pktlb.daemon.readpoint): the engine's ETH_P_IP
sockets still see what the program punts, while the LB's kernel stays out of the way.  Full-NAT with
the SNAT address local to the LB is the case that needs it: without a guard the LB's kernel answered
the backends' replies to its SNAT address with RST."""

from __future__ import annotations

import pytest

from pktlb.adapters.fastpath import availability
from pktlb.adapters.nft import GUARD_TABLE
from pktlb.lab.httpd import expected_sha256
from tests.lab.engine_helpers import ask, await_read_back, engine_socket
from tests.lab.test_fastpath_lab import start_engine, stop

pytestmark = [pytest.mark.lab, pytest.mark.bpf]


def tcp_out_rsts(lab) -> int:
    """RSTs this namespace's kernel has sent (/proc/net/snmp, Tcp OutRsts)."""
    rows = [line.split() for line in lab.run("lb", ["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
            if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutRsts")])


def guard_tables(lab) -> list[str]:
    return [line for line in lab.run("lb", ["nft", "list", "tables"], check=True).stdout.splitlines()
            if line.endswith(f" {GUARD_TABLE}")]


@pytest.mark.timeout(120)
def test_fullnat_at_tc_with_a_local_snat_address_the_kernel_stays_out_of_the_way(lab_factory):
    why = availability()
    if why:
        pytest.skip(f"fast path unavailable: {why}")
    lab = lab_factory("fullnat", backends=2, engine="none")  # the lab puts the SNAT address on the LB's eth0
    proc = start_engine(lab, "tc")
    try:
        assert guard_tables(lab) == [f"table ip {GUARD_TABLE}"]  # at prerouting, after the ETH_P_IP sockets
        rsts = tcp_out_rsts(lab)
        n = 4_000_000
        for _ in range(2):
            done = lab.run("client", ["sh", "-c", f"curl -sS --max-time 15 http://{lab.vip}/bytes?n={n} | sha256sum"],
                           timeout=20)
            assert done.stdout.split()[0] == expected_sha256(n), done.stderr
        assert tcp_out_rsts(lab) == rsts  # the LB's kernel answered nothing
        await_read_back(engine_socket(lab))  # the kernel's counters reach the stats
        stats = ask(lab, {"cmd": "stats"})
        fast, totals = stats["fastpath"], stats["totals"]
        assert fast["hook"] == "tc" and fast["errors"] == 0, fast
        assert fast["forwarded"]["outbound"] > 1000, fast  # the replies to the SNAT address, in the kernel
        assert totals["kernel_forwarded"] > 0.9 * totals["received"], (totals, fast)
        # A reload that resizes the flow table: Python's follows, the kernel's map keeps its size and says so;
        # the guard is replaced at the same hook and the service keeps working.
        config = lab.paths.config
        config.write_text(config.read_text() + "\n[flows]\nmax_entries = 4096\n")
        answer = ask(lab, {"cmd": "reload"})
        assert answer["reloaded"] and "kernel flow map keeps its" in answer["fastpath_flows"], answer
        assert ask(lab, {"cmd": "stats"})["fastpath"]["flow_map_wanted"] == 4096
        assert guard_tables(lab) == [f"table ip {GUARD_TABLE}"]
        done = lab.run("client", ["sh", "-c", f"curl -sS --max-time 15 http://{lab.vip}/bytes?n={n} | sha256sum"],
                       timeout=20)
        assert done.stdout.split()[0] == expected_sha256(n), done.stderr
        assert tcp_out_rsts(lab) == rsts
    finally:
        stop(proc)
    assert guard_tables(lab) == []  # removed on exit
