"""BIRD configurations rendered for the LB tier, and the BIRD control-socket client's parsing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pktlb.adapters import birdctl
from pktlb.daemon.announce import birdconf as bc

ROUTER = bc.RouterSpec(
    router_id="198.18.0.1", local_address="198.18.0.1", interface="eth0",
    peers=(bc.Peer("lb1", "198.18.0.201", 65101), bc.Peer("lb2", "198.18.0.202", 65102)),
    accept=("198.19.0.0/24", "0.0.0.0/0"),
    kernels=(bc.KernelExport("kvip", None, ("198.19.0.0/24",)), bc.KernelExport("kret", 100, ("0.0.0.0/0",), True)),
    bfd=bc.Bfd(), log_path="/run/pktlb/x/bird-router.log")
SPEAKER = bc.SpeakerSpec(router_id="198.18.0.201", local_address="198.18.0.201", local_as=65101, interface="eth0",
                         router=bc.Peer("uplink", "198.18.0.1", 65000), prefixes=("198.19.0.100/32",))


def test_router_config_has_sessions_filters_timers_and_ecmp():
    text = bc.router_config(ROUTER)
    assert "neighbor 198.18.0.201 as 65101;" in text and "neighbor 198.18.0.202 as 65102;" in text
    assert "import filter lb_in; export none;" in text
    assert "if net ~ [ 198.19.0.0/24{24,32}, 0.0.0.0/0{0,32} ] then accept;" in text
    assert text.count("merge paths on;") == 2
    assert "hold time 3;" in text and "keepalive time 1;" in text and "error wait time 1, 5;" in text
    assert "min rx interval 100 ms; min tx interval 100 ms; multiplier 3;" in text and text.count("bfd on;") == 2
    # the return route goes to kernel table 100 through a BIRD table of its own (one kernel protocol per table)
    assert "kernel table 100;" in text and "peer table t_kret;" in text and "net ~ [ 0.0.0.0/0 ]" in text


def test_router_config_without_bfd_has_no_bfd():
    text = bc.router_config(bc.RouterSpec(**{**ROUTER.__dict__, "bfd": None}))
    assert "bfd" not in text


def test_speaker_config_starts_withdrawn_and_exports_only_the_announcement():
    text = bc.speaker_config(SPEAKER)
    static = text[text.index("protocol static announce"):]
    assert static.split("}")[0].count("disabled;") == 1
    assert "route 198.19.0.100/32 blackhole;" in text
    assert 'export where proto = "announce"; next hop self;' in text and "import none;" in text
    assert "neighbor 198.18.0.1 as 65000;" in text


@pytest.mark.parametrize("change, message", [
    ({"peers": ()}, "at least one LB peer"),
    ({"peers": (bc.Peer("lb1", "198.18.0.201", 1), bc.Peer("lb1", "198.18.0.202", 2))}, "duplicate"),
    ({"peers": (bc.Peer("1lb", "198.18.0.201", 1),)}, "protocol name"),
    ({"peers": (bc.Peer("lb1", "198.18.0.999", 1),)}, "not an IPv4 address"),
    ({"peers": (bc.Peer("lb1", "198.18.0.9", 0),)}, "AS number"),
    ({"accept": ("198.19.0.0/33",)}, "not an IPv4 prefix"),
    ({"accept": ()}, "empty prefix set"),
    ({"timers": bc.Timers(hold=2)}, "hold"),
    ({"timers": bc.Timers(hold=3, keepalive=3)}, "hold"),
    ({"log_path": 'a"b'}, "cannot quote"),
])
def test_router_config_refuses_bad_specs(change, message):
    with pytest.raises(bc.BirdConfigError, match=message):
        bc.router_config(bc.RouterSpec(**{**ROUTER.__dict__, **change}))


def test_speaker_with_nothing_to_announce_is_refused():
    with pytest.raises(bc.BirdConfigError, match="nothing to announce"):
        bc.speaker_config(bc.SpeakerSpec(**{**SPEAKER.__dict__, "prefixes": ()}))


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird (Debian bird2) not installed")
def test_bird_parses_both_configs(tmp_path):
    for name, text in (("router", bc.router_config(ROUTER)), ("speaker", bc.speaker_config(SPEAKER))):
        path = tmp_path / f"{name}.conf"
        path.write_text(text.replace("/run/pktlb/x/", f"{tmp_path}/"))
        done = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr


SHOW_PROTOCOLS = "".join(line + "\n" for line in [  # BIRD pads its columns: trailing blanks are real
    "0001 BIRD 2.0.12 ready.",
    "2002-Name       Proto      Table      State  Since         Info",
    "1002-device1    Device     ---        up     18:59:25.428  ",
    " kmain      Kernel     master4    up     18:59:25.428  ",
    " lb1        BGP        ---        up     18:59:26.242  Established   ",
    " lb2        BGP        ---        start  18:59:25.428  Active Socket: No route to host",
    "0000 ",
])


def test_parse_reply_waits_for_the_final_line_and_keeps_continuations():
    assert birdctl.parse_reply("0001 BIRD 2.0.12 ready.\n").code == 1
    body = SHOW_PROTOCOLS.split("\n", 1)[1]
    assert birdctl.parse_reply(body[:-6]) is None  # the closing "0000 " line not yet read
    reply = birdctl.parse_reply(body)
    assert reply.code == 0
    rows = birdctl.parse_protocols(reply)
    assert rows["lb1"] == birdctl.ProtocolState("lb1", "BGP", "up", "Established")
    assert rows["lb2"].state == "start" and rows["lb2"].info.startswith("Active")
    assert rows["kmain"].proto == "Kernel" and "Name" not in rows


def test_parse_reply_rejects_garbage():
    with pytest.raises(birdctl.BirdError, match="unexpected line"):
        birdctl.parse_reply("hello\n")


def test_command_against_a_fake_bird(tmp_path):
    from tests.unit.tier_fakes import FakeBird

    bird = FakeBird(str(tmp_path / "bird.ctl"))
    try:
        assert birdctl.protocols(bird.path)["announce"].state == "down"
        assert birdctl.set_protocol(bird.path, "announce", True) == "announce: enabled"
        assert birdctl.protocols(bird.path)["announce"].state == "up"
        with pytest.raises(birdctl.BirdError, match="refused"):
            birdctl.command(bird.path, "show nonsense")
    finally:
        bird.close()
    with pytest.raises(birdctl.BirdError, match="no BIRD control socket"):
        birdctl.command(str(tmp_path / "absent.ctl"), "show protocols")
