"""The pure half of pktlb's L7 (HTTP) proxy: configuration, routing, header rules, rejections, plans, counters.

``settings``  the ``mode = "l7"`` service schema (``[service.l7]``, ``[[service.route]]``)
``split``     which services the packet engine serves and which the proxy serves
``routing``   Host and path of a request -> the route it takes (first match wins)
``rules``     checks every request head passes before routing (refused methods, body limits...)
``headers``   hop-by-hop headers, X-Forwarded-For / X-Forwarded-Proto / Forwarded (RFC 7239), Via
``rejects``   every answer the proxy makes itself (400, 408, 413, 431, 502, 503, 504...), by named reason
``plan``      the immutable per-service view (routes -> live backends -> scheduler) a request reads
``stats``     counters per backend and per service
``haproxy``   the same services as an haproxy.cfg: the production baseline for comparisons

No sockets here: ``pktlb.daemon.proxy`` does the I/O.
"""
