"""The HAProxy baseline is rendered from the same service definitions as ``pktlb proxy``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pktlb.adapters.configfile import load_config
from pktlb.core.config import parse_config
from pktlb.core.l7.haproxy import haproxy_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "l7.toml"


def _block(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines))
    return [line.strip() for line in lines[start + 1:end]]


def test_routes_limits_and_servers_follow_the_pktlb_config():
    text = haproxy_config(load_config(str(EXAMPLE)), stats_socket="/run/h.sock")
    assert "stats socket /run/h.sock mode 600 level admin" in text and "http-reuse always" in text
    front = _block(text, "frontend web")
    assert front[:6] == ["bind 198.19.0.100:80", "maxconn 1024", "timeout http-request 10000ms",
                         "timeout http-keep-alive 60000ms", "timeout client 30000ms",
                         "http-request deny deny_status 413 if { req.hdr_val(content-length) gt 104857600 }"]
    assert "option forwardfor" in front and 'http-request add-header Forwarded "for=%[src];proto=http;by=%[dst]"' in front
    # Routes in order, first match wins in both: host ACL, path ACL, the rest; nothing matched -> 404.
    uses = [line for line in front if line.startswith(("use_backend", "default_backend"))]
    assert uses == ["use_backend web__api if r0_host", "use_backend web__downloads if r1_path",
                    "use_backend web__default", "default_backend web__no_route"]
    assert "acl r0_host req.hdr(host),field(1,:),lower -m str api.example" in front
    assert _block(text, "backend web__api")[0] == "balance leastconn"
    assert "server be3 198.18.0.13:80 weight 1 check inter 1000ms fall 3 rise 2" in _block(text, "backend web__api")
    assert [line.split()[1] for line in _block(text, "backend web__default") if line.startswith("server")] == \
        ["be1", "be2"]
    assert "option httpchk GET /health" in _block(text, "backend web__downloads")
    assert "dns" not in text  # the L4 service is the packet engine's


def test_wildcard_hosts_segment_prefixes_and_approximate_schedulers():
    text = haproxy_config(parse_config('''
[[service]]
name = "site"
vip = "198.19.0.100"
port = 8080
mode = "l7"
scheduler = "maglev"
  [[service.route]]
  name = "img"
  host = "*.cdn.example"
  path_prefix = "/img"
  [[service.backend]]
  name = "be1"
  address = "198.18.0.11"
'''))
    front = _block(text, "frontend site")
    assert "acl r0_host req.hdr(host),field(1,:),lower -m end .cdn.example" in front
    assert {"acl r0_path path_beg /img/", "acl r0_path path /img"} <= set(front)  # /img and /img/..., not /imgx
    assert "use_backend site__img if r0_host r0_path" in front
    back = _block(text, "backend site__img")
    assert back[:2] == ["balance source", "hash-type consistent"] and back[2].startswith("# pktlb's maglev")
    assert not any("check" in line for line in back if line.startswith("server"))  # no checks configured


def test_a_config_without_l7_service_is_refused():
    with pytest.raises(ValueError, match="no service has mode l7"):
        haproxy_config(load_config(str(EXAMPLE.parent / "nat.toml")))


HAPROXY = os.environ.get("PKTLB_HAPROXY") or shutil.which("haproxy")


@pytest.mark.skipif(not HAPROXY, reason="no haproxy binary (Debian package haproxy, or PKTLB_HAPROXY=path)")
def test_haproxy_accepts_the_rendered_configuration(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(load_config(str(EXAMPLE)), stats_socket=str(tmp_path / "h.sock")))
    check = subprocess.run([str(HAPROXY), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
