"""``pktlb run --workers N``: one forwarding process per worker, joined in one PACKET_FANOUT group.

The group is a PACKET_FANOUT_CBPF one: a classic-BPF program (``pktlb.adapters.fanout``) picks
the worker.  Each worker owns its own slice of every full-NAT source-port range, so a full-NAT
reply's destination port says which worker's flow table holds the flow, and the program sends it
there; everything else goes by a hash of the headers.  A NAT reply can land on another worker than
its request; that stays correct because NAT's reverse rewrite is derived from the snapshot (no
per-flow state).  The kernel numbers group members in join order, so the workers start one after
the other, each once the previous one has joined.  Worker 0 listens on the configured control
socket, worker i on ``<socket>.w<i>``; the CLI sends backend changes and reloads to every worker
and adds their counters up.  Every worker runs the health checks itself, so each one's snapshot
follows the backends' health without talking to the others.

With the kernel fast path (``--fastpath xdp|tc``) the parent loads the eBPF object before it forks,
so every worker inherits the same program and maps (``pktlb.daemon.fastpath_engine``); worker 0
attaches it and writes the snapshot's maps, each worker pushes and reads back its own flows.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time

from pktlb.daemon.ctlsock import worker_socket

log = logging.getLogger("pktlb.workers")
JOIN_TIMEOUT = 30.0  # seconds a worker may take to start (load the config, open its port)


def run_workers(config_path: str, workers: int, *, capture_dir: str | None, control_socket: str | None,
                health: bool, guard: bool = True, fastpath: str | None = None) -> int:
    from pktlb.adapters.configfile import load_config
    from pktlb.daemon.fastpath_engine import preload
    from pktlb.daemon.forwarder import Forwarder, StartupError

    config = load_config(config_path)
    base_socket = control_socket or config.lb.control_socket
    shared = preload(config, fastpath or config.lb.fastpath)  # one program and one set of maps for all workers
    group = 0x5B0 + (os.getpid() & 0xFF)
    children: list[int] = []
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    # Installed before the first fork: a SIGTERM while workers start must reach the ones already running.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(workers):
        if stopping:
            break
        joined_r, joined_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)  # the Forwarder installs its own flag handlers
            code = 0
            os.close(joined_r)
            try:
                sock = worker_socket(base_socket, index)
                forwarder = Forwarder(config_path, workers=workers, worker=index, capture_dir=capture_dir,
                                      control_socket=sock, health=health, fanout_group=group,
                                      guard=guard, fastpath=fastpath, shared_fastpath=shared)
                os.write(joined_w, b"j")
                os.close(joined_w)
                forwarder.run()
            except StartupError as exc:
                log.error("worker %d: %s", index, exc)
                code = 2
            except BaseException:
                log.exception("worker %d crashed", index)
                code = 1
            os._exit(code)
        children.append(pid)
        os.close(joined_w)
        if not _await_join(joined_r):  # the fanout group's array is in join order: worker i must be member i
            log.error("worker %d did not join the fanout group; stopping", index)
            forward(signal.SIGTERM, None)
            stopping = True
    worst = 0
    alive = set(children)
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        alive.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, abs(code))
        if not stopping:
            log.error("worker pid %d exited with %d; stopping the others", pid, code)
            forward(signal.SIGTERM, None)
            stopping = True
        time.sleep(0)
    return worst


def _await_join(fd: int, timeout: float = JOIN_TIMEOUT) -> bool:
    """Wait until a worker has joined the fanout group (it writes a byte); False if it exited or timed out."""
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready) and os.read(fd, 1) == b"j"
    finally:
        os.close(fd)
