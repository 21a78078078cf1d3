"""``pktlb proxy`` as a command: starts from a config file, serves, reports, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from pktlb.cli import main
from pktlb.lab.httpd import make_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pktlb_proxy_serves_reports_and_stops_on_sigterm():
    backend = make_server("be1", "127.0.0.1", 0)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    directory = Path(tempfile.mkdtemp(prefix="pktlb-l7-"))
    control, port = directory / "ctl.sock", _free_port()
    config = directory / "l7.toml"
    config.write_text(f'[lb]\ncontrol_socket = "{control}"\n[[service]]\nname = "web"\nvip = "127.0.0.1"\n'
                      f'port = {port}\nmode = "l7"\nscheduler = "rr"\n  [service.health]\n  checks = ["http"]\n'
                      f'  http_path = "/health"\n  [[service.backend]]\n  name = "be1"\n  address = "127.0.0.1"\n'
                      f'  port = {backend.server_address[1]}\n')
    proc = subprocess.Popen([sys.executable, "-c", "from pktlb.cli import main; main()", "proxy", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the log line that says it listens
            if "proxy up" in line:
                break
        answer = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read())
        assert answer["backend"] == "be1" and answer["x_forwarded_for"] == "127.0.0.1"
        stats = CliRunner().invoke(main, ["stats", "-c", str(config), "--json"])
        data = json.loads(stats.output)
        assert data["kind"] == "l7-proxy" and data["services"][0]["backends"][0]["responses"] == {"2xx": 1}
        assert data["health_checks"]["http"]["started"] >= 1
        # Reload: limits and backends may change; the listeners may not.
        config.write_text(config.read_text().replace('scheduler = "rr"\n',
                                                     'scheduler = "rr"\n  [service.l7]\n  max_header_bytes = 2048\n'))
        reloaded = CliRunner().invoke(main, ["reload", "-s", str(control)])
        assert reloaded.exit_code == 0 and "snapshot 2: config reloaded" in reloaded.output
        big = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"X-Big": "b" * 3000})
        try:
            urllib.request.urlopen(big, timeout=5)
            raise AssertionError("a 3000-byte header passed a 2048-byte limit")
        except urllib.error.HTTPError as exc:
            assert exc.code == 431
        config.write_text(config.read_text().replace(f"\nport = {port}\n", f"\nport = {_free_port()}\n"))
        refused = CliRunner().invoke(main, ["reload", "-s", str(control)])
        assert refused.exit_code != 0 and "restart the proxy" in refused.output
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not control.exists()  # the control socket is removed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        backend.shutdown()
        backend.server_close()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def test_pktlb_proxy_refuses_a_config_without_l7_service():
    example = Path(__file__).parents[2] / "examples" / "nat.toml"
    result = CliRunner().invoke(main, ["proxy", "-c", str(example)])
    assert result.exit_code != 0 and "no service has mode l7" in result.output
