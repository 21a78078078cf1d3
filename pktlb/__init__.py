"""pktlb: a teaching-grade packet-level L4 load balancer on raw sockets.

Layers (imports only go downward): cli > reports > lab > daemon > adapters > core.
"""

__version__ = "0.1.0"
