"""``pktlb replay``: run every frame of a capture (pcap or pcapng) through the data path, offline and without root."""

from __future__ import annotations

import json
import sys

import click

from pktlb.adapters.pcap import PcapError, PcapWriter, read_pcap
from pktlb.cli.common import load_config_or_exit
from pktlb.core.datapath import DataPath
from pktlb.lab.addressing import LAB_MAC_NOTE, lab_macs


@click.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="pktlb TOML config (services, backends, the LB's addresses).")
@click.argument("pcap_in", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "pcap_out", type=click.Path(dir_okay=False), help="Write every emitted frame here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input frame (JSON lines).")
def replay(config_path: str, pcap_in: str, pcap_out: str | None, as_json: bool) -> None:
    """Replay PCAP_IN (pcap or pcapng) through the same data path the engine runs, and show one decision per frame.

    Frames are processed in order with the pcap's timestamps as the clock, so flow-table hits,
    idle timeouts and full-NAT ports behave as they would live.
    """
    config = load_config_or_exit(config_path)
    datapath = DataPath(config, macs=lab_macs(config))  # a pcap has no kernel to ask: the lab's MACs
    writer = PcapWriter(pcap_out) if pcap_out else None
    try:
        for index, (ts, frame) in enumerate(read_pcap(pcap_in)):
            size = len(frame)
            frames, decision = datapath.handle(frame, ts)
            if writer:
                for out in frames:
                    writer.write(out, ts)
            row = {"index": index, **decision.as_dict(), "in_bytes": size, "out_frames": len(frames),
                   "out_bytes": [len(f) for f in frames]}
            if as_json:
                click.echo(json.dumps(row))
            else:
                click.echo(_line(row))
    except PcapError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if writer:
            writer.close()
    if not as_json:
        totals = datapath.stats.totals()
        click.echo(f"-- {totals['received']} frames: {totals['forwarded']} forwarded, {totals['replied']} replied, "
                   f"{totals['dropped']} dropped {totals['drops'] or ''}", file=sys.stderr)
        click.echo(f"-- {LAB_MAC_NOTE}", file=sys.stderr)
        if writer:
            click.echo(f"-- wrote {writer.count} frames to {pcap_out}", file=sys.stderr)


def _line(row: dict) -> str:
    where = f"{row['service']} -> {row['backend']}" if row["backend"] else (row["service"] or "-")
    hit = {True: "flow hit", False: "new flow", None: ""}[row["flow_hit"]]
    detail = f" ({row['detail']})" if row["detail"] else ""
    return f"#{row['index']:<4} {row['verdict']:<7} {row['reason']:<22} {row['mode'] or '-':<8} {where} {hit}{detail}"


COMMANDS = [replay]
