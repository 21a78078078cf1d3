"""The data path: one Ethernet frame and the current snapshot in, frames to emit and a decision out.

``process`` (in ``parse``) is the entry point; ``inbound``, ``replies`` and ``icmp`` are its stages.
"""

from pktlb.core.engine.parse import process

__all__ = ["process"]
