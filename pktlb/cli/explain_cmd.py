"""``pktlb explain``: one frame through the data path, step by step, for teaching (no root needed)."""

from __future__ import annotations

import os
import sys

import click

from pktlb.adapters.pcap import PcapError, read_pcap
from pktlb.cli.common import emit_json, load_config_or_exit
from pktlb.core.config import MODES, Config
from pktlb.core.datapath import DataPath
from pktlb.lab.addressing import LAB_MAC_NOTE, lab_macs
from pktlb.lab.engines import EngineNotFound, find_lab
from pktlb.lab.paths import labs_present
from pktlb.lab.topology import DEFAULT_PREFIX
from pktlb.reports.explain.inputs import (
    FrameSpec,
    build_frame,
    check_address,
    config_for_mode,
    flow_opening,
    lab_config_path,
    live_snapshot,
    parse_endpoint,
    same_flow_frames,
)
from pktlb.reports.explain.run import explain
from pktlb.reports.explain.text import render

STEP = 0.001  # seconds between the synthetic frames of a warm-up
TCP_FLAG_LETTERS = "FSRPAUEC"  # scapy's letters, bit 0 (FIN) to bit 7 (CWR)


@click.command("explain")
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="pktlb TOML config to explain with.")
@click.option("--lab", "use_lab", is_flag=True, help="Use the running lab's engine config (/run/pktlb/PREFIX/pktlb.toml).")
@click.option("--prefix", default=None,
              help="The lab's name prefix (with --lab; default: the one lab that is up, else pktlb-).")
@click.option("--mode", type=click.Choice(MODES), help="Switch every service to this mode (compare modes quickly).")
@click.option("--tcp", nargs=2, metavar="SRC:PORT DST:PORT", help="A TCP segment from SRC:PORT to DST:PORT.")
@click.option("--udp", nargs=2, metavar="SRC:PORT DST:PORT", help="A UDP datagram from SRC:PORT to DST:PORT.")
@click.option("--icmp", nargs=2, metavar="SRC DST", help="An ICMP message (echo request unless --type says otherwise).")
@click.option("--flags", default=None, help="TCP flags, scapy letters (S, A, PA, F, R ...).  [default: S]")
@click.option("--type", "icmp_type", type=click.IntRange(0, 255), default=8, show_default=True,
              help="ICMP type (3: unreachable, 11: time exceeded; errors quote a reply VIP:port -> SRC:40000).")
