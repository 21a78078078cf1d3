"""``pktlb run --workers N``: one forwarding process per worker, joined in one PACKET_FANOUT group.

The kernel spreads frames over the workers by flow hash.  A NAT reply can land on another worker
than its request; that stays correct because NAT's reverse rewrite is derived from the snapshot
(no per-flow state), and each worker owns its own slice of every full-NAT source-port range, so
a full-NAT reply's destination port says which worker's flow table holds the flow.  Worker 0
listens on the configured control socket, worker i on ``<socket>.w<i>``.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("pktlb.workers")


def run_workers(config_path: str, workers: int, *, capture_dir: str | None, control_socket: str | None,
                health: bool) -> int:
    from pktlb.core.config import load_config
    from pktlb.daemon.forwarder import Forwarder, StartupError

    base_socket = control_socket or load_config(config_path).lb.control_socket
    group = 0x5B0 + (os.getpid() & 0xFF)
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sock = base_socket if index == 0 else f"{base_socket}.w{index}"
                Forwarder(config_path, workers=workers, worker=index, capture_dir=capture_dir, control_socket=sock,
                          health=health and index == 0, fanout_group=group).run()
            except StartupError as exc:
                log.error("worker %d: %s", index, exc)
                code = 2
            except BaseException:
                log.exception("worker %d crashed", index)
                code = 1
            os._exit(code)
        children.append(pid)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
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
