"""nftables through the `nft` program: load a ruleset, list tables, read one, delete one.

Each call runs `nft` with a timeout, in the current network namespace or, given ``netns``, inside
`ip netns exec NAME` (the lab and the tests).  Failures raise ``NftError`` with nft's own message;
a missing program says which Debian package provides it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

NFT_TIMEOUT = 10.0
# The engine's guard (daemon/guard.py builds it, the lab and the host checks look for it): one name, in the
# netdev family by default (ingress); with the tc fast path in the ip family (prerouting, daemon/readpoint.py).
GUARD_FAMILY = "netdev"
GUARD_TABLE = "pktlb_guard"
_COMMENT = re.compile(r'^\s*comment "((?:[^"\\]|\\.)*)"', re.MULTILINE)


class NftError(RuntimeError):
    """nft failed or is missing; the message says what nft said."""


class Nft:
    def __init__(self, netns: str | None = None, timeout: float = NFT_TIMEOUT) -> None:
        self.netns, self.timeout = netns, timeout

    def run(self, args: list[str], stdin: str | None = None) -> str:
        if shutil.which("nft") is None:
            raise NftError("nft is not installed (Debian package nftables)")
        argv = ["nft", *args]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise NftError(f"nft {' '.join(args)} did not finish within {self.timeout:.0f} s") from None
        if done.returncode != 0:
            raise NftError(f"nft {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def load(self, script: str) -> None:
        """Apply ``script`` as one transaction (`nft -f -`): all of it or nothing."""
        self.run(["-f", "-"], stdin=script)

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in the namespace."""
        found = []
        for line in self.run(["list", "tables"]).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table":
                found.append((parts[1], parts[2]))
        return found

    def table_text(self, family: str, name: str) -> str | None:
        """The table as `nft list table` prints it, or None when there is no such table."""
        if (family, name) not in self.tables():
            return None
        return self.run(["list", "table", family, name])

    def delete_table(self, family: str, name: str) -> bool:
        """Delete exactly this table; False when it was not there."""
        if (family, name) not in self.tables():
            return False
        self.run(["delete", "table", family, name])
        return True


def table_comment(text: str) -> str | None:
    """The ``comment "..."`` of a table listed by `nft list table` (its first comment line)."""
    found = _COMMENT.search(text)
    return found.group(1) if found else None