@click.option("--code", "icmp_code", type=click.IntRange(0, 255), default=0, show_default=True, help="ICMP code.")
@click.option("--pcap", "pcap_path", type=click.Path(exists=True, dir_okay=False), help="Take the frame from this capture (pcap or pcapng).")
@click.option("--index", type=click.IntRange(0), default=0, show_default=True, help="Which frame of --pcap (0 first).")
@click.option("--payload-size", type=click.IntRange(0, 65000), default=None, help="Payload bytes.  [default: 0]")
@click.option("--ttl", type=click.IntRange(0, 255), default=None, help="IP TTL.  [default: 64]")
@click.option("--df/--no-df", default=None, help="Set the IP don't-fragment flag.  [default: --df]")
@click.option("--after", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Send N earlier packets of the same flow first (TCP: a SYN, then ACKs), to show a flow-table hit.")
@click.option("--flows-from", type=click.Path(exists=True, dir_okay=False),
              help="Warm the flow table with this capture (pcap or pcapng) first (with the --pcap file: only the frames before --index).")
@click.option("--no-return", is_flag=True, help="NAT/full-NAT: do not synthesise and explain the backend's reply.")
@click.option("--changed-only", is_flag=True, help="Diff table: only the fields that changed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: steps, diff rows, checksums, decision.")
def explain_command(config_path: str | None, use_lab: bool, prefix: str | None, mode: str | None, tcp, udp, icmp,
                    flags: str | None, icmp_type: int, icmp_code: int, pcap_path: str | None, index: int,
                    payload_size: int | None, ttl: int | None, df: bool | None, after: int, flows_from: str | None,
                    no_return: bool, changed_only: bool, as_json: bool) -> None:
    """Explain what the data path does with one frame: service, flow table, scheduler, rewrite,
    the field-by-field diff, the checksum arithmetic, and the return packet (NAT modes).

    \b
      pktlb explain -c examples/nat.toml --tcp 198.18.1.10:40000 198.19.0.100:80 --flags S
      pktlb explain -c examples/nat.toml --mode tunnel --tcp 198.18.1.10:40000 198.19.0.100:80 --payload-size 1460
      pktlb explain --lab --pcap out/sample.pcap --index 2 --flows-from out/sample.pcap
    """
    config, config_label = _config(config_path, use_lab, prefix)
    config, notes = config_for_mode(config, mode)
    if mode:
        config_label += f", every service switched to mode {mode}"
    datapath = _datapath(config)
    if use_lab:
        snapshot, note = live_snapshot(config)
        datapath.swap(snapshot)
        notes.append(note)
    notes.append(LAB_MAC_NOTE)
    sources = [name for name, given in (("--tcp", tcp), ("--udp", udp), ("--icmp", icmp), ("--pcap", pcap_path))
               if given]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --tcp, --udp, --icmp or --pcap")
    if pcap_path and (payload_size is not None or ttl is not None or df is not None or flags is not None):
        raise click.UsageError("--payload-size, --ttl, --df and --flags describe a frame given on the command line, "
                               "not one taken from --pcap")
    if flags is not None and not tcp:
        raise click.UsageError("--flags applies to --tcp only")
    if flags is not None and (not flags or set(flags) - set(TCP_FLAG_LETTERS)):
        raise click.BadParameter(f"got {flags!r}, expected letters from {TCP_FLAG_LETTERS} (S, A, PA, FA ...)",
                                 param_hint="--flags")
    warm: list[tuple[float, bytes | bytearray]] = []
    if flows_from:
        warm += _pcap_frames(flows_from, index if pcap_path and _same_file(flows_from, pcap_path) else None)
    now = warm[-1][0] + STEP if warm else 0.0
    frame: bytes | bytearray
    if pcap_path:
        frame, ts, source = _pcap_frame(pcap_path, index)
        now = max(now, ts)
    else:
        spec = _spec(tcp, udp, icmp, flags, icmp_type, icmp_code, payload_size, ttl, df)
        frame, source = build_frame(spec, datapath.snapshot), spec.describe()
    opener = flow_opening(frame, datapath.snapshot)
    extra = ([opener] if opener is not None else []) + same_flow_frames(frame, after)
    for i, raw in enumerate(extra):
        warm.append((now + i * STEP, raw))
    if opener is not None:
        notes.append("the ICMP error quotes a packet of a flow: that flow is opened first (a SYN), as in real life")
    result = explain(datapath, frame, source=source, config_label=config_label, notes=notes, warm=warm,
                     now=now + len(extra) * STEP, with_return=not no_return)
    if as_json:
        emit_json(result.as_dict())
    else:
        style = click.style if sys.stdout.isatty() else (lambda text, **_: text)
        click.echo(render(result, style=style, changed_only=changed_only))


def _config(config_path: str | None, use_lab: bool, prefix: str | None) -> tuple[Config, str]:
    if bool(config_path) == use_lab:
        raise click.UsageError("give exactly one of -c/--config or --lab")
    if config_path:  # (and not --lab)
        return load_config_or_exit(config_path), config_path
    if prefix is None:
        prefix = _only_lab()
    path = lab_config_path(prefix)
    if not path.exists():
        raise click.ClickException(f"no lab config at {path}: is the lab {prefix!r} up? (pktlb lab up)")
    return load_config_or_exit(str(path)), f"{path} (the running lab {prefix!r})"


def _only_lab() -> str:
    """The prefix of the one lab that is up; the default prefix when there is none (its error says so)."""
    try:
        return find_lab().prefix
    except EngineNotFound as exc:
        if labs_present():
            raise click.ClickException(str(exc)) from None
        return DEFAULT_PREFIX


def _datapath(config: Config) -> DataPath:
    try:
        return DataPath(config, macs=lab_macs(config))  # no kernel to ask: the lab's MACs, said in the notes
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


Endpoints = tuple[str, str]  # the two addresses --tcp/--udp/--icmp take (SRC[:PORT] DST[:PORT])


def _spec(tcp: Endpoints | None, udp: Endpoints | None, icmp: Endpoints | None, flags: str | None,
          icmp_type: int, icmp_code: int, payload_size: int | None, ttl: int | None, df: bool | None) -> FrameSpec:
    size, hops, dont_fragment = payload_size or 0, 64 if ttl is None else ttl, True if df is None else df
    try:
        if icmp:
            return FrameSpec("icmp", check_address(icmp[0]), check_address(icmp[1]), icmp_type=icmp_type,
                             icmp_code=icmp_code, payload_size=size, ttl=hops, df=dont_fragment)
        pair, proto = (tcp, "tcp") if tcp else (udp, "udp")
        if pair is None:
            raise click.UsageError("give exactly one of --tcp, --udp, --icmp or --pcap")
        (src, sport), (dst, dport) = parse_endpoint(pair[0]), parse_endpoint(pair[1])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return FrameSpec(proto, src, dst, sport, dport, flags=flags or "S", payload_size=size, ttl=hops, df=dont_fragment)


def _pcap_frames(path: str, limit: int | None) -> list[tuple[float, bytes]]:
    try:
        frames = [(ts, bytes(f)) for ts, f in read_pcap(path)]
    except PcapError as exc:
        raise click.ClickException(str(exc)) from None
    return frames if limit is None else frames[:limit]


def _pcap_frame(path: str, index: int) -> tuple[bytes, float, str]:
    frames = _pcap_frames(path, None)
    if index >= len(frames):
        raise click.BadParameter(f"got {index}, expected 0 to {len(frames) - 1} ({path} has {len(frames)} frames)",
                                 param_hint="--index")
    ts, frame = frames[index]
    return frame, ts, f"frame {index} of {path}"


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


COMMANDS = [explain_command]
