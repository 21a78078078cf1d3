"""libbpf through ctypes: open and load an eBPF object, find programs and maps, read and write map
entries, run a program on a frame without any device (BPF_PROG_TEST_RUN), attach with a bpf_link.

Only what the fast path needs, thin and explicit.  Every failure raises ``BpfError`` naming the call
and the errno.  Links (XDP and tcx) belong to the file descriptor: when the process exits, even by
SIGKILL, the kernel detaches the program and frees its maps, so nothing stale survives the engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

BPF_ANY, BPF_NOEXIST = 0, 1
BPF_XDP = 37  # enum bpf_attach_type
XDP_FLAGS_SKB_MODE = 1 << 1  # generic XDP: the program runs on the skb, in the stack's receive path
BPF_TCX_INGRESS = 46
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7


class BpfError(OSError):
    """A libbpf call failed: the message names the call and the reason."""


class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libbpf.so.1, loaded once; BpfError when it is missing."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise BpfError(errno.ENOENT, f"libbpf not found ({exc}): install libbpf1") from None
        p, i, u32, vp, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_char_p
        for fname, res, args in (
            ("bpf_object__open_file", p, [cp, vp]), ("bpf_object__load", i, [p]), ("bpf_object__close", None, [p]),
            ("bpf_object__find_program_by_name", p, [p, cp]), ("bpf_program__fd", i, [p]),
            ("bpf_object__find_map_by_name", p, [p, cp]), ("bpf_map__fd", i, [p]),
            ("bpf_map__set_max_entries", i, [p, u32]), ("bpf_program__set_autoload", i, [p, ctypes.c_bool]),
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]), ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("bpf_map_delete_elem", i, [i, vp]), ("bpf_map_get_next_key", i, [i, vp, vp]),
            ("bpf_map_update_batch", i, [i, vp, vp, ctypes.POINTER(u32), vp]),
            ("bpf_map_lookup_batch", i, [i, vp, vp, vp, vp, ctypes.POINTER(u32), vp]),
            ("bpf_prog_test_run_opts", i, [i, ctypes.POINTER(_TestRunOpts)]),
            ("bpf_link_create", i, [i, i, ctypes.c_int, vp]), ("libbpf_num_possible_cpus", i, []),
            ("libbpf_get_error", ctypes.c_long, [vp]),
        ):
            fn = getattr(lib, fname)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = -ret if ret != -1 else ctypes.get_errno()
        raise BpfError(code, f"{what}: {os.strerror(code)}")
    return ret


class BpfObject:
    """A loaded eBPF object file: its programs and maps by name."""

    def __init__(self, path: str, max_entries: dict[str, int] | None = None,
                 programs: tuple[str, ...] | None = None) -> None:
        lib = library()
        if not os.path.exists(path):
            raise BpfError(errno.ENOENT, f"eBPF object {path} not found: run `make fastpath`")
        self._lib = lib
        self._obj = lib.bpf_object__open_file(path.encode(), None)
        if not self._obj or lib.libbpf_get_error(self._obj):
            self._obj = None
            raise BpfError(ctypes.get_errno() or errno.EINVAL, f"bpf_object__open_file({path}) failed")
        try:
            for name, entries in (max_entries or {}).items():
                _check(lib.bpf_map__set_max_entries(self._map(name), entries), f"set_max_entries({name})")
            if programs is not None:
                for name in ("xdp_fastpath", "tc_fastpath", "xdp_pass"):
                    prog = lib.bpf_object__find_program_by_name(self._obj, name.encode())
                    if prog:
                        lib.bpf_program__set_autoload(prog, name in programs)
            _check(lib.bpf_object__load(self._obj), f"loading {path} (the verifier's log is on stderr)")
        except BpfError:
            self.close()
            raise
        self.maps: dict[str, int] = {}

    def _map(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not ptr:
            raise BpfError(errno.ENOENT, f"no map {name!r} in the eBPF object")
        return int(ptr)

    def map_fd(self, name: str) -> int:
        if name not in self.maps:
            self.maps[name] = _check(self._lib.bpf_map__fd(self._map(name)), f"bpf_map__fd({name})")
        return self.maps[name]

    def prog_fd(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not ptr:
            raise BpfError(errno.ENOENT, f"no program {name!r} in the eBPF object")
        return _check(self._lib.bpf_program__fd(ptr), f"bpf_program__fd({name})")

    def close(self) -> None:
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _check(library().bpf_map_update_elem(fd, key, value, flags), "bpf_map_update_elem")


def update_batch(fd: int, keys: list[bytes], values: list[bytes]) -> None:
    """Write many entries with one system call (BPF_MAP_UPDATE_BATCH); a kernel without it (before 5.6)
    gets them one by one.  On failure, the entries before the failing one are written."""
    if len(keys) == 1:
        update(fd, keys[0], values[0])
        return
    count = ctypes.c_uint32(len(keys))
    ret = library().bpf_map_update_batch(fd, b"".join(keys), b"".join(values), ctypes.byref(count), None)
    if ret < 0 and count.value == 0 and _unsupported(ret):
        for key, value in zip(keys, values, strict=True):
            update(fd, key, value)
        return
    _check(ret, "bpf_map_update_batch")


def lookup_batch(fd: int, key_size: int, value_size: int, token: bytes | None,
                 budget: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """Up to ``budget`` entries of a hash map from the bucket ``token`` names on (None: the first), with
    one system call (BPF_MAP_LOOKUP_BATCH), and the token to go on from (None at the end).  Raises
    BpfError with errno EINVAL or ENOTSUPP where the kernel or the map has no batch lookup."""
    lib, out_token = library(), ctypes.create_string_buffer(max(key_size, 8))
    while True:
        keys, values = ctypes.create_string_buffer(key_size * budget), ctypes.create_string_buffer(value_size * budget)
        count = ctypes.c_uint32(budget)
        ret = lib.bpf_map_lookup_batch(fd, token, out_token, keys, values, ctypes.byref(count), None)
        code = -ret if ret not in (0, -1) else (ctypes.get_errno() if ret else 0)
        if code != errno.ENOSPC:  # ENOSPC: one bucket holds more than budget entries
            break
        budget *= 2
    if code not in (0, errno.ENOENT):
        raise BpfError(code, f"bpf_map_lookup_batch: {os.strerror(code)}")
    n, kraw, vraw = count.value, keys.raw, values.raw
    entries = [(kraw[i * key_size:(i + 1) * key_size], vraw[i * value_size:(i + 1) * value_size]) for i in range(n)]
    return entries, (None if code == errno.ENOENT else out_token.raw)


ENOTSUPP = 524  # the kernel's "operation not supported" (not in errno)


def _unsupported(ret: int) -> bool:
    code = -ret if ret != -1 else ctypes.get_errno()
    return code in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)


def lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    buf = ctypes.create_string_buffer(value_size)
    if library().bpf_map_lookup_elem(fd, key, buf) < 0:
        return None
    return buf.raw


def percpu_u64_sums(fd: int, count: int, cpus: int) -> list[int]:
    """Entries 0..count-1 of a per-CPU array of u64, each summed over the CPUs (a missing entry: 0).
    One buffer for every lookup: the fast path's counters are read after every test run."""
    lookup_elem, buf = library().bpf_map_lookup_elem, ctypes.create_string_buffer(8 * cpus)
    values = struct.Struct(f"<{cpus}Q")
    return [sum(values.unpack(buf.raw)) if lookup_elem(fd, i.to_bytes(4, "little"), buf) >= 0 else 0
            for i in range(count)]


