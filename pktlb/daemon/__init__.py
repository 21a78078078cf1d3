"""Orchestration: the engine (forwarder, workers, reactor, control plane and socket, egress, guard),
health/, the L7 proxy/, dashboard/, autoscale/, announce/ (the LB tier), host checks and decap."""
