/* The flow table's side of the pipeline: is an entry past its idle timeout, and scheduling a new flow
 * of a service whose scheduler is a pure function of the packet (maglev, hash, sh) from the lookup
 * table Python built, then recording it in the LRU flow map as Katran does.  Also the plan the
 * pipeline fills for the rewrite stage.
 */
#ifndef PKTLB_SCHED_H
#define PKTLB_SCHED_H

#include "maps.h"
#include "hash.h"
#include "parsing.h"

#define OK PUNT_REASONS

enum plan_kind { PLAN_DSR, PLAN_NAT_IN, PLAN_FULLNAT_IN, PLAN_TUNNEL, PLAN_NAT_OUT, PLAN_FULLNAT_OUT };

struct plan {
	struct config *cfg;
	struct service *svc;
	struct backend *be;
	struct flow *fl; /* NULL: a NAT reply whose flow Python does not know (it forwards it too) */
	struct nat_reverse *nr;
	struct snat_reverse *sr;
	const __u8 *reply_l2; /* the Ethernet addresses of a reply (the gateway's, else the flow's) */
	__u32 out_ifindex; /* where the frame leaves (0: where it came in) */
	__u8 kind;
	__u8 new_flow;
	__u8 new_state; /* 0xff: unchanged */
	__u8 outbound;
};

static __always_inline int expired(const struct config *cfg, const struct flow *fl, __u64 now)
{
	__u32 st = fl->state;

	if (st > ST_UDP)
		return 1;
	return now > fl->last_seen_ns && now - fl->last_seen_ns > (__u64)cfg->timeout[st] * 1000000000ULL;
}

static __always_inline int schedule(struct pkt *p, struct service *svc, struct flow_key *key, struct plan *pl,
				    __u64 now)
{
	__u32 id = svc->id;
	struct sched_table *t = bpf_map_lookup_elem(&pktlb_tables, &id);

	if (!t || t->size == 0)
		return PUNT_NO_BACKEND;
	if (t->size > MAX_TABLE)
		return PUNT_UNKNOWN_FLOW;
	__u32 h = svc->sched == SCHED_SRC_HASH ? src_hash(p->ip + 12, pl->cfg->seed)
					       : flow_hash(p->proto, p->ip + 12, p->ip + 16, p->l4, pl->cfg->seed);
	__u32 slot = h % t->size;

	asm volatile("" : "+r"(slot)); /* keep the bound check the verifier needs (the compiler knows it holds) */
	if (slot >= MAX_TABLE)
		return PUNT_NO_BACKEND;
	__u32 be_id = t->slots[slot];
	struct backend *be = bpf_map_lookup_elem(&pktlb_backends, &be_id);

	if (be && be->state == BE_NO_NEIGHBOUR)
		return PUNT_NO_NEIGHBOUR;
	if (!be || be->state != BE_UP)
		return PUNT_NO_BACKEND;
	struct flow fresh = {
		.backend_id = be_id,
		.state = p->proto == PROTO_TCP ? (p->flags & TCP_SYN ? ST_SYN : ST_EST) : ST_UDP,
		.origin = 1,
		.last_seen_ns = now,
	};
	if (bpf_map_update_elem(&pktlb_flows, key, &fresh, BPF_NOEXIST))
		return PUNT_HELPER_FAILED;
	pl->fl = bpf_map_lookup_elem(&pktlb_flows, key);
	if (!pl->fl)
		return PUNT_HELPER_FAILED;
	pl->be = be;
	pl->new_flow = 1;
	return OK;
}

#endif
