// SPDX-License-Identifier: MIT
/* pktlb's kernel fast path: a cache of the decisions the Python engine makes.
 *
 *   parse (parsing.h) -> classify (VIP service | NAT reply | full-NAT reply) -> flow lookup
 *   -> schedule on a miss (maglev/hash/sh only, from the table Python pushed) -> rewrite
 *   (rewrite.h, encap.h) -> count (the flow's packets, bytes and last seen; punts by reason)
 *
 * Everything else is a punt: the frame goes on unchanged and the engine's packet socket reads
 * it, so every special case (ICMP, fragments, options, FIN/RST, TTL, new flows of stateful
 * schedulers and of full-NAT) keeps one implementation, in Python.  The same frame through
 * this program and through engine.process gives the same bytes or a punt
 * (tests/fastpath/ checks it with BPF_PROG_TEST_RUN).
 *
 * Programs: xdp_fastpath (XDP, forwards with XDP_TX, or XDP_REDIRECT when the next hop is behind
 * another interface), tc_fastpath (tcx ingress, forwards with bpf_redirect to the next hop's
 * interface) and xdp_pass (XDP_PASS, for a veth peer that must have an XDP program so that XDP_TX
 * and redirected frames are received).  With several interfaces one program is attached to each
 * and they share the maps; with several workers the workers share them too.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "punt.h"
#include "csum.h"
#include "hash.h"
#include "parsing.h"
#include "rewrite.h"
#include "encap.h"
#include "sched.h"

#define ADDR_VIP 1
#define ADDR_SNAT 2

static __always_inline int inbound(struct pkt *p, void *data_end, struct plan *pl, __u64 now)
{
	int r = parse_l4(data_end, p);

	if (r != OK)
		return r;
	struct service_key sk = { .vip = load32(p->ip + 16), .port = load16(p->l4 + 2), .proto = p->proto };
	struct service *svc = bpf_map_lookup_elem(&pktlb_services, &sk);

	if (!svc)
		return PUNT_NO_SERVICE;
	if (p->ip[8] <= 1)
		return PUNT_TTL;
	if (p->flags & (TCP_FIN | TCP_RST))
		return PUNT_FIN_RST;
	pl->svc = svc;
	struct flow_key key = { .src = load32(p->ip + 12), .dst = sk.vip, .sport = load16(p->l4),
				.dport = sk.port, .proto = p->proto };
	struct flow *fl = bpf_map_lookup_elem(&pktlb_flows, &key);

	if (fl) {
		if ((p->flags & TCP_SYN) && !(p->flags & TCP_ACK) && fl->state != ST_SYN)
			return PUNT_SYN; /* a new connection on an old tuple: Python schedules it afresh */
		if (expired(pl->cfg, fl, now))
			return PUNT_IDLE_EXPIRED;
		__u32 be_id = fl->backend_id;
		struct backend *be = bpf_map_lookup_elem(&pktlb_backends, &be_id);

		if (be && be->service_id == svc->id && be->state == BE_NO_NEIGHBOUR)
			return PUNT_NO_NEIGHBOUR;
		if (!be || be->service_id != svc->id || be->state >= BE_DOWN)
			return PUNT_BACKEND_DOWN;
		pl->be = be;
		pl->fl = fl;
		if (p->proto == PROTO_TCP && fl->state == ST_SYN && (p->flags & TCP_ACK) && !(p->flags & TCP_SYN))
			pl->new_state = ST_EST;
	} else {
		if (svc->sched == SCHED_PYTHON)
			return p->flags & TCP_SYN ? PUNT_SYN : PUNT_UNKNOWN_FLOW;
		r = schedule(p, svc, &key, pl, now);
		if (r != OK)
			return r;
	}
	pl->out_ifindex = pl->be->ifindex;
	switch (svc->mode) {
	case MODE_DSR:
		pl->kind = PLAN_DSR;
		break;
	case MODE_NAT:
		pl->kind = PLAN_NAT_IN;
		break;
	case MODE_FULLNAT:
		if (!pl->fl->snat_port)
			return PUNT_UNKNOWN_FLOW;
		pl->kind = PLAN_FULLNAT_IN;
		break;
	default:
		if (p->total + TUNNEL_OVERHEAD > svc->mtu)
			return PUNT_TOO_BIG;
		pl->kind = PLAN_TUNNEL;
	}
	return OK;
}

