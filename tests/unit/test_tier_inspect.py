"""Reading the router's next hops from `ip -j` output (no lab): groups, multipath, and a group replaced
between reading the route and reading its members."""

from pktlb.lab.tier import inspect

GROUP_OLD = [{"id": 10, "group": [{"id": 11}, {"id": 12}]}, {"id": 11, "gateway": "198.18.0.12"},
             {"id": 12, "gateway": "198.18.0.11"}]
GROUP_NEW = [{"id": 20, "group": [{"id": 12}]}, {"id": 12, "gateway": "198.18.0.11"}]


def _fake(monkeypatch, answers):
    calls = []

    def ip_json(namespace, args):
        calls.append(args)
        return answers[args[0] if args[0] != "-d" else "route"].pop(0)

    monkeypatch.setattr(inspect, "_ip_json", ip_json)
    return calls


def test_a_group_is_resolved_from_one_dump_and_sorted_by_address(monkeypatch):
    calls = _fake(monkeypatch, {"route": [[{"dst": "198.19.0.100", "nhid": 10}]], "nexthop": [GROUP_OLD]})
    assert inspect.next_hops("ns", "198.19.0.100") == ["198.18.0.11", "198.18.0.12"]
    assert len(calls) == 2


def test_a_group_replaced_between_the_two_reads_is_read_again(monkeypatch):
    # The route named group 10; by the time of the dump BIRD had replaced it with group 20.
    _fake(monkeypatch, {"route": [[{"nhid": 10}], [{"nhid": 20}]], "nexthop": [GROUP_NEW, GROUP_NEW]})
    assert inspect.next_hops("ns", "198.19.0.100") == ["198.18.0.11"]


def test_a_member_gone_from_the_dump_is_read_again(monkeypatch):
    half = [{"id": 10, "group": [{"id": 11}, {"id": 12}]}, {"id": 12, "gateway": "198.18.0.11"}]
    _fake(monkeypatch, {"route": [[{"nhid": 10}], [{"nhid": 10}]], "nexthop": [half, GROUP_OLD]})
    assert inspect.next_hops("ns", "198.19.0.100") == ["198.18.0.11", "198.18.0.12"]


def test_multipath_single_gateway_and_no_route(monkeypatch):
    _fake(monkeypatch, {"route": [[{"nexthops": [{"gateway": "198.18.0.13"}, {"gateway": "198.18.0.2"}]}],
                                  [{"gateway": "198.18.0.12"}], []]})
    assert inspect.next_hops("ns", "p") == ["198.18.0.2", "198.18.0.13"]
    assert inspect.next_hops("ns", "p") == ["198.18.0.12"]
    assert inspect.next_hops("ns", "p") == []
