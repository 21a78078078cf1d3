// SPDX-License-Identifier: MIT
/* XDP_PASS and nothing else, for the veth peer of an interface whose XDP program answers with
 * XDP_TX: a veth delivers such frames only to a peer that runs an XDP program (it then has NAPI).
 * Attached by the lab (`ip link set dev PORT xdp obj pass.bpf.o sec xdp`) in the switch namespace.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass_only(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
