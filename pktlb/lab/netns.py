"""The one way pktlb runs a command in a network namespace: ``Namespace(name).run(argv)`` / ``.popen(argv)``.

A ``Namespace`` is a small value naming a namespace under ``/run/netns`` (``ip netns add``); the
command runs through ``ip netns exec NAME``, so what runs is exactly what a student would type.
``Namespace.current()`` (no name) runs commands where pktlb itself runs: the host, or the
namespace pktlb was started in (``pktlb doctor`` on a real host).

Every ``run`` has a timeout (``DEFAULT_TIMEOUT`` unless told otherwise) and failures raise one
error type, ``CommandError``, carrying the namespace, the command, the exit code (None after a
timeout or when the program is missing) and what the command printed on stderr.  It is a
``subprocess.SubprocessError``, so code that already guards against ``subprocess`` failures
catches it too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DEFAULT_TIMEOUT = 15.0  # seconds for any one command run in a namespace
NETNS_DIR = Path("/run/netns")


class CommandError(subprocess.SubprocessError):
    """A command run in a namespace failed: it exited non-zero, ran over its timeout, or is missing."""

    def __init__(self, namespace: str | None, argv: Sequence[str], *, returncode: int | None = None,
                 stderr: str = "", timeout: float | None = None, missing: bool = False) -> None:
        self.namespace, self.argv, self.returncode = namespace, list(argv), returncode
        self.stderr, self.timeout, self.missing = stderr, timeout, missing
        where = f" in {namespace}" if namespace else ""
        command = shlex.join(self.argv)
        if missing:
            text = f"program not found{where}: {self.argv[0]} (see netns/README.md for the Debian packages)"
        elif timeout is not None:
            text = f"timed out after {timeout:.0f} s{where}: {command}"
        else:
            text = f"exit code {returncode}{where}: {command}" + (f": {stderr.strip()}" if stderr.strip() else "")
        super().__init__(text)


@dataclass(frozen=True)
class Namespace:
    """A network namespace by name (None: the one pktlb runs in)."""

    name: str | None

    @classmethod
    def current(cls) -> Namespace:
        return cls(None)

    @property
    def path(self) -> Path | None:
        return NETNS_DIR / self.name if self.name else None

    def exists(self) -> bool:
        return self.path is None or self.path.exists()

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The full command line that runs ``argv`` in this namespace (what ``--dry-run`` prints)."""
        return ["ip", "netns", "exec", self.name, *argv] if self.name else list(argv)

    def shell_prefix(self) -> str:
        """What to type before a command to run it here ("" for the current namespace)."""
        return f"ip netns exec {self.name} " if self.name else ""

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
            stdin: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here and wait (at most ``timeout`` s); its output as text.

        CommandError after the timeout, for a missing program, and (with ``check``) for a non-zero exit."""
        try:
            done = subprocess.run(self.argv(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                                  env=_environ(env))
        except subprocess.TimeoutExpired:
            raise CommandError(self.name, argv, timeout=timeout) from None
        except FileNotFoundError:
            raise CommandError(self.name, argv, missing=True) from None
        if check and done.returncode != 0:
            raise CommandError(self.name, argv, returncode=done.returncode, stderr=done.stderr or done.stdout or "")
        return done

    def popen(self, argv: Sequence[str], *, stdin: int | IO[Any] | None = subprocess.DEVNULL,
              stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None, text: bool = False,
              env: Mapping[str, str] | None = None, **options: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` here without waiting (standard input from /dev/null unless given).

        CommandError if the program (or ``ip``) is missing."""
        try:
            return subprocess.Popen(self.argv(argv), stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                                    env=_environ(env), **options)
        except FileNotFoundError:
            raise CommandError(self.name, argv, missing=True) from None


def _environ(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    """The child's environment: ours plus ``extra`` (None: ours unchanged)."""
    return None if extra is None else {**os.environ, **extra}


def namespaces(prefix: str = "") -> list[str]:
    """The named namespaces present (``ip netns list``), those starting with ``prefix``, sorted."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []
