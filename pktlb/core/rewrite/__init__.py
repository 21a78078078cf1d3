"""Rewriters: what each forwarding mode does to a packet, and what it asks of the rest (``traits``).

The interface is ``base.Rewriter``; ``registry`` lists the modes (``get_rewriter``, ``traits_of``, ``MODES``).
"""
