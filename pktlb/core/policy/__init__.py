"""Pure decision policies: samples and state in, a decision out (no clock, no I/O)."""
