/* IP-in-IP encapsulation (RFC 2003), as pktlb/core/rewrite/tunnel.py: an outer IPv4 header LB ->
 * backend, TTL 64, protocol 4, DF copied from the inner packet, the next ID of a shared counter,
 * and a checksum finished from the backend's precomputed partial sum.  The caller has already
 * made room (XDP: bpf_xdp_adjust_head; tc: bpf_skb_adjust_room) and checked the MTU.
 */
#ifndef PKTLB_ENCAP_H
#define PKTLB_ENCAP_H

#include "maps.h"
#include "csum.h"

#define TUNNEL_OVERHEAD 20

/* Write the Ethernet and outer IP headers at data (frame: eth(14) outer(20) inner...). */
static __always_inline int write_outer(__u8 *data, void *data_end, const struct config *cfg,
				       const struct backend *be)
{
	__u8 *outer = data + 14;
	__u8 *inner = outer + TUNNEL_OVERHEAD;
	__u32 zero = 0;

	if ((void *)(inner + 20) > data_end)
		return -1;
	__u32 inner_len = ((__u32)inner[2] << 8) | inner[3];
	__u32 df = ((__u32)inner[6] << 8) & 0x4000;
	__u32 total = inner_len + TUNNEL_OVERHEAD;
	__u32 *next = bpf_map_lookup_elem(&pktlb_tunnel_id, &zero);

	if (!next)
		return -1;
	__u32 ident = (__sync_fetch_and_add(next, 1) + 1) & 0xffff;
	__u32 csum = ~fold(be->outer_base_sum + total + ident + df) & 0xffff;

	__builtin_memcpy(data, be->l2, 12);
	data[12] = 0x08;
	data[13] = 0x00;
	outer[0] = 0x45;
	outer[1] = 0;
	outer[2] = total >> 8;
	outer[3] = total & 0xff;
	outer[4] = ident >> 8;
	outer[5] = ident & 0xff;
	outer[6] = df >> 8;
	outer[7] = 0;
	outer[8] = 64;
	outer[9] = 4;
	outer[10] = csum >> 8;
	outer[11] = csum & 0xff;
	__builtin_memcpy(outer + 12, &cfg->lb_addr, 4);
	__builtin_memcpy(outer + 16, &be->addr, 4);
	return 0;
}

#endif
