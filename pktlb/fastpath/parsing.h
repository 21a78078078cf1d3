/* Parsing: Ethernet, IPv4 and the TCP/UDP header, with the same length checks as
 * pktlb/core/engine/parse.py.  Offsets only; nothing is changed here.  Anything unusual is a punt.
 */
#ifndef PKTLB_PARSING_H
#define PKTLB_PARSING_H

#include <linux/types.h>
#include "csum.h"
#include "punt.h"

#define ETH_LEN 14
#define IP_LEN 20
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct pkt {
	__u8 *eth;
	__u8 *ip;
	__u8 *l4;
	__u32 total;   /* IP total length */
	__u8 proto;
	__u8 flags;    /* TCP flags, 0 for UDP */
	__u16 csum_off; /* offset of the L4 checksum from the frame start, 0: none (UDP without one) */
};

static __always_inline __u32 load32(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return v; /* network order kept */
}

static __always_inline __u16 load16(const __u8 *p)
{
	__u16 v;

	__builtin_memcpy(&v, p, 2);
	return v;
}

/* Ethernet and IPv4 header checks; returns PUNT_REASONS when the frame is a plain IPv4 packet.  ``len``
 * is the whole frame's length (in tc only the headers are in the linear area data..data_end). */
static __always_inline int parse_ip(void *data, void *data_end, __u64 len, const __u8 *lb_mac, struct pkt *p)
{
	__u8 *eth = data;
	__u8 *ip = eth + ETH_LEN;

	if ((void *)(ip + IP_LEN) > data_end)
		return (void *)ip > data_end || eth[12] != 0x08 || eth[13] != 0 ? PUNT_NOT_IPV4 : PUNT_BAD_LENGTH;
	if (eth[12] != 0x08 || eth[13] != 0)
		return PUNT_NOT_IPV4;
	if ((eth[0] ^ lb_mac[0]) | (eth[1] ^ lb_mac[1]) | (eth[2] ^ lb_mac[2]) | (eth[3] ^ lb_mac[3]) |
	    (eth[4] ^ lb_mac[4]) | (eth[5] ^ lb_mac[5]))
		return PUNT_NOT_OUR_MAC;
	if (ip[0] >> 4 != 4)
		return PUNT_NOT_IPV4;
	if ((ip[0] & 15) < 5)
		return PUNT_BAD_LENGTH;
	if ((ip[0] & 15) > 5)
		return PUNT_IP_OPTIONS;
	p->total = ((__u32)ip[2] << 8) | ip[3];
	if (p->total < IP_LEN || ETH_LEN + p->total > len)
		return PUNT_BAD_LENGTH;
	if (ETH_LEN + p->total < len)
		return PUNT_PADDING;
	if (ip_header_sum(ip) != 0xffff)
		return PUNT_BAD_IP_CHECKSUM;
	p->eth = eth;
	p->ip = ip;
	p->l4 = ip + IP_LEN;
	p->proto = ip[9];
	return PUNT_REASONS;
}

static __always_inline int is_fragment(const __u8 *ip)
{
	return (ip[6] & 0x3f) || ip[7];
}

/* TCP/UDP header checks (engine/steps.py l4_checksum_offset); sets flags and csum_off. */
static __always_inline int parse_l4(void *data_end, struct pkt *p)
{
	__u8 *l4 = p->l4;
	__u32 l4_len = p->total - IP_LEN;

	if (p->proto == PROTO_TCP) {
		if ((void *)(l4 + 20) > data_end || l4_len < 20)
			return PUNT_BAD_L4_HEADER;
		if ((l4[12] >> 4) < 5 || (__u32)(l4[12] >> 4) * 4 > l4_len)
			return PUNT_BAD_L4_HEADER;
		p->flags = l4[13];
		p->csum_off = ETH_LEN + IP_LEN + 16;
		return PUNT_REASONS;
	}
	if ((void *)(l4 + 8) > data_end || l4_len < 8)
		return PUNT_BAD_L4_HEADER;
	__u32 ulen = ((__u32)l4[4] << 8) | l4[5];

	if (ulen < 8 || ulen > l4_len)
		return PUNT_BAD_L4_HEADER;
	p->flags = 0;
	p->csum_off = (l4[6] || l4[7]) ? ETH_LEN + IP_LEN + 6 : 0;
	return PUNT_REASONS;
}

/* An unfinished (CHECKSUM_PARTIAL) TCP/UDP checksum, as a veth peer with TX offload sends it, holds only
 * the folded pseudo-header sum.  XDP gets no checksum state with the frame and would pass such a field
 * on as if finished, so the XDP program punts it (Python finishes it, pktlb/core/checksum.py).  A
 * finished checksum equal to that sum is a 1 in 65536 coincidence, and costs a punt, never a wrong byte. */
static __always_inline int partial_checksum(const struct pkt *p)
{
	if (!p->csum_off)
		return 0;
	const __u8 *ip = p->ip;
	const __u8 *c = p->proto == PROTO_TCP ? p->l4 + 16 : p->l4 + 6;
	__u32 s = ((__u32)ip[12] << 8 | ip[13]) + ((__u32)ip[14] << 8 | ip[15]) + ((__u32)ip[16] << 8 | ip[17]) +
		  ((__u32)ip[18] << 8 | ip[19]) + p->proto + (p->total - IP_LEN);

	return fold(s) == (((__u32)c[0] << 8) | c[1]);
}

#endif