def delete(fd: int, key: bytes) -> bool:
    return bool(library().bpf_map_delete_elem(fd, key) == 0)


def keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash map (a snapshot: entries may come and go meanwhile)."""
    lib = library()
    out: list[bytes] = []
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    while lib.bpf_map_get_next_key(fd, cur, nxt) == 0:
        out.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)
    return out


def keys_after(fd: int, key_size: int, cursor: bytes | None, budget: int) -> list[bytes]:
    """At most ``budget`` keys following ``cursor`` (None: the first key).  A cursor deleted meanwhile
    makes the kernel start again from the first key, so a scan always moves on."""
    lib = library()
    out: list[bytes] = []
    cur = ctypes.create_string_buffer(cursor, key_size) if cursor is not None else None
    nxt = ctypes.create_string_buffer(key_size)
    while len(out) < budget and lib.bpf_map_get_next_key(fd, cur, nxt) == 0:
        out.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)
    return out


def possible_cpus() -> int:
    return _check(library().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def test_run(prog_fd: int, frame: bytes, repeat: int = 1, out_size: int = 0) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: (the program's return value, the frame it left, mean ns per run)."""
    out = ctypes.create_string_buffer(max(out_size, len(frame) + 256))
    data = ctypes.create_string_buffer(bytes(frame), len(frame))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data),
                        data_out=ctypes.addressof(out), data_size_in=len(frame), data_size_out=len(out),
                        repeat=repeat)
    _check(library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "bpf_prog_test_run")
    return opts.retval, out.raw[:opts.data_size_out], opts.duration


class _LinkCreateOpts(ctypes.Structure):
    """The head of libbpf's struct bpf_link_create_opts (sz, flags): the rest left zero."""

    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32)]


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """Attach with a bpf_link (XDP or tcx); returns the link's fd, whose closing detaches.  ``flags``: for
    XDP, XDP_FLAGS_SKB_MODE (generic XDP) or XDP_FLAGS_DRV_MODE; 0 lets the kernel pick (native if it can)."""
    opts = ctypes.byref(_LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags)) if flags else None
    return _check(library().bpf_link_create(prog_fd, ifindex, attach_type, opts), "bpf_link_create")
