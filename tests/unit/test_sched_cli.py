"""``pktlb ring`` and ``pktlb simulate``: text and JSON output, errors, and the installed entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pktlb.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "sched-lab.toml")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_ring_json_counts_every_slot_of_every_service() -> None:
    code, out = run("ring", "-c", CONFIG, "--json")
    assert code == 0, out
    services = {s["service"]: s for s in json.loads(out)["services"]}
    assert set(services) == {"web", "dns"}
    web, dns = services["web"], services["dns"]
    assert web["table_size"] == 65537 and dns["table_size"] == 5003
    assert sum(r["slots"] for r in web["rows"]) == 65537
    assert sorted(r["slots"] for r in web["rows"]) == [13107, 13107, 13107, 13108, 13108]
    slots = {r["backend"]: r["slots"] for r in dns["rows"]}
    assert slots["off"] == 0 and abs(slots["big"] / 5003 - 5 / 7) < 0.001
    assert web["imbalance"] < 0.0001 and web["configured"] == "maglev" and dns["configured"] == "wrr"


def test_ring_text_for_one_service() -> None:
    code, out = run("ring", "-c", CONFIG, "--service", "web")
    assert code == 0, out
    assert out.startswith("service web: maglev table of 65537 slots, seed 0x00003039")
    assert "dns" not in out
    assert "imbalance" in out
    for name in ("be1", "be2", "be3", "be4", "be5"):
        assert any(line.split()[:1] == [name] and ("13107" in line or "13108" in line) for line in out.splitlines())


def test_ring_unknown_service_is_a_usage_error() -> None:
    code, out = run("ring", "-c", CONFIG, "--service", "nope")
    assert code == 2 and "expected one of web, dns" in out


def test_bad_table_size_is_reported_with_key_value_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(CONFIG).read_text().replace("maglev_table_size = 5003", "maglev_table_size = 5000"))
    code, out = run("ring", "-c", str(bad))
    assert code == 1
    assert "maglev_table_size: got 5000, expected a prime" in out


def test_simulate_json_shows_mod_n_next_to_maglev_and_what_moves() -> None:
    code, out = run("simulate", "-c", CONFIG, "--flows", "20000", "--remove", "be2", "--json")
    assert code == 0, out
    sim = json.loads(out)
    assert sim["service"] == "web" and sim["flows"] == 20000 and sim["removed"] == "be2"
    runs = {r["scheduler"]: r for r in sim["runs"]}
    assert set(runs) == {"rr", "wrr", "lc", "lrt", "bw", "sh", "hash", "maglev"}
    for r in runs.values():
        assert sum(r["counts"].values()) == 20000 and "be2" not in r["counts_after"]
    assert runs["maglev"]["needless_fraction"] < 0.01 < 0.5 < runs["hash"]["needless_fraction"]
    assert runs["maglev"]["slots_moved"] >= 13107


def test_simulate_text_lists_every_scheduler_and_the_movement_table() -> None:
    code, out = run("simulate", "-c", CONFIG, "--service", "dns", "--flows", "7000", "--remove", "small")
    assert code == 0, out
    assert "wrr *" in out  # the configured scheduler is marked
    assert "hash (mod-N)" in out and "maglev" in out and "After removing small" in out
    placement = next(line for line in out.splitlines() if line.startswith("wrr *"))
    assert placement.split()[2:4] == ["71.43%", "28.57%"]


def test_simulate_refuses_an_unknown_backend() -> None:
    code, out = run("simulate", "-c", CONFIG, "--flows", "100", "--remove", "be9")
    assert code == 1 and "--remove: got 'be9', expected a backend of service web" in out


def test_installed_entry_point_runs_ring_and_simulate() -> None:
    exe = shutil.which("pktlb", path=str(Path(sys.executable).parent))
    assert exe, "pktlb is not installed next to this Python (pip install -e .)"
    ring = subprocess.run([exe, "ring", "-c", CONFIG, "--json"], capture_output=True, text=True, timeout=60)
    assert ring.returncode == 0, ring.stderr
    assert len(json.loads(ring.stdout)["services"]) == 2
    sim = subprocess.run([exe, "simulate", "-c", CONFIG, "--flows", "2000", "--scheduler", "maglev",
                          "--scheduler", "hash", "--remove", "be1"], capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr
    assert "hash (mod-N)" in sim.stdout and "maglev *" in sim.stdout
    helps = [subprocess.run([exe, cmd, "--help"], capture_output=True, text=True, timeout=60) for cmd in ("ring", "simulate")]
    assert all(h.returncode == 0 and "--json" in h.stdout for h in helps)
