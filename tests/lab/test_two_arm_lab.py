"""The lab's two-armed layout (`pktlb lab up --topology two-arm`): every mode through a director.

The LB has eth1 on the client segment and eth0 on the server segment and is the backends' gateway;
clients reach the VIP through its client arm.  The engine receives on both interfaces and sends
each frame out of the one its route picks: inbound frames on eth0, nat and fullnat replies on eth1;
dsr and tunnel replies cross the director's kernel, never the engine.
"""

from __future__ import annotations

import pytest

from pktlb.lab.doctor import diagnose
from pktlb.lab.httpd import expected_sha256
from tests.lab.engine_helpers import ask, backend_counters, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]
MODES = ["nat", "fullnat", "tunnel", "dsr"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_through_a_two_armed_director(lab_factory, mode):
    lab = lab_factory(mode, engine="pktlb", topology="two-arm")
    wait_engine(lab)
    answered = lab.curl_json("client", f"http://{lab.vip}/")
    assert answered["backend"] in {b.name for b in lab.backends()}
    n = 10 * 1024 * 1024
    digest = lab.run("client", ["sh", "-c", f"curl -sS --max-time 30 http://{lab.vip}/bytes?n={n} | sha256sum"],
                     timeout=40)
    assert digest.stdout.split()[0] == expected_sha256(n), digest.stderr
    stats = ask(lab, {"cmd": "stats"})
    by_name = {row["name"]: row for row in stats["interfaces"]}
    assert by_name["eth0"]["receives"] and by_name["eth1"]["receives"]
    assert by_name["eth1"]["rx"] > 100 and by_name["eth0"]["tx"] > 100  # client side in, server side out
    replies = sum(be["packets_out"] for be in backend_counters(stats).values())
    if mode in ("dsr", "tunnel"):
        assert replies == 0 and by_name["eth1"]["tx"] == 0, "replies cross the director's kernel, not the engine"
    else:
        assert replies > 7000 and by_name["eth1"]["tx"] > 7000, "nat replies leave through the client arm"
    assert not {"no_route", "no_neighbour", "link_down"} & set(stats["totals"]["drops"])
    findings = diagnose(lab.prefix)  # the doctor knows the layout: forwarding is right for a director here
    assert not [f for f in findings if f.level == "fail"], [f.as_dict() for f in findings if f.level == "fail"]
    assert [f.level for f in findings if f.check == "lb-forwarding"] == ["ok"]
    assert lab.status()["topology"] == "two-arm"
