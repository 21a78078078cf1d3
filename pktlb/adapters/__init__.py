"""OS adapters, one module per OS interface: AF_PACKET I/O (rawio, packet_socket, vnet, packet_batch, mmsg,
fanout, bpf), netlink, nft, libbpf and the fast path's loader, ICMP sockets, pcap files, certificates,
BIRD and HAProxy sockets."""
