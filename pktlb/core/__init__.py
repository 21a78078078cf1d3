"""The pure core: packet views, checksums, flow keys, schedulers, rewriters and the engine.

Nothing in this package opens a socket or imports scapy, netifaces or pyroute2.
"""
