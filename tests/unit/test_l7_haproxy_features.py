"""The HAProxy baseline does what ``pktlb proxy``'s features do: TLS termination (and later cookies, cache, filters)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pktlb.adapters.certs import make_lab_pki
from pktlb.core.config import parse_config
from pktlb.core.l7.haproxy import haproxy_config

HAPROXY = os.environ.get("PKTLB_HAPROXY") or shutil.which("haproxy")


def service(l7: str) -> str:
    return f'''
[[service]]
name = "web"
vip = "198.19.0.100"
port = 443
mode = "l7"
scheduler = "rr"
  [service.l7]
{l7}
  [[service.backend]]
  name = "be1"
  address = "198.18.0.11"
  port = 443
  [[service.backend]]
  name = "be2"
  address = "198.18.0.12"
  port = 443
'''


def frontend(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("frontend web")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    "))
    return [line.strip() for line in lines[start + 1:end]]


def haproxy_accepts(text: str, tmp_path) -> None:
    if not HAPROXY:
        pytest.skip("no haproxy binary (Debian package haproxy, or PKTLB_HAPROXY=path)")
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check = subprocess.run([str(HAPROXY), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_tls_termination_and_reencryption(tmp_path):
    pki = make_lab_pki(tmp_path / "tls", ["198.19.0.100"], ["198.18.0.11", "198.18.0.12"])
    text = haproxy_config(parse_config(service(
        f'  [service.l7.tls]\n  cert = "{pki.vip_cert}"\n  key = "{pki.vip_key}"\n  backend = "tls"\n'
        f'  backend_ca = "{pki.ca}"\n')))
    front = frontend(text)
    assert front[0] == f"bind 198.19.0.100:443 ssl crt {pki.vip_cert} alpn http/1.1 ssl-min-ver TLSv1.2"
    assert "http-request set-header X-Forwarded-Proto https" in front
    assert f"server be1 198.18.0.11:443 weight 1 ssl verify required ca-file {pki.ca}" in text
    haproxy_accepts(text, tmp_path)


def test_tls_without_resumption_and_plain_backends(tmp_path):
    pki = make_lab_pki(tmp_path / "tls", ["198.19.0.100"], ["198.18.0.11"])
    text = haproxy_config(parse_config(service(
        f'  [service.l7.tls]\n  cert = "{pki.vip_cert}"\n  key = "{pki.vip_key}"\n  session_resumption = false\n')))
    assert frontend(text)[0].endswith(" no-tls-tickets") and "tune.ssl.cachesize 0" in text
    assert "    server be1 198.18.0.11:443 weight 1" in text.splitlines()
    haproxy_accepts(text, tmp_path)


def test_a_key_haproxy_cannot_find_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"HAProxy reads the TLS key .* key '/k/other.key'"):
        haproxy_config(parse_config(service('  [service.l7.tls]\n  cert = "/k/vip.pem"\n  key = "/k/other.key"\n')))


def test_cookie_persistence_both_modes(tmp_path):
    for table, expected in (("  [service.l7.cookie]\n", "cookie SRVID insert indirect nocache httponly"),
                            ('  [service.l7.cookie]\n  mode = "prefix"\n  name = "JSESSIONID"\n',
                             "cookie JSESSIONID prefix")):
        text = haproxy_config(parse_config(service(table)))
        assert f"    {expected}" in text.splitlines()
        assert "    server be2 198.18.0.12:443 weight 1 cookie be2" in text.splitlines()
        haproxy_accepts(text, tmp_path)


def test_cache_section_and_rules(tmp_path):
    text = haproxy_config(parse_config(service("  [service.l7.cache]\n  max_bytes = 3000000\n")))
    lines = text.splitlines()
    assert "cache web_cache" in lines and "    total-max-size 3  # MB (pktlb: 3000000 bytes)" in lines
    assert "    max-object-size 1048576" in lines
    assert "    http-request cache-use web_cache" in lines and "    http-response cache-store web_cache" in lines
    haproxy_accepts(text, tmp_path)


def test_filters_as_http_request_deny(tmp_path):
    text = haproxy_config(parse_config(service(
        '  [service.l7.filter]\n  methods = ["GET", "HEAD"]\n  paths = ["/api", "/static/"]\n  rate = 20\n  burst = 40\n')))
    front = frontend(text)
    assert "stick-table type ip size 10000 expire 10s store http_req_rate(2000ms)" in front
    assert "http-request deny deny_status 429 if { sc_http_req_rate(0) gt 40 }" in front
    assert "http-request deny deny_status 405 unless { method GET HEAD }" in front
    assert ["acl allowed_path path_beg /api/", "acl allowed_path path /api", "acl allowed_path path_beg /static/",
            "http-request deny deny_status 403 unless allowed_path"] == \
        [line for line in front if "allowed_path" in line]
    haproxy_accepts(text, tmp_path)


def test_the_features_example_renders_for_haproxy(tmp_path):
    from pathlib import Path

    from pktlb.adapters.configfile import load_config
    text = haproxy_config(load_config(str(Path(__file__).parents[2] / "examples" / "l7-features.toml")))
    for expected in ("ssl crt /run/pktlb/pktlb-/tls/vip.pem", "cookie SRVID insert", "cache shop_cache",
                     "deny_status 429", "deny_status 405", "deny_status 403"):
        assert expected in text, expected