/* Where a reply goes: the one gateway the config names, else the next hop Python resolved for the flow. */
static __always_inline int reply_l2(struct plan *pl)
{
	if (pl->cfg->enabled & CFG_REPLIES) {
		pl->reply_l2 = pl->cfg->reply_l2;
		pl->out_ifindex = pl->cfg->reply_ifindex;
		return OK;
	}
	if (!pl->fl || !(pl->fl->reply_l2[0] | pl->fl->reply_l2[1] | pl->fl->reply_l2[2] | pl->fl->reply_l2[3] |
			 pl->fl->reply_l2[4] | pl->fl->reply_l2[5]))
		return PUNT_NO_NEIGHBOUR;
	pl->reply_l2 = pl->fl->reply_l2;
	pl->out_ifindex = pl->fl->reply_ifindex;
	return OK;
}

static __always_inline int reply(struct pkt *p, void *data_end, struct plan *pl, __u32 addr_flags, __u64 now)
{
	if (p->total - IP_LEN < 8)
		return PUNT_BAD_L4_HEADER;
	if (is_fragment(p->ip))
		return PUNT_FRAGMENT;
	int r = parse_l4(data_end, p);

	if (r != OK)
		return r;
	struct reverse_key rk = { .addr = load32(p->ip + 12), .port = load16(p->l4), .proto = p->proto };
	struct nat_reverse *nr = bpf_map_lookup_elem(&pktlb_nat_reverse, &rk);

	if (nr) {
		__u32 be_id = nr->backend_id;

		pl->be = bpf_map_lookup_elem(&pktlb_backends, &be_id);
		if (!pl->be)
			return PUNT_NOT_OURS;
		if (p->ip[8] <= 1)
			return PUNT_TTL;
		if (p->flags & (TCP_FIN | TCP_RST))
			return PUNT_FIN_RST;
		if (p->flags & TCP_SYN)
			return PUNT_SYN; /* the handshake's RTT feeds Python's lrt scheduler */
		struct flow_key key = { .src = load32(p->ip + 16), .dst = nr->vip, .sport = load16(p->l4 + 2),
					.dport = nr->port, .proto = p->proto };

		pl->fl = bpf_map_lookup_elem(&pktlb_flows, &key);
		if (pl->fl && expired(pl->cfg, pl->fl, now))
			return PUNT_IDLE_EXPIRED;
		r = reply_l2(pl);
		if (r != OK)
			return r;
		pl->nr = nr;
		pl->kind = PLAN_NAT_OUT;
		pl->outbound = 1;
		return OK;
	}
	if (!(addr_flags & ADDR_SNAT))
		return PUNT_NOT_OURS;
	rk.addr = load32(p->ip + 16);
	rk.port = load16(p->l4 + 2);
	struct snat_reverse *sr = bpf_map_lookup_elem(&pktlb_snat_reverse, &rk);

	if (!sr)
		return PUNT_UNKNOWN_FLOW;
	struct flow *fl = bpf_map_lookup_elem(&pktlb_flows, &sr->flow);

	if (!fl || expired(pl->cfg, fl, now))
		return PUNT_UNKNOWN_FLOW;
	__u32 be_id = fl->backend_id;
	struct backend *be = bpf_map_lookup_elem(&pktlb_backends, &be_id);

	if (!be || be->addr != load32(p->ip + 12) || be->port != load16(p->l4))
		return PUNT_UNKNOWN_FLOW;
	if (p->ip[8] <= 1)
		return PUNT_TTL;
	if (p->flags & (TCP_FIN | TCP_RST))
		return PUNT_FIN_RST;
	if (p->flags & TCP_SYN)
		return PUNT_SYN;
	pl->be = be;
	pl->fl = fl;
	r = reply_l2(pl);
	if (r != OK)
		return r;
	pl->sr = sr;
	pl->kind = PLAN_FULLNAT_OUT;
	pl->outbound = 1;
	return OK;
}

