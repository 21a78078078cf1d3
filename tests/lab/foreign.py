"""A network pktlb did not build: a classic two-armed director made with plain `ip` commands (root only).

    c 198.18.241.10 --- br0 (namespace sw) --- arm0 198.18.241.1  lb  arm1 198.18.242.1 --- s1 198.18.242.11
                                                                      arm2 198.18.243.1 --- s2 198.18.243.12

The director (lb) routes between the client LAN (a bridge) and the two servers, each on its own link with
the director as its default gateway; ``ip_forward=1`` as on any router (dsr and tunnel replies cross it).
198.18.250.1 is on both servers' loopback and routed by the director via s1 (metric 100) and s2 (metric
200): a backend whose path can move.  The engine's config names only the LB's address, the service and
the backends (``config``).  Namespaces get a random ``pktlb-fx<hex>-`` prefix; ``teardown`` deletes them
and stops every process started here, by PID.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIP = "198.19.241.100"
PORT = 8080
MOVABLE = "198.18.250.1"
SERVERS = {"s1": ("arm1", "198.18.242.1", "198.18.242.11"), "s2": ("arm2", "198.18.243.1", "198.18.243.12")}
PKTLB = str(Path(sys.executable).parent / "pktlb")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class Foreign:
    def __init__(self, data_bytes: int = 10 << 20) -> None:
        self.prefix = f"pktlb-fx{secrets.token_hex(3)}-"
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="pktlb-foreign-"))
        self.www = self.dir / "www"
        self.www.mkdir()
        data = os.urandom(data_bytes)
        (self.www / "data.bin").write_bytes(data)
        self.digest = hashlib.sha256(data).hexdigest()
        self.socket = str(self.dir / "pktlb.sock")

    def ns(self, node: str) -> str:
        return self.prefix + node

    def ip(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns(node), *args, check=check)

    def run(self, node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(node), *argv, check=check)

    def sysctl(self, node: str, *settings: str) -> None:
        self.run(node, "sysctl", "-qw", *settings)

    def popen(self, node: str, *argv: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.dir / f"{log}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *argv], stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    # -- the network -----------------------------------------------------------------------------
    def build(self) -> None:
        for node in ("sw", "c", "lb", "s1", "s2"):
            sh("ip", "netns", "add", self.ns(node))
            self.created.append(self.ns(node))
            self.ip(node, "link", "set", "lo", "up")
        self.ip("sw", "link", "add", "br0", "type", "bridge")
        self.ip("sw", "link", "set", "br0", "up")
        for node, ifname, address in (("c", "eth0", "198.18.241.10/24"), ("lb", "arm0", "198.18.241.1/24")):
            self.ip("sw", "link", "add", f"p-{node}", "type", "veth", "peer", "name", ifname, "netns", self.ns(node))
            self.ip("sw", "link", "set", f"p-{node}", "master", "br0", "up")
            self.ip(node, "addr", "add", address, "dev", ifname)
            self.ip(node, "link", "set", ifname, "up")
        self.ip("c", "route", "add", "default", "via", "198.18.241.1")
        for server, (arm, gateway, address) in SERVERS.items():
            self.ip("lb", "link", "add", arm, "type", "veth", "peer", "name", "eth0", "netns", self.ns(server))
            self.ip("lb", "addr", "add", f"{gateway}/24", "dev", arm)
            self.ip("lb", "link", "set", arm, "up")
            self.ip(server, "addr", "add", f"{address}/24", "dev", "eth0")
            self.ip(server, "addr", "add", f"{MOVABLE}/32", "dev", "lo")
            self.ip(server, "link", "set", "eth0", "up")
            self.ip(server, "route", "add", "default", "via", gateway)
            self.sysctl(server, "net.ipv4.conf.eth0.arp_notify=1")  # a changed MAC is announced, as servers do
            root = self.dir / server
            root.mkdir()
            (root / "who").write_text(server)
            (root / "data.bin").symlink_to(self.www / "data.bin")
            self.popen(server, sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(PORT), "--directory",
                       str(root), log=f"{server}-http")
        self.ip("lb", "route", "add", MOVABLE, "via", SERVERS["s1"][2], "metric", "100")
        self.ip("lb", "route", "add", MOVABLE, "via", SERVERS["s2"][2], "metric", "200")
        self.sysctl("lb", "net.ipv4.ip_forward=1")

    def xdp_pass_on_peers(self, program: str) -> None:
        """XDP_PASS on the far end of each of the director's veths: a veth hands frames another XDP program
        sends to it (XDP_TX, XDP_REDIRECT) only to a peer that runs an XDP program (LAB-NOTES)."""
        for node, ifname in (("sw", "p-lb"), ("s1", "eth0"), ("s2", "eth0")):
            self.ip(node, "-force", "link", "set", "dev", ifname, "xdp", "obj", program, "sec", "xdp")

    def as_dsr_servers(self) -> None:
        """What a DSR real server needs (the LVS-DR recipe): the VIP on lo, quiet about it in ARP."""
        for server in SERVERS:
            self.ip(server, "addr", "add", f"{VIP}/32", "dev", "lo")
            self.sysctl(server, "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                        "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_announce=2",
                        "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")

    def as_tunnel_servers(self) -> None:
        """DSR's recipe plus `pktlb decap` (this kernel has no ipip) writing inner packets into a TUN device."""
        self.as_dsr_servers()
        for i, (server, (_, _, address)) in enumerate(SERVERS.items()):
            self.ip(server, "tuntap", "add", "dev", "tun0", "mode", "tun")
            self.ip(server, "addr", "add", f"198.19.242.{11 + i}/32", "dev", "tun0")
            self.ip(server, "link", "set", "tun0", "up")
            self.sysctl(server, "net.ipv4.conf.tun0.rp_filter=0")
            ready = self.dir / f"{server}-decap.ready"
            self.popen(server, PKTLB, "decap", "--address", address, "--tun", "tun0", "--ready-file", str(ready),
                       log=f"{server}-decap")
            self.await_file(ready)

    # -- the engine ------------------------------------------------------------------------------
    def config(self, mode: str, backends: list[str]) -> str:
        """Only the LB's address, the service and the backends (full-NAT: its source address too)."""
        snat = 'snat_address = "198.18.242.1"\n' if mode == "fullnat" else ""
        rows = "".join(f'[[service.backend]]\naddress = "{address}"\nport = {PORT}\n' for address in backends)
        path = self.dir / f"{mode}.toml"
        path.write_text(f'[lb]\naddress = "198.18.241.1"\n\n[[service]]\nname = "web"\nvip = "{VIP}"\n'
                        f'port = {PORT}\nmode = "{mode}"\n{snat}\n{rows}')
        return str(path)

    def start_engine(self, config: str, *extra: str) -> subprocess.Popen[bytes]:
        proc = self.popen("lb", PKTLB, "run", "-c", config, "-s", self.socket, *extra, log="engine")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"engine exited: {(self.dir / 'engine.log').read_text()[-2000:]}")
            if self.cli("stats", "--json").returncode == 0:
                return proc
            time.sleep(0.1)
        raise AssertionError("the engine's control socket did not answer within 20 s")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(PKTLB, *args, "-s", self.socket, check=False)

    def fetch(self, name: str, max_time: float = 30) -> bytes:
        out = self.dir / f"got-{secrets.token_hex(3)}"
        done = self.run("c", "curl", "-s", "-f", "--max-time", str(max_time), "-o", str(out),
                        f"http://{VIP}:{PORT}/{name}", check=False)
        if done.returncode != 0:
            return b""
        data = out.read_bytes()
        out.unlink()
        return data

    @staticmethod
    def await_file(path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not appear within {timeout:.0f} s")
            time.sleep(0.05)

    def teardown(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        for path in sorted(self.dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        self.dir.rmdir()
