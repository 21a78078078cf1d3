"""``pktlb explain``: one frame through the real data path, step by step.

``inputs`` builds the frame and the configuration, ``run`` runs the data path and gathers what it
did (``stages`` words each step, ``dissect`` and ``checksum_steps`` compare the frames with scapy),
``text`` renders it.
"""
