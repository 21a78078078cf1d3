"""The kernel fast path's side of the core: map layouts (``layout``) and the encoding of a snapshot
and a flow table into map entries (``encode``).  Pure: no I/O; ``pktlb.adapters.fastpath`` loads."""
