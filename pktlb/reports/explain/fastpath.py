"""What the kernel fast path would do with the explained frame (issue 15, point 6).

The real program runs on the frame (BPF_PROG_TEST_RUN, no device, nothing attached) with its maps
filled from the same snapshot and flow table the Python data path is about to use; then the answer
is compared with Python's: "forward in the kernel (the same bytes as Python)" or "punt to Python:
<reason>".  Without root, libbpf or the built object it says why it could not ask.
"""

from __future__ import annotations

import time
from typing import Any

from pktlb.core.datapath import DataPath
from pktlb.core.fastpath import encode
from pktlb.core.fastpath import layout as L
from pktlb.core.rewrite.registry import get_rewriter
from pktlb.core.rewrite.tunnel import TunnelRewriter

_loaded: Any = None


def _fastpath() -> tuple[Any, str]:
    global _loaded
    from pktlb.adapters.fastpath import FastPath, availability
    from pktlb.adapters.libbpf import BpfError

    if _loaded is None:
        why = availability()
        if why:
            return None, why
        try:
            _loaded = FastPath(4096, ("xdp",))
        except BpfError as exc:
            return None, str(exc)
    return _loaded, ""


def ask(datapath: DataPath, frame: bytes, now: float) -> dict[str, Any]:
    """Run the program on ``frame`` before Python does (the caller compares the bytes afterwards)."""
    fp, why = _fastpath()
    if fp is None:
        return {"checked": False, "why": why}
    ids = encode.Ids()
    fp.apply(encode.encode_snapshot(datapath.snapshot, datapath.flows.config, ids))
    fp.clear("pktlb_flows")
    fp.clear("pktlb_snat_reverse")
    offset = time.monotonic_ns() - int(now * 1e9)
    fp.apply(encode.encode_flows(datapath.flows, datapath.snapshot, ids, now, offset))
    tunnel = get_rewriter("tunnel")
    if isinstance(tunnel, TunnelRewriter):  # the engine's tunnel numbering, so the kernel's outer IDs agree
        fp.set_tunnel_id(tunnel.next_id)
    before = fp.counters()
    ret, out, ns = fp.test_run(frame, "xdp")
    after = fp.counters()
    changed = [L.COUNTERS[i] for i in range(len(after)) if after[i] != before[i]]
    if ret == 3:  # XDP_TX
        return {"checked": True, "verdict": "forward", "new_flow": "new_flow" in changed, "output": out.hex()}
    reason = next((r for r in changed if r in L.PUNT_REASONS), "?")
    return {"checked": True, "verdict": "punt", "reason": reason, "meaning": L.PUNT_MEANINGS.get(reason, "")}


def settle(answer: dict[str, Any], outputs: list[bytes]) -> dict[str, Any]:
    """Add whether the kernel's frame is Python's, byte for byte."""
    if answer.get("verdict") == "forward":
        answer["same_bytes"] = len(outputs) == 1 and outputs[0].hex() == answer.pop("output")
    return answer


def line(answer: dict[str, Any]) -> str:
    if not answer.get("checked"):
        return f"fast path: not asked ({answer.get('why')})"
    if answer["verdict"] == "forward":
        same = "the same bytes as Python" if answer.get("same_bytes") else "DIFFERENT bytes from Python (a bug)"
        new = ", scheduling the new flow itself" if answer.get("new_flow") else ""
        return f"fast path (XDP): forwards it in the kernel{new} ({same}); Python never sees it"
    return f"fast path (XDP): punts it to Python: {answer['reason']} ({answer['meaning']})"
