"""Fakes for the LB tier's unit tests: a BIRD control socket and an engine control socket, each a
thread serving a Unix socket in a temporary directory (no root, no BIRD needed)."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


class _Server:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.serve(conn)
                except OSError:
                    pass

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(2)


def _readline(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


class FakeBird(_Server):
    """Speaks BIRD's control protocol for `show protocols`, `enable NAME` and `disable NAME`."""

    def __init__(self, path: str, protocols: dict[str, str] | None = None) -> None:
        self.protocols = dict(protocols or {"announce": "down", "uplink": "up"})
        self.commands: list[str] = []
        super().__init__(path)

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
        cmd = _readline(conn).strip()
        self.commands.append(cmd)
        words = cmd.split()
        if cmd == "show protocols":
            out = "2002-Name       Proto      Table      State  Since         Info\n"
            for i, (name, state) in enumerate(self.protocols.items()):
                code = "1002-" if i == 0 else " "
                info = "Established" if name == "uplink" else ""
                proto = "BGP" if name == "uplink" else "Static"
                out += f"{code}{name:<10} {proto:<10} master4    {state:<6} 10:00:00.000  {info}\n"
            conn.sendall((out + "0000 \n").encode())
        elif len(words) == 2 and words[0] in ("enable", "disable") and words[1] in self.protocols:
            self.protocols[words[1]] = "up" if words[0] == "enable" else "down"
            conn.sendall(f"0011 {words[1]}: {words[0]}d\n0000 \n".encode())
        else:
            conn.sendall(b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n")


class FakeEngine(_Server):
    """Answers {"cmd": "stats"} with ``self.stats`` (None: closes without a reply)."""

    def __init__(self, path: str, stats: dict[str, Any] | None) -> None:
        self.stats = stats
        super().__init__(path)

    def serve(self, conn: socket.socket) -> None:
        request = json.loads(_readline(conn))
        if self.stats is None:
            return
        if request.get("cmd") == "stats":
            conn.sendall(json.dumps({"ok": True, "result": self.stats}).encode() + b"\n")
        else:
            conn.sendall(json.dumps({"ok": False, "error": "unknown"}).encode() + b"\n")


def engine_stats(vip: str = "198.19.0.100", states: tuple[str, ...] = ("up", "up")) -> dict[str, Any]:
    return {"kind": "engine", "services": [{
        "name": "web", "vip": vip, "port": 80,
        "backends": [{"name": f"be{i + 1}", "state": s, "weight": 1} for i, s in enumerate(states)]}]}