/* A VIP's service (inbound), a NAT or full-NAT reply (outbound), or a punt. */
static __always_inline int classify(struct pkt *p, void *data_end, struct plan *pl, __u32 *dflags, __u32 src,
				    __u32 dst, __u64 now)
{
	if (dflags && (*dflags & ADDR_VIP)) {
		if (bpf_map_lookup_elem(&pktlb_addrs, &src) || src == pl->cfg->lb_addr)
			return PUNT_SPOOFED_SOURCE;
		if (is_fragment(p->ip))
			return PUNT_FRAGMENT;
		if (p->proto == PROTO_TCP || p->proto == PROTO_UDP)
			return inbound(p, data_end, pl, now);
		return p->proto == PROTO_ICMP ? PUNT_ICMP : PUNT_OTHER_PROTOCOL;
	}
	if (dst == pl->cfg->lb_addr)
		return PUNT_NOT_OURS;
	if (p->proto == PROTO_TCP || p->proto == PROTO_UDP)
		return reply(p, data_end, pl, dflags ? *dflags : 0, now);
	return p->proto == PROTO_ICMP ? PUNT_ICMP : PUNT_NOT_OURS;
}

/* The pipeline up to the rewrite: OK with a plan, or a punt reason. */
static __always_inline int decide(void *data, void *data_end, __u64 len, struct pkt *p, struct plan *pl, __u64 now,
				  int xdp, __u32 ifindex)
{
	__u32 zero = 0;

	pl->cfg = bpf_map_lookup_elem(&pktlb_config, &zero);
	if (!pl->cfg || !(pl->cfg->enabled & CFG_ENABLED))
		return PUNT_DISABLED;
	struct iface *in = bpf_map_lookup_elem(&pktlb_ifaces, &ifindex);
	int r = parse_ip(data, data_end, len, in ? in->mac : pl->cfg->lb_mac, p);

	if (r != OK)
		return r;
	__u32 dst = load32(p->ip + 16);
	__u32 src = load32(p->ip + 12);
	__u32 *dflags = bpf_map_lookup_elem(&pktlb_addrs, &dst);

	r = classify(p, data_end, pl, dflags, src, dst, now);
	/* tc keeps the skb's checksum state (its helpers update an unfinished field as Python does), but the
	 * tunnel's backends need the inner checksum finished, which Python does: punt those there too. */
	if (r == OK && (xdp || pl->kind == PLAN_TUNNEL) && partial_checksum(p))
		return PUNT_PARTIAL_CHECKSUM;
	return r;
}

/* After a successful rewrite: the flow's counters, state and last seen (read back by Python). */
static __always_inline void account(struct plan *pl, __u32 bytes, __u64 now, __u32 ifindex)
{
	struct flow *fl = pl->fl;

	count(pl->outbound ? FWD_OUTBOUND : FWD_INBOUND);
	if (pl->out_ifindex && pl->out_ifindex != ifindex)
		count(FWD_REDIRECTED);
	if (pl->new_flow)
		count(FWD_NEW_FLOW);
	if (!fl)
		return;
	if (pl->outbound) {
		__sync_fetch_and_add(&fl->packets_out, 1);
		__sync_fetch_and_add(&fl->bytes_out, bytes);
	} else {
		__sync_fetch_and_add(&fl->packets_in, 1);
		__sync_fetch_and_add(&fl->bytes_in, bytes);
	}
	if (pl->new_state != 0xff)
		fl->state = pl->new_state;
	fl->last_seen_ns = now;
}

/* The in-place rewrites; the L4 checksum update is returned in u (off 0: none). */
static __always_inline void rewrite(struct pkt *p, struct plan *pl, struct l4_update *u)
{
	u->off = 0;
	switch (pl->kind) {
	case PLAN_DSR:
		rewrite_dsr(p, pl->be);
		break;
	case PLAN_NAT_IN:
		rewrite_nat_in(p, pl->be, u);
		break;
	case PLAN_FULLNAT_IN:
		rewrite_fullnat_in(p, pl->svc, pl->be, pl->fl, u);
		break;
	case PLAN_NAT_OUT:
		rewrite_nat_out(p, pl->reply_l2, pl->nr, pl->be, u);
		break;
	case PLAN_FULLNAT_OUT:
		rewrite_fullnat_out(p, pl->reply_l2, pl->sr, u);
		break;
	}
}

