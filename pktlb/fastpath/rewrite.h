/* In-place rewrites, one per mode, byte for byte those of pktlb/core/rewrite/{dsr,nat,fullnat}.py:
 * new MACs, addresses and ports, TTL - 1 where the LB routes, and checksums updated with the
 * deltas Python precomputed.  The L4 checksum is left to the caller (struct l4_update): XDP
 * applies it to the bytes, tc through bpf_l4_csum_replace, which also knows an unfinished
 * (CHECKSUM_PARTIAL) field and then applies only the pseudo-header part, as Python does.
 */
#ifndef PKTLB_REWRITE_H
#define PKTLB_REWRITE_H

#include "maps.h"
#include "parsing.h"

struct l4_update {
	__u32 delta;   /* the whole change (addresses and ports) */
	__u32 pseudo;  /* the pseudo-header (addresses) part only */
	__u16 off;     /* 0: no L4 checksum to update */
	__u8 udp;
};

static __always_inline void put32(__u8 *p, __u32 v) { __builtin_memcpy(p, &v, 4); }
static __always_inline void put16(__u8 *p, __u16 v) { __builtin_memcpy(p, &v, 2); }

static __always_inline void set_l4(struct l4_update *u, const struct pkt *p, __u32 delta, __u32 pseudo)
{
	u->delta = delta;
	u->pseudo = pseudo;
	u->off = p->csum_off;
	u->udp = p->proto == PROTO_UDP;
}

static __always_inline void rewrite_dsr(struct pkt *p, const struct backend *be)
{
	__builtin_memcpy(p->eth, be->l2, 12);
}

static __always_inline void rewrite_nat_in(struct pkt *p, const struct backend *be, struct l4_update *u)
{
	__builtin_memcpy(p->eth, be->l2, 12);
	p->ip[8] -= 1;
	put32(p->ip + 16, be->addr);
	put16(p->l4 + 2, be->port);
	csum_apply(p->ip + 10, be->in_ip_delta);
	set_l4(u, p, be->in_l4_delta, be->in_pseudo_delta);
}

static __always_inline void rewrite_fullnat_in(struct pkt *p, const struct service *svc, const struct backend *be,
					       const struct flow *fl, struct l4_update *u)
{
	__builtin_memcpy(p->eth, be->l2, 12);
	p->ip[8] -= 1;
	put32(p->ip + 12, svc->snat);
	put32(p->ip + 16, be->addr);
	put16(p->l4, fl->snat_port);
	put16(p->l4 + 2, be->port);
	csum_apply(p->ip + 10, fl->in_ip_delta);
	set_l4(u, p, fl->in_l4_delta, fl->in_pseudo_delta);
}

static __always_inline void rewrite_nat_out(struct pkt *p, const __u8 *l2, const struct nat_reverse *nr,
					    const struct backend *be, struct l4_update *u)
{
	__builtin_memcpy(p->eth, l2, 12);
	p->ip[8] -= 1;
	put32(p->ip + 12, nr->vip);
	put16(p->l4, nr->port);
	csum_apply(p->ip + 10, be->out_ip_delta);
	set_l4(u, p, be->out_l4_delta, be->out_pseudo_delta);
}

static __always_inline void rewrite_fullnat_out(struct pkt *p, const __u8 *l2,
						const struct snat_reverse *sr, struct l4_update *u)
{
	__builtin_memcpy(p->eth, l2, 12);
	p->ip[8] -= 1;
	put32(p->ip + 12, sr->flow.dst);
	put32(p->ip + 16, sr->flow.src);
	put16(p->l4, sr->flow.dport);
	put16(p->l4 + 2, sr->flow.sport);
	csum_apply(p->ip + 10, sr->out_ip_delta);
	set_l4(u, p, sr->out_l4_delta, sr->out_pseudo_delta);
}

#endif
