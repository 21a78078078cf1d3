"""The auto-scaler's control loop: metrics from the engine's control socket, the core policy, actions.

``interfaces`` names what the loop needs (a metric source, an actuator, a clock); ``metrics`` and
``engine`` implement them over the control socket; ``pool`` is a backend provider made of standby
hosts; ``controller`` is the loop; ``journal`` writes and reads ``autoscale.jsonl``.
"""
