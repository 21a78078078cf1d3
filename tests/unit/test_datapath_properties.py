"""Property tests: random and mutated frames never raise out of the data path, and always get a decision."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pktlb.core.checksum import checksum
from pktlb.core.decision import DROP, DROP_REASONS, FORWARD, REPLY
from tests.frames import backend_frame, client_frame, datapath, tcp, udp

MODES = ["nat", "fullnat", "tunnel", "dsr"]
PATHS = {m: datapath(m) for m in MODES}
SEEDS = [bytes(client_frame(tcp())), bytes(client_frame(udp(), payload=b"q" * 20)),
         bytes(client_frame(tcp(flags="A"), payload=b"z" * 1500)),
         bytes(backend_frame(tcp(sport=80, dport=40000, flags="SA"), "198.18.0.11"))]


def check(frame: bytearray, mode: str) -> None:
    dp = PATHS[mode]
    before = dp.stats.received
    frames, dec = dp.handle(frame, 1.0)
    assert dec.verdict in (FORWARD, REPLY, DROP)
    assert dec.reason != "internal_error", dec.detail
    if dec.verdict == DROP:
        assert dec.reason in DROP_REASONS
    assert all(isinstance(f, bytearray) for f in frames)
    assert dp.stats.received == before + 1 and dp.stats.balanced()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from(MODES))
def test_random_bytes_never_raise(data, mode):
    check(bytearray(data), mode)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 1600), st.integers(0, 255)), max_size=8),
       st.integers(0, 1600), st.sampled_from(MODES), st.booleans())
def test_mutated_frames_never_raise(seed, edits, cut, mode, fix_ip_checksum):
    frame = bytearray(seed)
    for pos, value in edits:
        if pos < len(frame):
            frame[pos] = value
    ihl = (frame[14] & 15) * 4
    if fix_ip_checksum and 20 <= ihl and len(frame) >= 14 + ihl:
        # reach past the IP checksum check, into L4 and ICMP parsing
        frame[24:26] = b"\0\0"
        frame[24:26] = checksum(frame[14:14 + ihl]).to_bytes(2, "big")
    check(frame[: max(cut, 1)] if cut < len(frame) else frame, mode)
