"""Imports every built-in scheduler module so each registers itself under its CLI name.

rr, wrr (rotation); sh, hash (mod-N hashing); maglev (consistent hashing); lc, lrt, bw (load-aware).
"""

from pktlb.core.sched import hashing, load, maglev, rotation  # noqa: F401
