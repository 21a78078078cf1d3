"""``pktlb compare``: one bounded workload through every forwarding mode, in a lab per mode.

``run`` builds each lab, runs the ``workload`` and reads the LB's captures (``capture_stats``);
``render`` checks the invariants and writes the tables and report.md, ``charts`` the PNGs.
"""
