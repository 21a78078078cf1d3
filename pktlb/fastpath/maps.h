/* The fast path's maps and their key/value layouts.
 *
 * Python fills every map (pktlb/core/fastpath/layout.py mirrors these structs field by field,
 * pktlb/core/fastpath/encode.py turns a snapshot and a flow table into entries); the programs
 * only read them, except the flow map (counters, state, last seen, and new flows of services the
 * program schedules itself), the tunnel ID counter and the counters map.
 * Addresses and ports are kept in network byte order, as they appear in the packet.
 */
#ifndef PKTLB_MAPS_H
#define PKTLB_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_SERVICES 64
#define MAX_BACKENDS 1024
#define MAX_TABLE 65537 /* Maglev default; a bigger table leaves the service to Python */
#define MAX_FLOWS 131072 /* the loader sets the flow table's bound (at most this many in the kernel) */

/* Forwarding modes (service.mode). */
#define MODE_DSR 0
#define MODE_NAT 1
#define MODE_FULLNAT 2
#define MODE_TUNNEL 3

/* Who schedules a service's new flows (service.sched). */
#define SCHED_PYTHON 0   /* rr, wrr, lc, lrt, bw, and every fullnat service: new flows punt */
#define SCHED_FLOW_HASH 1 /* maglev, hash: table[flow_hash % size] */
#define SCHED_SRC_HASH 2 /* sh: table[src_hash % size] */

/* TCP states as the flow table names them (pktlb/core/flowtable.py). */
#define ST_SYN 0
#define ST_EST 1
#define ST_FIN 2
#define ST_CLOSED 3
#define ST_UDP 4

/* Backend states. */
#define BE_UP 0
#define BE_DRAIN 1
#define BE_DOWN 2
#define BE_ABSENT 3
#define BE_NO_NEIGHBOUR 4

/* config.enabled bits */
#define CFG_ENABLED 1
#define CFG_REPLIES 2 /* the replies' next hop (the gateway) is resolved */

struct config {
	__u8 lb_mac[6];
	__u8 reply_l2[12]; /* router MAC then LB MAC: replies toward the client */
	__u8 enabled; /* CFG_* bits */
	__u8 pad;
	__u32 lb_addr;
	__u32 seed;
	__u32 timeout[5]; /* idle timeouts in seconds, by ST_* */
	__u32 reply_ifindex; /* the gateway's interface (0: replies leave where they came in) */
};

struct service_key {
	__u32 vip;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct service {
	__u32 id; /* index into sched_tables */
	__u8 mode;
	__u8 sched;
	__u8 replies_via_lb;
	__u8 udp;
	__u16 mtu;
	__u16 port; /* the service port, network order */
	__u32 vip;
	__u32 snat;
};

struct backend {
	__u8 l2[12]; /* backend MAC then LB MAC */
	__u32 addr;
	__u16 port;
	__u8 state;
	__u8 pad;
	__u32 in_ip_delta;
	__u32 in_l4_delta;
	__u32 in_pseudo_delta;
	__u32 out_ip_delta;
	__u32 out_l4_delta;
	__u32 out_pseudo_delta;
	__u32 outer_base_sum;
	__u32 service_id;
	__u32 ifindex; /* the interface toward the backend's next hop (0: the one the frame came in on) */
};

struct sched_table {
	__u32 size;
	__u32 pad;
	__u16 slots[MAX_TABLE]; /* backend ids */
};

struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow {
	__u32 backend_id;
	__u8 state;
	__u8 origin; /* 0: pushed by Python, 1: scheduled by the program */
	__u16 snat_port; /* fullnat, network order */
	__u32 snat_addr;
	__u32 in_ip_delta; /* fullnat per-flow deltas (pktlb/core/rewrite/fullnat.py) */
	__u32 in_l4_delta;
	__u32 in_pseudo_delta;
	__u8 reply_l2[12]; /* nat/fullnat replies: the client's next hop's MAC, then the LB's (0: unknown) */
	__u32 reply_ifindex; /* the interface toward that next hop (0: the one the reply came in on) */
	__u64 packets_in;
	__u64 bytes_in;
	__u64 packets_out;
	__u64 bytes_out;
	__u64 last_seen_ns;
};

struct reverse_key { /* nat: (proto, backend addr, backend port); fullnat: (proto, snat addr, snat port) */
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct nat_reverse {
	__u32 service_id;
	__u32 backend_id;
	__u32 vip;
	__u16 port; /* the service port, network order */
	__u16 pad;
};

struct snat_reverse {
	struct flow_key flow;
	__u32 out_ip_delta;
	__u32 out_l4_delta;
	__u32 out_pseudo_delta;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} pktlb_config SEC(".maps");

/* Several interfaces: each one's own MAC (the LB's address on that link), by ifindex.  An interface
 * without an entry uses config.lb_mac (one interface; BPF_PROG_TEST_RUN). */
struct iface {
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct iface);
} pktlb_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, struct service);
} pktlb_services SEC(".maps");

/* Every address the engine owns: 1 VIP, 2 SNAT address (a bit set). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} pktlb_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} pktlb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct sched_table);
} pktlb_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow);
} pktlb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, struct reverse_key);
	__type(value, struct nat_reverse);
} pktlb_nat_reverse SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct reverse_key);
	__type(value, struct snat_reverse);
} pktlb_snat_reverse SEC(".maps");

/* The tunnel's outer IP ID counter (the last ID used, as TunnelRewriter.next_id). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pktlb_tunnel_id SEC(".maps");

#endif
