"""Announcing a VIP by BGP from each LB of a tier, and the router side that spreads flows over them.

``birdconf`` renders BIRD 2 configurations (pure functions), ``policy`` decides whether an LB
should announce (pure), ``supervisor`` is ``pktlb announce``'s loop, ``nhsync`` mirrors BIRD's
multipath routes into kernel resilient next-hop groups on the router.
"""
