"""`pktlb dashboard` used as a person would: the page open in headless Chromium (Debian's, driven by
Playwright), traffic from the client, a backend marked down with `pktlb backend down`, and /metrics
read with prometheus-client's own parser.

The dashboard and the browser both run in the lab's client namespace (the dashboard listening on the
client's lab address), so nothing listens or browses in the host's namespace.  Set
PKTLB_DASHBOARD_SCREENSHOT=path to keep a copy of the screenshot (the README's comes from such a run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.conftest import PKTLB
from tests.lab.engine_helpers import engine_socket, wait_engine

pytestmark = pytest.mark.lab
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium as root, headless, talking to nothing but the page (see /work/shared/LAB-NOTES.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PORT = 9180
BATCHES, PER_BATCH = 4, 10  # 40 requests, a few seconds apart so the chart has more than one point
ROW = 'tr[data-source="{lb}"][data-service="web"][data-backend="{be}"][data-state="{state}"]'
# Bound on a change reaching the page: one engine poll (1 s) and one push, plus a loaded 2-vCPU machine
# running Chromium beside the lab (3 s left too little margin); the latency itself is printed, not asserted.
UPDATE_MS = 10_000


def fetch(lab, url: str) -> str:
    done = lab.curl("client", url)
    assert done.returncode == 0, f"curl {url}: {done.stderr.strip()}"
    return done.stdout


def metric(lab, url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` matching labels, from /metrics parsed by prometheus-client."""
    text = fetch(lab, url + "metrics")
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def await_metric(lab, url: str, name: str, at_least: float, timeout: float = 10.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = metric(lab, url, name, **labels)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def await_listening(process: subprocess.Popen, log: Path, url: str, timeout: float = 20.0) -> None:
    """Bounded wait for the line the dashboard prints once it listens (its URL)."""
    deadline = time.monotonic() + timeout
    while url not in log.read_text():
        assert process.poll() is None, f"the dashboard exited {process.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"the dashboard did not start in {timeout} s: {log.read_text()}"
        time.sleep(0.1)


def next_poll(page, timeout: float = UPDATE_MS) -> None:
    """Await the page's next update (its "last poll" clock changes)."""
    shown = page.text_content("#clock")
    page.wait_for_function("(shown) => document.getElementById('clock').textContent !== shown", arg=shown,
                           timeout=timeout)


def chromium_in(lab, folder: Path) -> str:
    """A wrapper Playwright starts as its browser: Debian's chromium inside the client namespace."""
    wrapper = folder / "chromium-in-client"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {lab.ns("client")} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_page_shows_traffic_and_a_backend_going_down(lab_factory, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (make deps installs it)")
    from playwright.sync_api import sync_playwright

    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    address = lab.plan.node("client").address
    url = f"http://{address}:{PORT}/"
    log = (tmp_path / "dashboard.log").open("w")
    dashboard = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), PKTLB, "-v", "dashboard",
                                  "--lab", lab.prefix, "--listen", f"{address}:{PORT}"],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        await_listening(dashboard, tmp_path / "dashboard.log", url)
        polled = await_metric(lab, url, "pktlb_source_up", 1, lb=lab.prefix)
        assert polled == 1, f"the dashboard never polled the engine: {(tmp_path / 'dashboard.log').read_text()}"
        flows_before = metric(lab, url, "pktlb_backend_new_flows_total", lb=lab.prefix, service="web")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium_in(lab, tmp_path), args=CHROMIUM_FLAGS,
                headless=True, viewport={"width": 1500, "height": 1000}, timeout=30_000)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url, timeout=15_000)
                page.wait_for_selector(ROW.format(lb=lab.prefix, be="be2", state="up"), timeout=10_000)

                for batch in range(BATCHES):  # bounded: 40 requests, 3 s each at most
                    done = lab.run("client", ["sh", "-c", f"for i in $(seq {PER_BATCH}); do curl -s -o /dev/null "
                                              f"-m 3 http://{lab.vip}/ || exit 1; done"], timeout=PER_BATCH * 3 + 5)
                    assert done.returncode == 0, f"batch {batch}: curl failed: {done.stderr.strip()}"
                    if batch < BATCHES - 1:
                        next_poll(page)  # spread over a few polls, so the chart has several points
                wanted = flows_before + BATCHES * PER_BATCH
                flows_after = await_metric(lab, url, "pktlb_backend_new_flows_total", wanted, lb=lab.prefix,
                                           service="web")
                assert flows_after >= wanted, (flows_before, flows_after)

                down = lab.cli("backend", "down", "be2", "-s", engine_socket(lab))
                assert down.returncode == 0, down.stderr
                marked = time.monotonic()
                row = page.wait_for_selector(ROW.format(lb=lab.prefix, be="be2", state="down"), timeout=UPDATE_MS)
                latency = time.monotonic() - marked
                print(f"dashboard: be2's row turned down {latency * 1000:.0f} ms after `pktlb backend down`")
                assert "changed" in (row.get_attribute("class") or "")  # the change is highlighted
                page.wait_for_selector("#changes li.recent >> text=web/be2", timeout=UPDATE_MS)
                assert page.locator(ROW.format(lb=lab.prefix, be="be1", state="up")).count() == 1
                assert page.locator("table.drops, p.drops").count() == 1
                next_poll(page)  # one more, so the screenshot shows the rates after the change
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                assert not errors, errors
            finally:
                browser.close()

        assert metric(lab, url, "pktlb_backend_state", lb=lab.prefix, backend="be2", service="web", state="down") == 1
        assert metric(lab, url, "pktlb_backend_admin_state", lb=lab.prefix, backend="be2", service="web",
                      state="down") == 1
        keep = os.environ.get("PKTLB_DASHBOARD_SCREENSHOT")
        if keep:
            shutil.copyfile(tmp_path / "dashboard.png", keep)
    finally:
        dashboard.terminate()
        try:
            dashboard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait()
        log.close()
    assert dashboard.returncode in (0, -15), (tmp_path / "dashboard.log").read_text()
