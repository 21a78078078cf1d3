"""The proxy process: one listener per L7 service, the control plane, health checks, the control socket, signals.

    server = ProxyServer(config)            # validated pktlb.core.config.Config (its L7 services)
    await server.start()                    # listeners, control socket, health checks, pool sweeper
    ...                                     # serve until told to stop
    await server.close()                    # listeners shut, client connections cut, sockets removed

``run_proxy(path)`` does the whole thing for ``pktlb proxy``: SIGTERM/SIGINT stop it, SIGHUP (or
``pktlb reload``) reads the config again.
Tests hand ``start`` listening sockets they bound to ephemeral ports (``listeners``), so no port
is ever guessed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import time
from typing import Any

from pktlb.adapters.configfile import load_config
from pktlb.core.config import Config
from pktlb.core.config_reader import ConfigError
from pktlb.core.l7.plan import ProxySnapshot
from pktlb.core.l7.rejects import raw_answer
from pktlb.core.l7.split import proxy_part
from pktlb.core.l7.stats import ProxyStats
from pktlb.daemon.control import ControlError
from pktlb.daemon.ctlsock import ControlServer, SocketInUse
from pktlb.daemon.proxy.control import ProxyControl
from pktlb.daemon.proxy.health import ProxyHealth
from pktlb.daemon.proxy.loop_adapter import AsyncioReactor
from pktlb.daemon.proxy.report import ProxyReporter
from pktlb.daemon.proxy.service import ServiceRuntime
from pktlb.daemon.proxy.session import ClientSession
from pktlb.daemon.proxy.tls import TlsListener, TlsSetupError, backend_context, server_context

log = logging.getLogger("pktlb.proxy")
SWEEP_INTERVAL = 1.0  # seconds between two passes closing stale pooled connections
BACKLOG = 1024


class StartupError(RuntimeError):
    """The proxy cannot start: the message says why and what to do."""


def proxy_config(config: Config) -> Config:
    """The L7 services of ``config`` (ValueError, naming the others, when there are none)."""
    config, others = proxy_part(config)
    if not config.services:
        raise ValueError(f"no service has mode l7 (services {', '.join(others) or 'none'} are for the packet "
                         "engine, `pktlb run`)")
    if others:
        log.warning("service(s) %s are not mode l7: the packet engine (`pktlb run`) serves them, the proxy "
                    "ignores them", ", ".join(others))
    return config


def load_proxy_config(path: str) -> Config:
    try:
        return proxy_config(load_config(path))
    except (ConfigError, ValueError) as exc:
        raise StartupError(f"{path}: {exc}") from None
    except OSError as exc:
        raise StartupError(f"{path}: {exc.strerror}") from None


class ProxyServer:
    def __init__(self, config: Config, *, control_socket: str | None = None, health: bool = True,
                 config_path: str | None = None) -> None:
        self.config = proxy_config(config)
        self.config_path = config_path  # what `pktlb reload` (or SIGHUP) reads again
        self.control_socket = control_socket or self.config.lb.control_socket
        self.health_enabled = health
        self.stats = ProxyStats()
        self.control = ProxyControl(self.config, on_snapshot=self._install)
        self.services: dict[str, ServiceRuntime] = {}
        self.listeners: list[asyncio.AbstractServer | TlsListener] = []
        self.sessions: set[asyncio.Task[Any]] = set()
        self.health: ProxyHealth | None = None
        self.ctl: ControlServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started = time.time()

    async def start(self, listeners: dict[str, socket.socket] | None = None) -> None:
        """Listen on every L7 service's vip:port (or on the sockets given by service name)."""
        loop = asyncio.get_running_loop()
        try:
            for name, plan in self.control.snapshot.services.items():
                try:
                    backend_ssl = backend_context(plan.l7.tls, name)
                except TlsSetupError as exc:
                    raise StartupError(str(exc)) from None
                self.services[name] = ServiceRuntime(plan, self.stats, loop, backend_ssl=backend_ssl)
            for svc in self.config.services:
                self.listeners.append(await self._listen(self.services[svc.name], (listeners or {}).get(svc.name)))
            if self.health_enabled:
                self.health = ProxyHealth(self.config, loop, self._on_health, self._on_rtt)
            reporter = ProxyReporter(self.control, self.services, self.health, self.started,
                                     reload=self.reload if self.config_path else None)
            try:
                self.ctl = ControlServer(self.control_socket, reporter.handle, AsyncioReactor(loop))
            except SocketInUse as exc:
                raise StartupError(str(exc)) from None
            except OSError as exc:
                raise StartupError(f"control socket {self.control_socket}: {exc.strerror or exc}") from None
        except BaseException:
            await self.close()
            raise
        self._sweeper = loop.create_task(self._sweep())
        log.info("proxy up: %s; control socket %s", ", ".join(f"{s.name} on {s.vip}:{s.port}"
                                                              for s in self.config.services), self.control_socket)

    async def _listen(self, rt: ServiceRuntime, sock: socket.socket | None) -> asyncio.AbstractServer | TlsListener:
        """A listener on the service's vip:port (or on ``sock``): plain HTTP, or TLS terminated here."""
        svc, tls = rt.plan.config, rt.plan.l7.tls
        handler = functools.partial(self._on_client, rt)
        try:
            if tls is None:
                where: dict[str, Any] = {"sock": sock} if sock else {"host": svc.vip, "port": svc.port,
                                                                     "reuse_address": True}
                return await asyncio.start_server(handler, backlog=BACKLOG, **where)
            context = server_context(tls, svc.name)
            if sock is None:
                sock = socket.create_server((svc.vip, svc.port), backlog=BACKLOG)
            return TlsListener(sock, context, tls, rt.counters, rt.plan.l7.max_connections, handler)
        except TlsSetupError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"service {svc.name}: cannot listen on {svc.vip}:{svc.port}: "
                               f"{exc.strerror or exc}") from None

    async def _on_client(self, rt: ServiceRuntime, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if rt.counters.open_connections >= rt.plan.l7.max_connections:
            rt.counters.rejects["too_many_connections"] += 1
            writer.write(raw_answer("too_many_connections"))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # asyncio sets it only for sockets it made itself, not for a listener handed over
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a response leaves in several writes
        task = asyncio.current_task()
        if task is not None:
            self.sessions.add(task)
        try:
            await ClientSession(rt, reader, writer).run()
        except asyncio.CancelledError:
            pass  # the proxy is stopping: the session has cut its connection
        finally:
            if task is not None:
                self.sessions.discard(task)

    def reload(self) -> dict[str, Any]:
        """Read the config file again and apply it; listeners stay as they are, so a change of the
        services or of their vip:port is refused (restart the proxy for that)."""
        try:
            config = load_proxy_config(str(self.config_path))
        except StartupError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return {"reloaded": False, "error": str(exc)}
        listening = [(s.name, s.vip, s.port, s.l7 and s.l7.tls) for s in self.config.services]
        if [(s.name, s.vip, s.port, s.l7 and s.l7.tls) for s in config.services] != listening:
            error = "the services, their vip:port or their TLS settings changed: restart the proxy for that"
            log.error("reload refused: %s", error)
            return {"reloaded": False, "error": error}
        try:
            change = self.control.reload(config)
        except (ControlError, ValueError) as exc:
            return {"reloaded": False, "error": str(exc)}
        self.config = config
        if self.health is not None:
            self.health.reconfigure(config)
        log.info("reloaded %s", self.config_path)
        return {"reloaded": True, **change.as_dict()}

    def _install(self, snapshot: ProxySnapshot) -> None:
        for name, plan in snapshot.services.items():
            rt = self.services.get(name)
            if rt is not None:
                rt.install(plan)

    def _on_health(self, service: str, backend: str, state: str, reason: str) -> None:
        log.info("health: %s/%s %s (%s)", service, backend, state, reason)
        try:
            self.control.set_health(service, backend, state, reason)
        except ControlError as exc:
            log.error("health change not applied: %s", exc)

    def _on_rtt(self, service: str, backend: str, seconds: float) -> None:
        rt = self.services.get(service)
        if rt is not None:
            rt.load(backend).observe_rtt(seconds)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for rt in self.services.values():
                rt.sweep()

    async def close(self) -> None:
        for server in self.listeners:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=2.0)
        for server in self.listeners:
            await server.wait_closed()
        self.listeners.clear()
        for rt in self.services.values():
            rt.close()
        if self.health is not None:
            self.health.close()
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None


def run_proxy(config_path: str, *, control_socket: str | None = None, health: bool = True) -> None:
    """``pktlb proxy``: serve until SIGTERM or SIGINT."""
    config = load_proxy_config(config_path)

    async def main() -> None:
        server = ProxyServer(config, control_socket=control_socket, health=health, config_path=config_path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        await server.start()
        try:
            await stop.wait()
            log.info("stopping (signal)")
        finally:
            await server.close()

    asyncio.run(main())
