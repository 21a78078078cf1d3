"""Health checking as the daemon runs it, one module per job.

``base``      the scheduler every checker shares (attempts, timeouts, results; ``attach`` to a Reactor)
``icmp``      the ICMP echo prober (plain, or IP-in-IP through a tunnel backend's decapsulator)
``tcp``       the TCP handshake check           ``http``  the HTTP GET check on top of it
``registry``  the checks by config name, filled here and nowhere else
``monitor``   the checkers a config needs, the state book (``pktlb.core.health``), events out

The state machine itself (rise/fall, reasons) is pure and lives in ``pktlb.core.health``.
"""
