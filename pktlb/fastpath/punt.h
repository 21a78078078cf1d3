/* Counters: frames forwarded by kind and frames punted to Python by reason.
 *
 * A punt hands the frame on unchanged (XDP_PASS / TC_ACT_OK); the engine's packet socket then
 * reads it and Python decides, so every special case has one implementation, in Python.
 * The names live in pktlb/core/fastpath/layout.py (PUNT_REASONS, FORWARD_KINDS) in this order.
 */
#ifndef PKTLB_PUNT_H
#define PKTLB_PUNT_H

#include "maps.h"

enum punt_reason {
	PUNT_NOT_IPV4 = 0,     /* ARP, IPv6, VLAN tags */
	PUNT_NOT_OUR_MAC,
	PUNT_BAD_LENGTH,       /* truncated, bad IHL or total length */
	PUNT_PADDING,          /* Ethernet padding after the IP packet (Python cuts it) */
	PUNT_IP_OPTIONS,
	PUNT_BAD_IP_CHECKSUM,
	PUNT_FRAGMENT,
	PUNT_NOT_OURS,         /* neither a VIP nor a reply the engine rewrites (the LB's own traffic) */
	PUNT_ICMP,
	PUNT_OTHER_PROTOCOL,
	PUNT_BAD_L4_HEADER,
	PUNT_NO_SERVICE,
	PUNT_TTL,
	PUNT_FIN_RST,
	PUNT_SYN,              /* SYN of a service Python schedules, SYN reusing an old tuple, SYN-ACK replies */
	PUNT_UNKNOWN_FLOW,     /* a flow of a service Python schedules that Python has not pushed yet */
	PUNT_BACKEND_DOWN,
	PUNT_NO_BACKEND,
	PUNT_TOO_BIG,          /* tunnel: inner + 20 over the MTU (Python answers fragmentation needed) */
	PUNT_IDLE_EXPIRED,
	PUNT_SPOOFED_SOURCE,
	PUNT_DISABLED,         /* no snapshot pushed yet */
	PUNT_HELPER_FAILED,    /* growing or cutting the frame failed */
	PUNT_NO_NEIGHBOUR,     /* the next hop's MAC is not known (or it is behind another interface) */
	PUNT_PARTIAL_CHECKSUM, /* XDP: an unfinished (CHECKSUM_PARTIAL) L4 checksum, which XDP cannot carry on */
	PUNT_REASONS
};

enum forward_kind {
	FWD_INBOUND = PUNT_REASONS,
	FWD_NEW_FLOW,          /* also counted as inbound: flows the program scheduled itself */
	FWD_OUTBOUND,
	FWD_REDIRECTED,        /* also counted as inbound or outbound: sent out of another interface */
	COUNTERS
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} pktlb_counters SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&pktlb_counters, &what);

	if (c)
		*c += 1;
}

#endif