/* Back out of the interface the frame came in on, else to the next hop's interface (whose veth peer, if
 * it is a veth, must run an XDP program: the lab attaches xdp_pass there). */
static __always_inline int xdp_send(struct plan *pl, __u32 in)
{
	if (pl->out_ifindex && pl->out_ifindex != in)
		return bpf_redirect(pl->out_ifindex, 0);
	return XDP_TX;
}

SEC("xdp")
int xdp_fastpath(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	struct plan pl = { .new_state = 0xff };
	__u64 now = bpf_ktime_get_ns();
	__u32 in = ctx->ingress_ifindex;
	int r = decide(data, data_end, (__u64)(data_end - data), &p, &pl, now, 1, in);

	if (r != OK) {
		count(r);
		return XDP_PASS;
	}
	__u32 bytes = p.total;

	if (pl.kind == PLAN_TUNNEL) {
		if (bpf_xdp_adjust_head(ctx, -TUNNEL_OVERHEAD)) {
			count(PUNT_HELPER_FAILED);
			return XDP_PASS;
		}
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (write_outer(data, data_end, pl.cfg, pl.be)) {
			count(PUNT_HELPER_FAILED);
			return XDP_DROP; /* cannot happen: the frame grew by exactly the header */
		}
		account(&pl, bytes, now, in);
		return xdp_send(&pl, in);
	}
	struct l4_update u;

	rewrite(&p, &pl, &u);
	if (u.off && (void *)(data + u.off + 2) <= data_end) {
		__u8 *c = (__u8 *)data + u.off;

		if (u.udp)
			csum_apply_udp(c, u.delta);
		else
			csum_apply(c, u.delta);
	}
	account(&pl, bytes, now, in);
	return xdp_send(&pl, in);
}

SEC("tc")
int tc_fastpath(struct __sk_buff *skb)
{
	if (bpf_skb_pull_data(skb, ETH_LEN + IP_LEN + 20) && bpf_skb_pull_data(skb, 0))
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};
	struct plan pl = { .new_state = 0xff };
	__u64 now = bpf_ktime_get_ns();
	__u32 in = skb->ifindex;
	int r = decide(data, data_end, skb->len, &p, &pl, now, 0, in);

	if (r != OK) {
		count(r);
		return TC_ACT_OK;
	}
	__u32 bytes = p.total;

	if (pl.kind == PLAN_TUNNEL) {
		if (bpf_skb_adjust_room(skb, TUNNEL_OVERHEAD, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)) {
			count(PUNT_HELPER_FAILED);
			return TC_ACT_OK;
		}
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (write_outer(data, data_end, pl.cfg, pl.be)) {
			count(PUNT_HELPER_FAILED);
			return TC_ACT_SHOT;
		}
		account(&pl, bytes, now, in);
		return bpf_redirect(pl.out_ifindex ? pl.out_ifindex : in, 0);
	}
	struct l4_update u;

	rewrite(&p, &pl, &u);
	if (u.off) {
		/* The address part as a pseudo-header change, then the rest; for an unfinished
		 * (CHECKSUM_PARTIAL) field the kernel applies only the first, as Python's partial rule.
		 * The kernel's sums are of words as loaded from memory (little-endian here): swap the bytes. */
		__u32 rest = __builtin_bswap16(fold(u.delta + (~u.pseudo & 0xffff)));
		__u32 pseudo = __builtin_bswap16(fold(u.pseudo));
		__u64 mangled = u.udp ? BPF_F_MARK_MANGLED_0 : 0;

		bpf_l4_csum_replace(skb, u.off, 0, pseudo, BPF_F_PSEUDO_HDR | mangled);
		bpf_l4_csum_replace(skb, u.off, 0, rest, mangled);
	}
	account(&pl, bytes, now, in);
	return bpf_redirect(pl.out_ifindex ? pl.out_ifindex : in, 0);
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
