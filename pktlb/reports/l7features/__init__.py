"""``pktlb l7-report``: L7's promises and costs, measured in the lab (issue 20).

``labs``      the L7 lab (each measurement starts its own proxy) and the L4 lab (DSR, sh), their configs
``servers``   processes in lab namespaces (proxy, HAProxy, HTTPS backends, clients), CPU per process
``client``    the bounded client workloads, run inside the client namespace
``tls``       CPU per request and latency: new handshake, resumed session, keep-alive; L7 vs L4
``sections``  persistence (the client's address changes), cache (repeated URLs), filter (one client floods)
``run``       the whole report; ``render`` Markdown and JSON
"""
