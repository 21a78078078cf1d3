"""The control socket: a Unix stream socket (mode 0600) speaking one JSON object per line.

Request  ``{"cmd": "stats"}``, ``{"cmd": "backend", "action": "drain", "service": "web", "backend": "be2"}``
Reply    ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "what was wrong"}``

The server runs inside the engine's event loop with non-blocking sockets: a slow or hostile
client can neither block forwarding nor grow memory (requests are capped at ``MAX_REQUEST``
bytes, connections at ``MAX_CLIENTS``; a reply the client does not read is written as the socket
drains, and the connection is closed after ``REPLY_TIMEOUT`` seconds).  Callers whose uid (SO_PEERCRED) is not the engine's own
or root are refused even if the file mode were loosened.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pktlb.ctlsock")
MAX_REQUEST = 65536
MAX_CLIENTS = 32
REPLY_TIMEOUT = 5.0
Handler = Callable[[dict[str, Any]], Any]


class ControlServer:
    def __init__(self, path: str, handler: Handler, reactor: Any) -> None:
        self.path = path
        self.handler = handler
        self.reactor = reactor
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            if answers(path):
                raise SocketInUse(f"control socket {path} is in use: another engine is running with it")
            os.unlink(path)  # left behind by an engine that died
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.refused = 0
        self.errors = 0
        reactor.add_reader(self.sock, self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        if len(self.clients) >= MAX_CLIENTS or not self._allowed(conn):
            self.refused += 1
            self._reply(conn, {"ok": False, "error": "permission denied"})
            conn.close()
            return
        conn.setblocking(False)
        self.clients[conn.fileno()] = (conn, bytearray())
        self.reactor.add_reader(conn, lambda c=conn: self._read(c))

    @staticmethod
    def _allowed(conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.geteuid())

    def _read(self, conn: socket.socket) -> None:
        _, buf = self.clients.get(conn.fileno(), (None, None))
        if buf is None:
            return
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        buf += chunk
        if b"\n" not in buf:
            if len(buf) > MAX_REQUEST:
                self._finish(conn, {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"})
            return
        line = bytes(buf.split(b"\n", 1)[0])
        self._finish(conn, self.respond(line))

    def respond(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self.errors += 1
            return {"ok": False, "error": f"invalid JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.errors += 1
            return {"ok": False, "error": 'expected an object with a "cmd" string'}
        try:
            return {"ok": True, "result": self.handler(request)}
        except (ValueError, KeyError, TypeError) as exc:
            self.errors += 1
            return {"ok": False, "error": str(exc).strip("'\"")}
        except Exception as exc:  # a bug in a handler must not take the engine down
            self.errors += 1
            log.exception("control request %r failed", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    def _finish(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        """Send the reply without blocking the loop: what the socket does not take now goes when it
        drains; a client that stops reading is dropped after REPLY_TIMEOUT."""
        fd = conn.fileno()
        self.clients[fd] = (conn, bytearray(json.dumps(reply, default=str).encode() + b"\n"))
        self.reactor.call_later(REPLY_TIMEOUT, lambda: self._give_up(conn))
        self._write(conn)

    def _write(self, conn: socket.socket) -> None:
        entry = self.clients.get(conn.fileno())
        if entry is None or entry[0] is not conn:
            return
        out = entry[1]
        try:
            sent = conn.send(out)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client went away
            self._close(conn)
            return
        del out[:sent]
        if out:
            self.reactor.watch_writable(conn, lambda: self._write(conn))
        else:
            self._close(conn)

    def _give_up(self, conn: socket.socket) -> None:
        entry = self.clients.get(conn.fileno()) if conn.fileno() >= 0 else None
        if entry is not None and entry[0] is conn:
            log.warning("control client did not read its reply within %.0f s: closed", REPLY_TIMEOUT)
            self._close(conn)

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass

    def _close(self, conn: socket.socket) -> None:
        self.clients.pop(conn.fileno(), None)
        self.reactor.remove_reader(conn)
        conn.close()

    def close(self) -> None:
        for conn, _ in list(self.clients.values()):
            self._close(conn)
        self.reactor.remove_reader(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SocketInUse(RuntimeError):
    pass


def answers(path: str) -> bool:
    """Whether an engine listens on the control socket ``path`` (a connect succeeds)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def worker_socket(base: str, index: int) -> str:
    """Worker ``index``'s control socket when ``pktlb run --workers N`` uses ``base``: ``<base>.w<index>``."""
    return base if index == 0 else f"{base}.w{index}"


def worker_sockets(base: str) -> list[str]:
    """``base`` and, with ``pktlb run --workers N``, the other workers' sockets present now, in worker order."""
    others = [p for p in glob.glob(glob.escape(base) + ".w*") if p.rsplit(".w", 1)[1].isdigit()]
    return [base] + sorted(others, key=lambda p: int(p.rsplit(".w", 1)[1]))


class ControlClientError(RuntimeError):
    pass


def request(path: str, payload: dict[str, Any], timeout: float = 5.0) -> Any:
    """Send one request to a running engine and return its result; ControlClientError with the reason."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before our request was read: the engine's answer may be waiting all the same
        data = bytearray()
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # after the reply, when our request was left unread
                break
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise ControlClientError(f"no engine control socket at {path} (is `pktlb run` running?)") from None
    except PermissionError:
        raise ControlClientError(f"permission denied on {path}: the control socket is root-only (mode 0600)") from None
    except OSError as exc:
        raise ControlClientError(f"{path}: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlClientError(f"{path}: engine sent no valid reply") from None
    if not reply.get("ok"):
        raise ControlClientError(reply.get("error", "request failed"))
    return reply.get("result")

