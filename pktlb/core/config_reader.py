"""Reading TOML tables into typed values, with errors that name the key, the value and what was expected.

``Section(table, path, known_keys)`` wraps one table: it refuses keys it does not know and reads each
key with a type (``get``), a range (``int_in``), a choice, an address...  Every config module (the
engine's ``pktlb.core.config``, the proxy's ``pktlb.core.l7.settings``) reads its tables through it,
so every error reads the same: ``config error at service[0].backend[2].weight: got -1, expected ...``.
"""

from __future__ import annotations

from typing import Any, overload

from pktlb.core.packet.addr import ip_to_int, mac_to_bytes


class ConfigError(ValueError):
    """A bad configuration value: ``key`` is the path to it, ``value`` what was given."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config error at {key}: got {value!r}, expected {expected}")


class Section:
    """Reads typed keys out of one TOML table and refuses keys it does not know."""

    def __init__(self, table: Any, path: str, known: set[str]):
        if not isinstance(table, dict):
            raise ConfigError(path, table, "a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{path}.{unknown[0]}" if path else unknown[0], table[unknown[0]],
                              f"one of the known keys: {', '.join(sorted(known))}")
        self.table, self.path = table, path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, expected: str = "") -> Any:
        if name not in self.table:
            if default is ...:
                raise ConfigError(self.key(name), None, f"{expected or kind_name(kind)} (required)")
            return default
        value = self.table[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(self.key(name), value, expected or kind_name(kind))
        if not isinstance(value, kind):
            raise ConfigError(self.key(name), value, expected or kind_name(kind))
        return value

    def int_in(self, name: str, lo: int, hi: int, default: Any = ...) -> int:
        value = self.get(name, int, default, expected=f"an integer from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ConfigError(self.key(name), value, f"an integer from {lo} to {hi}")
        return int(value)

    def positive(self, name: str, default: float) -> float:
        value = self.get(name, (int, float), default, expected="a positive number of seconds")
        if value <= 0:
            raise ConfigError(self.key(name), value, "a positive number of seconds")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(name, str, default, expected=f"one of {', '.join(choices)}")
        if value not in choices:
            raise ConfigError(self.key(name), value, f"one of {', '.join(choices)}")
        return str(value)

    @overload
    def ipv4(self, name: str) -> str: ...
    @overload
    def ipv4(self, name: str, default: str) -> str: ...
    @overload
    def ipv4(self, name: str, default: None) -> str | None: ...

    def ipv4(self, name: str, default: Any = ...) -> str | None:
        """A dotted-quad IPv4 address (required without ``default``; ``None`` only when that is the default)."""
        value = self.get(name, str, default, expected="an IPv4 address like 198.18.0.2")
        if value is None:
            return None
        try:
            ip_to_int(value)
        except ValueError:
            raise ConfigError(self.key(name), value, "an IPv4 address like 198.18.0.2") from None
        return str(value)

    def mac(self, name: str) -> str | None:
        value = self.get(name, str, None, expected="a MAC address like 02:00:c6:12:00:0b")
        if value is not None:
            try:
                mac_to_bytes(value)
            except ValueError:
                raise ConfigError(self.key(name), value, "a MAC address like 02:00:c6:12:00:0b") from None
        return None if value is None else str(value)


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
