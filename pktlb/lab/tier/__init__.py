"""The LB tier in the lab: N LBs announcing the VIP by BGP to a BIRD router that spreads flows (ECMP).

``plan`` is the address plan and everything the tier adds to a lab (pure): BIRD configs, the
router's sysctls, rules and routes, each LB's services.  ``inspect`` reads a running tier (BGP
sessions, the router's next hops) for `lab status`, the tests and the report.
"""
