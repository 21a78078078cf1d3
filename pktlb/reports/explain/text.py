"""Plain-text rendering of an ``Explanation``: numbered steps, an aligned diff table, checksum arithmetic.

``style`` is a ``click.style``-like callable the CLI passes when stdout is a terminal; the default
leaves text unstyled, so the output pasted into docs and compared in tests is plain.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from pktlb.reports.explain.checksum_steps import ChecksumStep
from pktlb.reports.explain.fastpath import line as fastpath_line
from pktlb.reports.explain.run import Explanation, PassReport

Style = Callable[..., str]
WIDTH = 110


def _plain(text: str, **_: Any) -> str:
    return text


def render(exp: Explanation, style: Style = _plain, changed_only: bool = False) -> str:
    out = [style(f"pktlb explain: {exp.source}", bold=True) + f"   (config {exp.config})"]
    out += [f"note: {n}" for n in exp.notes]
    if exp.warmup:
        out.append(f"warm-up: {len(exp.warmup)} frame(s) went through the data path first")
        shown = exp.warmup if len(exp.warmup) <= 6 else [*exp.warmup[:3], "...", *exp.warmup[-2:]]
        out += [f"  {w}" for w in shown]
    out += _pass(exp.packet, style, changed_only)
    if exp.reply is not None:
        out += _pass(exp.reply, style, changed_only, heading="return: ")
    elif exp.reply_note:
        out += ["", style("== return ==", bold=True), *_wrap(exp.reply_note, "  ")]
    return "\n".join(out)


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first if first is not None else indent,
                         subsequent_indent=indent, break_on_hyphens=False) or [first or indent]


def _pass(rep: PassReport, style: Style, changed_only: bool, heading: str = "") -> list[str]:
    dec = rep.decision
    out = ["", style(f"== {heading}{rep.title} ==", bold=True)]
    where = f"service {dec['service']}" if dec["service"] else ""
    if dec["backend"]:
        where += f" -> {dec['backend']}"
    hit = {True: "flow hit", False: "new flow", None: ""}[dec["flow_hit"]]
    verdict = style(dec["verdict"], fg="red" if dec["verdict"] == "drop" else "green", bold=True)
    extras = ", ".join(x for x in (f"mode {dec['mode']}" if dec["mode"] else "", hit) if x)
    out.append(f"decision: {verdict} {dec['reason']}  {where}" + (f"  ({extras})" if extras else ""))
    if rep.fastpath is not None:
        out += _wrap(fastpath_line(rep.fastpath), "  ", "")
    out.append("")
    for number, step in enumerate(rep.steps, 1):
        label = f"{number}. {step.name}"
        for i, line in enumerate(step.lines or ["-"]):
            first = f" {label:<14}" if i == 0 else " " * 15
            if not step.ok and line.startswith("DROP"):
                line = style(line, fg="red")
            out += _wrap(line, " " * 15, first)
    if rep.diff:
        out += ["", "Before -> after, field by field (scapy's dissection; * marks a change)"]
        rows = [r for r in rep.diff if r.changed or not changed_only]
        out += _table(["layer", "field", "before", "after", ""],
                      [[r.layer, r.field, r.before, r.after, "*" if r.changed else ""] for r in rows],
                      style)
    if rep.checksums or rep.checksum_notes:
        out += ["", "Checksums (RFC 1624 eqn. 3: HC' = ~(~HC + sum of (~m + m')) over the changed 16-bit words m -> m')"]
        for checksum_step in rep.checksums:
            out += _checksum(checksum_step, style)
        out += [f"  {n}" for n in rep.checksum_notes]
    if rep.tunnel:
        out += _tunnel(rep.tunnel, style)
    for em in rep.emitted:
        out += ["", f"The LB answered with: {em['summary']}"]
        out += _table(["layer", "field", "value"], [[la["layer"], k, v] for la in em["layers"]
                                                    for k, v in la["fields"].items()], style)
    return out


def _table(header: list[str], rows: list[list[str]], style: Style) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        text = "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        if n and row[-1] == "*":
            text = style(text, fg="yellow")
        lines.append(text)
    return lines


def _checksum(step: ChecksumStep, style: Style) -> list[str]:
    out = ["", f"  {step.header}: 0x{step.old:04x} -> 0x{step.written:04x}"]
    if step.changes:
        out += ["  " + line for line in _table(["changed word", "m", "m'", "~m + m'"],
                                               [[c.word, f"0x{c.old:04x}", f"0x{c.new:04x}", f"0x{c.term:04x}"]
                                                for c in step.changes], style)]
    if step.incremental is not None:
        terms = " + ".join(f"0x{c.term:04x}" for c in step.changes) or "0"
        folded = step.raw_sum
        while folded > 0xFFFF:
            folded = (folded & 0xFFFF) + (folded >> 16)
        out += [f"    ~HC = ~0x{step.old:04x} = 0x{~step.old & 0xFFFF:04x}"]
        out += _wrap(f"~HC + terms = 0x{~step.old & 0xFFFF:04x} + {terms} = 0x{step.raw_sum:x} -> folded (carries "
                     f"added back) 0x{folded:04x}", "      ", "    ")
        out += [f"    HC' = ~0x{folded:04x} = 0x{step.incremental:04x}"]
    if step.engine_delta is not None:
        source, value = step.engine_delta
        same = "equals" if step.delta_matches else "DIFFERS FROM"
        out += _wrap(f"the engine adds one precomputed delta, {source} = 0x{value:04x}: it {same} the sum of the "
                     f"terms (0x{step.terms_sum:04x}), so a packet costs one addition, not a sum over the header",
                     "      ", "    ")
    verdict = style("scapy agrees", fg="green") if step.agrees else style("MISMATCH", fg="red", bold=True)
    scapy = "n/a" if step.scapy is None else f"0x{step.scapy:04x}"
    inc = "" if step.incremental is None else f"incremental 0x{step.incremental:04x}, "
    out.append(f"    {inc}engine wrote 0x{step.written:04x}, scapy's full recomputation {scapy}: {verdict}")
    out += [f"    note: {n}" for n in step.notes]
    return out


def _tunnel(info: dict[str, Any], style: Style) -> list[str]:
    out = ["", "Tunnel (IP-in-IP, RFC 2003)"]
    check = "<=" if info["fits"] else ">"
    out.append(f"  MTU check: inner {info['inner_length']} + outer header {info['overhead']} = {info['outer_length']} "
               f"{check} service mtu {info['mtu']}: {'fits' if info['fits'] else 'too big'}"
               + ("" if info["fits"] else f" (DF {'set' if info['df'] else 'clear'})"))
    if "outcome" in info:
        out.append(f"  outcome: {info['outcome']}")
    outer = info.get("outer")
    if outer:
        out += _wrap(f"outer header: {outer['src']} -> {outer['dst']} (the LB to the backend), protocol "
                     f"{outer['protocol']} (IP-in-IP), TTL {outer['ttl']}, ID {outer['id']} (a counter), DF "
                     f"{'copied (set)' if outer['df'] else 'clear (copied)'}, total length {outer['total_length']}; "
                     "the inner header keeps the client's address and the VIP, so the backend answers the client "
                     "directly", "    ", "  ")
        cs = info["outer_checksum"]
        verdict = style("scapy agrees", fg="green") if cs["agrees"] else style("MISMATCH", fg="red", bold=True)
        out += _wrap(f"outer checksum = ~(precomputed base {cs['base_sum']} [version/IHL, TTL/proto, both addresses] "
                     f"+ total length {cs['total_length']} + ID {cs['id']} + flags {cs['flags']}) = {cs['computed']}; "
                     f"engine wrote {cs['written']}, scapy {cs['scapy']}: {verdict}", "    ", "  ")
    return out
