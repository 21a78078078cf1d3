"""The tier report's Markdown and chart from a report dict (no lab)."""

from pktlb.reports.tier.render import markdown, write

REPORT = {
    "options": {"lbs": 3, "mode": "dsr", "bfd": False, "rate": 40.0, "victim": 2},
    "spread": {"requests": 10, "ok": 10, "new_flows_per_lb": {"lb1": 4, "lb2": 3, "lb3": 3}},
    "failures": [{"kind": "frozen", "victim": "lb2", "withdraw_s": 2.5, "requests": 10, "failed": 2, "back_in_s": 1.0,
                  "timeline": [{"t": -1.0, "ok": True}, {"t": 0.5, "ok": False}, {"t": 3.0, "ok": True}]},
                 {"kind": "link-cut", "victim": "lb2", "withdraw_s": None, "requests": 1, "failed": 1, "back_in_s": None,
                  "timeline": [{"t": 0.1, "ok": False}]}],
    "moves": [{"ecmp": "multipath", "moved": 27, "on_survivors": 100, "moved_fraction": 0.27, "held": 60,
               "held_moved_between_survivors": 12, "held_moved_broken": 0, "held_broken": 0}],
}


def test_markdown_has_every_figure():
    text = markdown(REPORT)
    assert "| lb1 | 4 | 40% |" in text
    assert "| 2500 ms | 2 | 10 | 1.0 s |" in text and "| never | 1 | 1 | not back |" in text
    assert "| multipath | 27/100 (27.0%) | 12/60 | 0 | 0 |" in text


def test_write_makes_json_markdown_and_a_chart(tmp_path):
    paths = write(REPORT, tmp_path)
    assert (tmp_path / "tier.json").exists() and "timeline" in (tmp_path / "tier.md").read_text()
    assert (tmp_path / "tier-timeline.png").read_bytes()[:4] == b"\x89PNG" and len(paths) == 3
