"""The incremental checksum updates the rewriters run are the ones the tests check (issue 13 point 4).

``checksum.update``/``update_l4`` run ``apply_delta``/``apply_l4_delta`` (what nat and fullnat call on
the frame) on a two-byte buffer; these tests hold both to a full recomputation, partial fields and
RFC 768's zero rule included.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pktlb.core import checksum as cs
from pktlb.core.checksum import (
    apply_delta,
    apply_l4_delta,
    checksum,
    delta16,
    delta32,
    fold,
    update,
    update_l4,
)
from pktlb.core.rewrite import fullnat, nat


def test_the_rewriters_call_the_checksum_module_functions():
    for module in (nat, fullnat):
        assert module.apply_delta is cs.apply_delta and module.apply_l4_delta is cs.apply_l4_delta
    assert not hasattr(cs, "update_partial")  # the dead copy is gone: partial fields go through apply_l4_delta


@given(st.binary(min_size=8, max_size=64), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_apply_delta_in_a_frame_matches_a_full_recompute(rest, old, new):
    data = bytearray(old.to_bytes(4, "big") + rest[: len(rest) // 2 * 2])
    frame = bytearray(b"\xaa" * 3 + checksum(data).to_bytes(2, "big"))  # the field at an odd offset, as in a frame
    data[0:4] = new.to_bytes(4, "big")
    apply_delta(frame, 3, delta32(old, new))
    got, after = int.from_bytes(frame[3:5], "big"), checksum(data)
    assert got == after or {got, after} == {0, 0xFFFF}
    assert frame[:3] == b"\xaa" * 3


@given(st.integers(0, 0xFFFF), st.integers(0, 0x3FFFF))
def test_update_is_apply_delta_on_a_value(csum, delta):
    frame = bytearray(csum.to_bytes(2, "big"))
    apply_delta(frame, 0, delta)
    assert update(csum, delta) == int.from_bytes(frame, "big") == update_l4(csum, delta)


@given(st.integers(0, 0xFFFF), st.integers(0, 0x3FFFF), st.integers(0, 0x3FFFF))
def test_a_partial_field_takes_only_the_address_delta_uncomplemented(partial_sum, delta, pseudo_delta):
    got = update_l4(partial_sum, delta, pseudo_delta, partial=True)
    assert got == fold(partial_sum + pseudo_delta)  # P' = P + delta, no complements; the full delta is ignored
    frame = bytearray(partial_sum.to_bytes(2, "big"))
    apply_l4_delta(frame, 0, delta, pseudo_delta, True, False)
    assert int.from_bytes(frame, "big") == got


def test_a_computed_udp_zero_is_sent_as_all_ones():
    csum, delta = 0x0001, delta16(0x0000, 0x0001)  # ~(~0x0001 + 1) = ~0xffff = 0
    assert update(csum, delta) == 0
    assert update_l4(csum, delta, udp=True) == 0xFFFF
    assert update_l4(csum, delta, udp=False) == 0
