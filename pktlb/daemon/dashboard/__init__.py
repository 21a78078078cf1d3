"""``pktlb dashboard``: a separate process that polls engines over their control sockets and serves
``/metrics`` (Prometheus text format) and ``/`` (a live page, in the spirit of HAProxy's stats page).

sources  one control socket per load balancer (an engine's workers merged), its kind read from the reply
poller   a thread per source, once a second; rates, a few minutes of history and state changes
metrics  a prometheus-client collector turning the latest replies into metric families
server   http.server in threads: the page, its static files, a JSON snapshot, server-sent events, /metrics
listen   where it may listen: loopback or lab addresses only, never all interfaces

The engine's packet loop never serves HTTP: it answers one small ``stats`` request per second.
"""
