"""A client for BIRD's control socket (what ``birdc`` speaks), and parsers for two of its answers.

BIRD's control protocol is line based: the daemon greets with ``0001 BIRD 2.0.12 ready.``; each
command is one line; each answer line starts with a four-digit code followed by ``-`` (more lines
follow) or `` `` (the last line), and a line starting with a space continues the previous code.
Codes 0xxx/1xxx/2xxx are results, 8xxx run-time errors, 9xxx parse errors.  No subprocess, no
``birdc`` needed: the socket is a file, so this works across network namespaces.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

CONNECT_TIMEOUT = 2.0


class BirdError(RuntimeError):
    """BIRD cannot be reached, or answered a command with an error (the message says which)."""


@dataclass(frozen=True)
class Reply:
    code: int  # the code of the last line (0 = OK)
    lines: tuple[tuple[int, str], ...]  # (code, text) of every line, continuations under their code

    @property
    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)


def parse_reply(raw: str) -> Reply | None:
    """The reply in ``raw`` if it is complete (ends with a final ``NNNN `` line), else None."""
    lines: list[tuple[int, str]] = []
    code = 0
    for line in raw.split("\n")[:-1]:  # the part after the last newline is incomplete
        if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
            code = int(line[:4])
            lines.append((code, line[5:]))
            if line[4] == " ":
                return Reply(code, tuple(lines))
        elif line.startswith(" "):
            lines.append((code, line[1:]))
        elif line:
            raise BirdError(f"unexpected line from BIRD: {line!r}")
    return None


def command(path: str, text: str, timeout: float = CONNECT_TIMEOUT) -> Reply:
    """Send one command to the BIRD at ``path``; BirdError if unreachable or on an error code."""
    if "\n" in text:
        raise BirdError("a BIRD command is one line")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        greeting = _read_reply(sock)
        if greeting.code != 1:
            raise BirdError(f"{path}: unexpected greeting {greeting.text!r}")
        sock.sendall(text.encode() + b"\n")
        reply = _read_reply(sock)
    except FileNotFoundError:
        raise BirdError(f"no BIRD control socket at {path} (is bird running?)") from None
    except OSError as exc:
        raise BirdError(f"{path}: {exc}") from None
    finally:
        sock.close()
    if reply.code >= 8000:
        raise BirdError(f"BIRD refused {text!r}: {reply.text}")
    return reply


def _read_reply(sock: socket.socket) -> Reply:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise BirdError("BIRD closed the control connection mid-reply")
        data += chunk
        reply = parse_reply(data.decode(errors="replace"))
        if reply is not None:
            return reply


@dataclass(frozen=True)
class ProtocolState:
    name: str
    proto: str  # BGP, Static, Kernel, BFD, Device, Pipe
    state: str  # up, down, start
    info: str  # "Established", "Active", "Idle" ... for BGP


def parse_protocols(reply: Reply) -> dict[str, ProtocolState]:
    """``show protocols``: one row per protocol, by name (the header line, code 2002, skipped)."""
    rows: dict[str, ProtocolState] = {}
    for code, text in reply.lines:
        if code != 1002:
            continue
        parts = text.split()
        if len(parts) < 4:
            continue
        # name proto table state since [since-part] info...: 'since' is a time or a date + time
        name, proto, _table, state = parts[:4]
        rest = parts[5:]
        if rest and ":" in rest[0] and "." in parts[4]:  # "2024-01-01 12:00:00" style, two words
            rest = rest[1:]
        rows[name] = ProtocolState(name, proto, state, " ".join(rest))
    return rows


def protocols(path: str) -> dict[str, ProtocolState]:
    return parse_protocols(command(path, "show protocols"))


def set_protocol(path: str, name: str, enabled: bool) -> str:
    """``enable NAME`` / ``disable NAME``; BIRD's answer (e.g. 'announce: enabled')."""
    return command(path, f"{'enable' if enabled else 'disable'} {name}").text
