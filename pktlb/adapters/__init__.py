"""OS adapters: AF_PACKET I/O, classic-BPF filters, interface facts and neighbour resolution."""
