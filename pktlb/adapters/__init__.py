"""OS adapters, one module per OS interface: AF_PACKET I/O (rawio, mmsg, fanout, bpf), netlink, nft,
libbpf and the fast path's loader, ICMP sockets, pcap files, certificates, BIRD and HAProxy sockets."""
