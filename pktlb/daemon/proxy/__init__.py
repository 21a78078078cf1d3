"""``pktlb proxy``: pktlb's L7 HTTP/1.1 reverse proxy on asyncio, one module per job.

    client --TCP--> listener (server) --> ClientSession (session): read a request head (h11, limits, timeouts)
        --> route and pick a backend (pktlb.core.l7.plan) --> Upstream from the backend's pool (pool)
        --> forward the request and relay the response (forward) --> keep-alive or close

``http_stream``   an h11 connection over an asyncio stream: events in with deadlines, out with backpressure
``session``       one client connection: requests one after the other (pipelining safe), the proxy's own answers
``forward``       one request to one backend: connect with retries, send, relay the answer, 502/504 by reason
``pool``          reused backend connections: bounded, idle timeout, reused only after a complete response
``control``       backend states (operator, health) -> a new ProxySnapshot, as the engine's control plane does
``health``        the engine's health checks, driven by the asyncio loop (``loop_adapter``)
``report``        the control socket's commands: stats, backends, backend up/drain/down/weight
``server``        the listeners, the loop, signals, start-up errors

The pure parts (settings, routing, header rules, rejections, snapshot, counters) are in ``pktlb.core.l7``.
"""
