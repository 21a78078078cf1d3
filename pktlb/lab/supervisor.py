"""The lab supervisor: starts each lab service in its namespace and restarts it if it dies.

Run as ``python -m pktlb.lab.supervisor STATEDIR`` (detached) by `pktlb lab up`.  It reads
``services.json`` and keeps ``services-state.json`` current: for every service its PID and start
time, state (running, backoff, failed, stopped), restarts and last exit code.  A service that dies
within QUICK_FAILURE seconds of starting MAX_QUICK_FAILURES times in a row is marked failed and left
down (so `pktlb lab status` can say so).  It runs on the daemon's ``Reactor``: SIGTERM/SIGINT and
SIGCHLD only set flags; on SIGCHLD the loop reaps the exited services and plans each restart as a
timer; on SIGTERM/SIGINT it stops every service (SIGTERM, SIGKILL after a grace period) and exits.
On SIGHUP it reads ``services.json`` again: services new to it are started, services no longer in it
are stopped and forgotten (`pktlb lab backend add|remove` change the file, then send SIGHUP).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pktlb.daemon.reactor import Reactor
from pktlb.lab.netns import CommandError, Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.state import proc_record, read_json, stop_processes, write_json

QUICK_FAILURE = 5.0  # seconds: a service that dies sooner than this counts as a quick failure
MAX_QUICK_FAILURES = 5
MAX_BACKOFF = 5.0


class Supervised:
    """One service: its command, its process, its restart bookkeeping."""

    def __init__(self, spec: dict[str, Any], log_path: Path):
        self.spec = spec
        self.name: str = spec["name"]
        self.namespace = Namespace(spec["namespace"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.quick_failures = 0
        self.next_start = 0.0
        self.state = "starting"
        self.last_exit: int | None = None

    def start(self) -> None:
        argv = self.spec["argv"]
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start: {' '.join(self.namespace.argv(argv))}\n".encode())
            log.flush()
            try:
                self.proc = self.namespace.popen(argv, stdout=log, stderr=log, close_fds=True)
            except (OSError, CommandError) as exc:
                log.write(f"cannot start: {exc}\n".encode())
                self.proc = None
                self._failed_start()
                return
        self.started_at = time.monotonic()
        self.state = "running"

    def _failed_start(self) -> None:
        self.quick_failures += 1
        self.state = "failed" if self.quick_failures >= MAX_QUICK_FAILURES else "backoff"
        self.next_start = time.monotonic() + min(MAX_BACKOFF, 0.2 * 2 ** self.quick_failures)

    def reap(self) -> bool:
        """If the process exited, record it and schedule a restart; True when something changed."""
        if self.proc is None or self.proc.poll() is None:
            return False
        self.last_exit = self.proc.returncode
        lived = time.monotonic() - self.started_at
        self.proc = None
        if lived < QUICK_FAILURE:
            self._failed_start()
        else:
            self.quick_failures = 0
            self.state = "backoff"
            self.next_start = time.monotonic() + 0.2
        return True

    def report(self) -> dict[str, Any]:
        record = proc_record(self.proc.pid) if self.proc else {"pid": None, "start_time": None}
        return {**record, "name": self.name, "node": self.spec["node"], "namespace": self.spec["namespace"],
                "argv": self.spec["argv"], "state": self.state, "restarts": self.restarts,
                "quick_failures": self.quick_failures, "last_exit": self.last_exit, "log": str(self.log_path)}


class Supervisor:
    def __init__(self, statedir: Path):
        self.paths = LabPaths.at(statedir)
        self.paths.logs.mkdir(exist_ok=True)
        specs = read_json(self.paths.services_file) or []
        self.services = [Supervised(spec, self.paths.log(spec["name"])) for spec in specs]
        self.stopping = False
        self.reactor = Reactor()

    def write_state(self) -> None:
        write_json(self.paths.services_state_file, {
            "supervisor": proc_record(os.getpid()), "stopping": self.stopping,
            "services": {s.name: s.report() for s in self.services}})

    def run(self) -> int:
        reactor = self.reactor
        for sig, flag in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGCHLD, "child"),
                          (signal.SIGHUP, "reload")):
            reactor.flag_on_signal(sig, flag)
        for svc in self.services:
            svc.start()
        self.write_state()
        self.check()  # plans the retry of any service that could not even be started
        try:
            reactor.run(self._on_flags, until=lambda: self.stopping)
        finally:
            reactor.close()
        self.shutdown()
        return 0

    def _on_flags(self) -> None:
        if self.reactor.take_flag("stop"):
            self.stopping = True
        if self.reactor.take_flag("reload") and not self.stopping:
            self.reload()
        if self.reactor.take_flag("child"):
            self.check()

    def reload(self) -> None:
        """Follow ``services.json``: start the services new to it, stop those no longer in it."""
        specs = {spec["name"]: spec for spec in read_json(self.paths.services_file) or []}
        gone = [s for s in self.services if s.name not in specs]
        self._stop(gone)
        known = {s.name for s in self.services}
        self.services = [s for s in self.services if s.name in specs]
        for name, spec in specs.items():
            if name not in known:
                svc = Supervised(spec, self.paths.log(name))
                svc.start()
                self.services.append(svc)
        self.write_state()
        self.check()

    def check(self) -> None:
        """Reap the services that exited, restart those whose backoff is over, plan the next restarts."""
        changed = False
        now = time.monotonic()
        for svc in self.services:
            changed |= svc.reap()
            if svc.proc is None and svc.state == "backoff" and now >= svc.next_start:
                svc.restarts += 1
                svc.start()
                changed = True
            if svc.proc is None and svc.state == "backoff":
                self.reactor.call_at(svc.next_start, self.check)
        if changed:
            self.write_state()

    @staticmethod
    def _stop(services: list[Supervised]) -> None:
        """Stop these services' processes (SIGTERM, SIGKILL after a grace period) and mark them stopped."""
        running = [(s, s.proc) for s in services if s.proc is not None]
        stop_processes([proc_record(proc.pid) for _, proc in running])
        for svc, proc in running:
            proc.wait(timeout=1)
            svc.last_exit, svc.proc, svc.state = proc.returncode, None, "stopped"

    def shutdown(self) -> None:
        self._stop(self.services)
        for svc in self.services:
            if svc.state != "failed":
                svc.state = "stopped"
        self.write_state()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pktlb.lab.supervisor STATEDIR", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
