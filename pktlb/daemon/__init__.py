"""Orchestration: the engine loop, control plane, health prober and the lab's helper daemons."""
