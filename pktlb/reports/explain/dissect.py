"""scapy's dissection of a frame as labelled field rows, and the field-by-field diff of two frames.

Used by ``pktlb explain`` to show what the data path changed.  Layers are labelled so that a
tunnelled frame lines up with the original: the added header is ``IP (outer)``, the untouched
inner one stays ``IP``; headers quoted inside an ICMP error are ``IP in ICMP`` / ``TCP in ICMP``.
Payload bytes are summarised as one row (their length), not dissected.
"""

from __future__ import annotations

from dataclasses import dataclass

from scapy.fields import FlagValue
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Packet, Padding, Raw

PAYLOAD = "payload"


@dataclass(frozen=True)
class Layer:
    label: str
    offset: int  # byte offset of the header in the frame
    depth: int  # position in scapy's layer chain (Ether is 0)
    fields: tuple[tuple[str, str], ...]  # (field name, value as text)


@dataclass(frozen=True)
class DiffRow:
    layer: str
    field: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "field": self.field, "before": self.before, "after": self.after,
                "changed": self.changed}


def dissect(frame: bytes | bytearray) -> list[Layer]:
    """The frame's headers, outermost first, each with its fields as scapy shows them."""
    pkt = Ether(bytes(frame))
    layers: list[Layer] = []
    offset, depth, payload_bytes = 0, 0, 0
    layer: Packet = pkt
    seen: dict[str, int] = {}
    while not isinstance(layer, NoPayload):
        if isinstance(layer, (Raw, Padding)):
            payload_bytes += len(bytes(layer)) - len(bytes(layer.payload))
        else:
            label = _label(layer)
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            layers.append(Layer(label, offset, depth, tuple(_fields(layer))))
        offset += len(bytes(layer)) - len(bytes(layer.payload))
        depth += 1
        layer = layer.payload
    layers.append(Layer(PAYLOAD, offset, depth, (("bytes", str(payload_bytes)),)))
    return layers


def diff(before: bytes | bytearray, after: bytes | bytearray) -> list[DiffRow]:
    """Every field of both dissections, matched by layer label and field name (``-``: absent)."""
    old = {layer.label: dict(layer.fields) for layer in dissect(before)}
    new_layers = dissect(after)
    rows: list[DiffRow] = []
    for layer in new_layers:
        previous = old.get(layer.label, {})
        for name, value in layer.fields:
            rows.append(DiffRow(layer.label, name, previous.get(name, "-"), value))
        for name, value in previous.items():
            if name not in dict(layer.fields):
                rows.append(DiffRow(layer.label, name, value, "-"))
    labels = {layer.label for layer in new_layers}
    for label, fields in old.items():
        if label not in labels:
            rows.extend(DiffRow(label, name, value, "-") for name, value in fields.items())
    return rows


def summary(frame: bytes | bytearray) -> str:
    """scapy's one-line summary, e.g. ``Ether / IP / TCP 198.18.1.10:40000 > 198.19.0.100:http S``."""
    return Ether(bytes(frame)).summary()


def _label(layer: Packet) -> str:
    name = type(layer).__name__
    if name.endswith("error"):  # IPerror, TCPerror, UDPerror, ICMPerror: the header an ICMP error quotes
        return f"{name[:-5]} in ICMP"
    if name == "IP" and type(layer.payload) is IP:
        return "IP (outer)"
    return name


def _fields(layer: Packet):
    # The layer was dissected from bytes: ``layer.fields`` holds what was read, so a conditional field
    # whose condition did not hold (ICMP's id and seq in an error, its gateway in an echo) is not there.
    for field in layer.fields_desc:
        if field.name not in layer.fields:
            continue
        raw = layer.getfieldval(field.name)
        if raw is None or (isinstance(raw, bytes) and not raw):
            continue
        yield field.name, _text(layer, field, raw)


def _text(layer: Packet, field, raw) -> str:
    if isinstance(raw, FlagValue):
        return f"{str(raw) or 'none'} (0x{int(raw):02x})"
    shown = field.i2repr(layer, raw)
    if isinstance(raw, int):
        if field.name == "type" and isinstance(layer, Ether):
            return f"0x{raw:04x} ({shown})"
        if shown.startswith("0x") or shown == str(raw):
            return shown
        return f"{raw} ({shown})"
    return str(shown)
