"""The kernel fast path's loader: the eBPF object (built by ``make fastpath``), its maps filled from
the images ``pktlb.core.fastpath.encode`` makes, counters read back, frames run through it
(BPF_PROG_TEST_RUN) and attachment to an interface (XDP or tcx, by bpf_link).

``availability()`` says whether the fast path can run here and, if not, why (no object, no libbpf,
no BPF permission), so the engine can run without it and say so.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from pktlb.adapters import libbpf
from pktlb.core.fastpath import layout as L
from pktlb.core.fastpath.encode import MapImage

OBJECT_ENV = "PKTLB_FASTPATH_OBJECT"
KEY_SIZES = {"pktlb_config": 4, "pktlb_services": L.SERVICE_KEY.size, "pktlb_addrs": 4, "pktlb_backends": 4,
             "pktlb_tables": 4, "pktlb_nat_reverse": L.REVERSE_KEY.size, "pktlb_flows": L.FLOW_KEY.size,
             "pktlb_snat_reverse": L.REVERSE_KEY.size, "pktlb_ifaces": 4}
VALUE_SIZES = {"pktlb_config": L.CONFIG.size, "pktlb_services": L.SERVICE.size, "pktlb_addrs": 4,
               "pktlb_backends": L.BACKEND.size, "pktlb_tables": L.TABLE_VALUE_SIZE,
               "pktlb_nat_reverse": L.NAT_REVERSE.size, "pktlb_flows": L.FLOW.size,
               "pktlb_snat_reverse": L.SNAT_REVERSE.size, "pktlb_ifaces": L.IFACE.size}
ARRAYS = {"pktlb_config", "pktlb_backends", "pktlb_tables"}  # entries cannot be deleted, only overwritten
HOOKS = ("xdp", "tc")
MAX_KERNEL_FLOWS = 131072  # the kernel's LRU flow map holds at most this many (a preallocated 18 MiB)


def kernel_flow_entries(max_flows: int) -> int:
    """How many entries the kernel's flow maps get for ``[flows] max_entries`` (fixed when they are loaded)."""
    return min(max(int(max_flows), 16), MAX_KERNEL_FLOWS)


