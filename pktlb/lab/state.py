"""What a lab created, on disk, so `lab down` can remove it all, also after a crash.

The lab's state directory (``pktlb.lab.paths.LabPaths``) holds ``state.json`` (options,
namespaces, supervisor PID), written and read here atomically.  Processes are recorded with their
start time (/proc/PID/stat field 22), so a PID the kernel has since given to another program is
never killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from pktlb.lab.netns import Namespace
from pktlb.lab.paths import LabPaths


def write_json(path: Path, data: Any) -> None:
    """Atomically (write + rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_state(prefix: str) -> dict[str, Any] | None:
    """The lab's ``state.json``; None if there is none.  BadPrefix for a prefix that is not a name."""
    return read_json(LabPaths(prefix).state_file)


# ---- processes identified by PID and start time -------------------------------------------------

def proc_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot, or None if there is no such live (non-zombie) process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def proc_record(pid: int) -> dict[str, int]:
    return {"pid": pid, "start_time": proc_start_time(pid) or 0}


def is_same_process(record: dict[str, Any] | None) -> bool:
    """True while the recorded process (PID and start time) is alive."""
    if not record or not record.get("pid"):
        return False
    return proc_start_time(int(record["pid"])) == record.get("start_time")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_processes(records: list[dict[str, Any]], *, grace: float = 3.0) -> list[int]:
    """SIGTERM each recorded process still alive, await its exit (pidfd), SIGKILL after ``grace`` s.

    Returns the PIDs that were signalled.  A record whose PID now belongs to another program (its
    start time differs) is left alone.
    """
    pidfds: dict[int, int] = {}
    for record in records:
        pid = int(record.get("pid") or 0)
        if pid <= 0 or pid in pidfds:
            continue
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            continue
        if not is_same_process(record):  # checked after opening the pidfd: the PID cannot be reused now
            os.close(fd)
            _reap(pid)
            continue
        pidfds[pid] = fd
    try:
        for fd in pidfds.values():
            _signal(fd, signal.SIGTERM)
        remaining = _await_exit(pidfds, grace)
        for pid in remaining:
            _signal(pidfds[pid], signal.SIGKILL)
        _await_exit({p: pidfds[p] for p in remaining}, 2.0)
    finally:
        for pid, fd in pidfds.items():
            os.close(fd)
            _reap(pid)
    return sorted(pidfds)


def _signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def _await_exit(pidfds: dict[int, int], timeout: float) -> list[int]:
    """Wait until each process has exited (its pidfd turns readable) or the timeout; the rest."""
    pending = dict(pidfds)
    deadline = time.monotonic() + timeout
    while pending:
        # A pidfd turns readable when its process exits; a child of ours is reaped here as well.
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(list(pending.values()), [], [], left)
        for fd in ready:
            pid = next(p for p, f in pending.items() if f == fd)
            _reap(pid)
            del pending[pid]
    return sorted(pending)


# ---- processes inside a namespace (stragglers after a crash) ------------------------------------

def pids_in_namespace(name: str) -> list[int]:
    """PIDs whose network namespace is the named one (what `ip netns pids NAME` prints)."""
    try:
        target = os.stat(str(Namespace(name).path))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
            found.append(int(entry))
    return found
