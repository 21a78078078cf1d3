"""The traits each forwarding mode declares: what the engine, filter, config, host checks, lab and reports ask."""

from __future__ import annotations

import dataclasses

import pytest

from pktlb.core.config import MODES as CONFIG_MODES
from pktlb.core.rewrite.registry import MODES, REGISTRY, get_rewriter, traits_of
from pktlb.core.rewrite.traits import NO_TRAITS, ModeTraits

EXPECTED = {
    "nat": ModeTraits(replies_via_lb=True, reverse_nat=True, decrements_ttl=True),
    "fullnat": ModeTraits(replies_via_lb=True, needs_snat=True, decrements_ttl=True),
    "tunnel": ModeTraits(keeps_ports=True, encap_overhead=20, finishes_checksum=True, recomputes_backend=True, vip_on_backend=True,
                         loose_rp_backend=True, needs_decapsulator=True),
    "dsr": ModeTraits(keeps_ports=True, recomputes_backend=True, vip_on_backend=True, backends_on_link=True, arp_quiet_backend=True,
                      loose_rp_backend=True),
}


def test_the_registry_lists_the_four_modes_in_report_order():
    assert MODES == ("nat", "fullnat", "tunnel", "dsr") == CONFIG_MODES
    assert all(REGISTRY[m].name == m for m in MODES)


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_traits_per_mode(mode):
    assert get_rewriter(mode).traits == EXPECTED[mode]
    assert traits_of(mode) is get_rewriter(mode).traits


@pytest.mark.parametrize("mode", ["l7", "", None, "ipvs"])
def test_no_packet_mode_has_every_trait_off(mode):
    assert traits_of(mode) == NO_TRAITS
    assert not any(dataclasses.astuple(traits_of(mode)))


def test_unknown_mode_names_the_choices():
    with pytest.raises(ValueError, match="unknown mode 'ipvs': expected one of dsr, fullnat, nat, tunnel"):
        get_rewriter("ipvs")


def test_traits_that_go_together():
    for mode in MODES:
        t = traits_of(mode)
        assert t.replies_via_lb == t.decrements_ttl != t.keeps_ports  # the LB routes what it rewrites
        assert t.replies_via_lb == (t.reverse_nat or t.needs_snat)
        assert t.recomputes_backend == (not t.replies_via_lb)  # no per-flow state on the wire
        assert t.vip_on_backend == (not t.replies_via_lb)
        assert t.needs_decapsulator == bool(t.encap_overhead) == t.finishes_checksum