def object_path() -> Path:
    """The built object: $PKTLB_FASTPATH_OBJECT, else build/fastpath/fastpath.bpf.o in the source tree."""
    env = os.environ.get(OBJECT_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "build" / "fastpath" / "fastpath.bpf.o"


def availability() -> str | None:
    """None when the fast path can be loaded here, else the reason it cannot."""
    if not object_path().exists():
        return f"no eBPF object at {object_path()} (build it with `make fastpath`: needs clang and libbpf-dev)"
    try:
        libbpf.library()
    except libbpf.BpfError as exc:
        return str(exc)
    if os.geteuid() != 0:
        return "loading eBPF programs needs root (CAP_BPF and CAP_NET_ADMIN)"
    return None


class FastPath:
    """One loaded copy of the program and its maps (freed by ``close`` or when the process ends)."""

    def __init__(self, max_flows: int = 65536, hooks: tuple[str, ...] = HOOKS) -> None:
        programs = tuple({"xdp": "xdp_fastpath", "tc": "tc_fastpath"}[h] for h in hooks) + ("xdp_pass",)
        self.max_flows = bound = kernel_flow_entries(max_flows)
        self.obj = libbpf.BpfObject(str(object_path()), {"pktlb_flows": bound, "pktlb_snat_reverse": bound},
                                    programs=programs)
        self.links: list[int] = []
        self.cpus = libbpf.possible_cpus()
        self.present: dict[str, set[bytes]] = {name: set() for name in KEY_SIZES}
        self.batch_lookup = True  # scan with BPF_MAP_LOOKUP_BATCH (False once the kernel refused it)

    # --- maps -------------------------------------------------------------------------------------------
    def fd(self, name: str) -> int:
        return self.obj.map_fd(name)

    def apply(self, image: MapImage, replace: bool = True) -> int:
        """Write every entry of ``image``; with ``replace``, delete the keys of those maps that the
        image no longer has (hash maps) so the maps equal the image.  Returns how many writes."""
        writes = 0
        for name, entries in image.items():
            fd = self.fd(name)
            if entries:  # one system call per map (BPF_MAP_UPDATE_BATCH)
                libbpf.update_batch(fd, list(entries), list(entries.values()))
                writes += len(entries)
            known = self.present.setdefault(name, set())
            if replace and name not in ARRAYS:
                for key in known - entries.keys():
                    libbpf.delete(fd, key)
                known.clear()
            known.update(entries)
        return writes

    def delete(self, name: str, key: bytes) -> None:
        libbpf.delete(self.fd(name), key)
        self.present.get(name, set()).discard(key)

    def clear(self, name: str) -> None:
        """Delete every entry of a hash map (flows the program created included)."""
        fd = self.fd(name)
        for key in libbpf.keys(fd, KEY_SIZES[name]):
            libbpf.delete(fd, key)
        self.present[name] = set()

    def lookup(self, name: str, key: bytes) -> bytes | None:
        return libbpf.lookup(self.fd(name), key, VALUE_SIZES[name])

    def entries(self, name: str) -> list[tuple[bytes, bytes]]:
        fd, size = self.fd(name), VALUE_SIZES[name]
        out = []
        for key in libbpf.keys(fd, KEY_SIZES[name]):
            value = libbpf.lookup(fd, key, size)
            if value is not None:
                out.append((key, value))
        return out

    def scan(self, name: str, cursor: bytes | None, budget: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """Up to ``budget`` entries of a hash map after ``cursor`` (None: from the start), and the cursor to
        go on from (None once the end is reached): a large map is read a slice per call.  The cursor is
        opaque: the kernel's batch token (BPF_MAP_LOOKUP_BATCH), or the last key where that is missing."""
        fd, size = self.fd(name), VALUE_SIZES[name]
        if self.batch_lookup:  # one system call for the whole slice; the cursor is the kernel's bucket token
            try:
                return libbpf.lookup_batch(fd, KEY_SIZES[name], size, cursor, budget)
            except libbpf.BpfError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, libbpf.ENOTSUPP) or cursor is not None:
                    raise
                self.batch_lookup = False  # a kernel before 5.6: walk the keys (cursors are keys from now on)
        out: list[tuple[bytes, bytes]] = []
        key = cursor
        for key in libbpf.keys_after(fd, KEY_SIZES[name], cursor, budget):
            value = libbpf.lookup(fd, key, size)
            if value is not None:
                out.append((key, value))
        return out, (key if len(out) >= budget else None)

    def set_tunnel_id(self, last_id: int) -> None:
        libbpf.update(self.fd("pktlb_tunnel_id"), L.U32.pack(0), L.U32.pack(last_id & 0xFFFF))

    def tunnel_id(self) -> int:
        raw = libbpf.lookup(self.fd("pktlb_tunnel_id"), L.U32.pack(0), 4)
        return L.U32.unpack(raw)[0] & 0xFFFF if raw else 0

    def counters(self) -> list[int]:
        """The counters (punts by reason, then forwards by kind), summed over the CPUs."""
        return libbpf.percpu_u64_sums(self.fd("pktlb_counters"), len(L.COUNTERS), self.cpus)

    # --- running ----------------------------------------------------------------------------------------
    def test_run(self, frame: bytes, hook: str = "xdp", repeat: int = 1) -> tuple[int, bytes, int]:
        """Run the program on ``frame`` without a device: (return value, resulting frame, ns per run)."""
        prog = "xdp_fastpath" if hook == "xdp" else "tc_fastpath"
        return libbpf.test_run(self.obj.prog_fd(prog), frame, repeat)

    def attach(self, interface: str, hook: str, xdp_mode: str = "native") -> None:
        """Attach to ``interface`` of this network namespace (XDP or tcx ingress).  ``xdp_mode`` generic: XDP
        on the skb, after receive steering (RPS), where a veth's native XDP runs on the sending core."""
        ifindex = socket.if_nametoindex(interface)
        if hook == "xdp":
            flags = libbpf.XDP_FLAGS_SKB_MODE if xdp_mode == "generic" else 0
            self.links.append(libbpf.link_create(self.obj.prog_fd("xdp_fastpath"), ifindex, libbpf.BPF_XDP, flags))
        else:
            self.links.append(libbpf.link_create(self.obj.prog_fd("tc_fastpath"), ifindex, libbpf.BPF_TCX_INGRESS))

    def attach_pass(self, interface: str) -> None:
        """XDP_PASS on a veth peer, so frames another program sends with XDP_TX are received."""
        ifindex = socket.if_nametoindex(interface)
        self.links.append(libbpf.link_create(self.obj.prog_fd("xdp_pass"), ifindex, libbpf.BPF_XDP))

    def close(self) -> None:
        for link in self.links:
            os.close(link)
        self.links = []
        self.obj.close()
