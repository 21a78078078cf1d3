/* Internet checksum helpers (RFC 1071 sums, RFC 1624 incremental updates), as pktlb/core/checksum.py.
 *
 * The deltas come precomputed from Python (the snapshot's per-backend values, the flow's full-NAT
 * deltas): folded one's-complement sums of ~m + m' over the changed words.  Applying one is
 * HC' = ~fold(~HC + delta), exactly the arithmetic of rewrite/base.py's apply_delta, so the
 * program writes the same bytes as Python.
 */
#ifndef PKTLB_CSUM_H
#define PKTLB_CSUM_H

#include <linux/types.h>

static __always_inline __u32 fold(__u32 x)
{
	/* Python's fold: end-around carry until the value fits 16 bits (0xffff stays 0xffff). */
	x = (x & 0xffff) + (x >> 16);
	x = (x & 0xffff) + (x >> 16);
	return x;
}

/* Apply a delta to a finished checksum field (big-endian bytes at p). */
static __always_inline void csum_apply(__u8 *p, __u32 delta)
{
	__u32 c = ((__u32)p[0] << 8) | p[1];
	__u32 n = ~fold((~c & 0xffff) + delta) & 0xffff;

	p[0] = n >> 8;
	p[1] = n & 0xff;
}

/* A UDP checksum: 0 means "none" (left alone by the caller) and a computed 0 is sent as 0xffff. */
static __always_inline void csum_apply_udp(__u8 *p, __u32 delta)
{
	__u32 c = ((__u32)p[0] << 8) | p[1];
	__u32 n = ~fold((~c & 0xffff) + delta) & 0xffff;

	if (n == 0)
		n = 0xffff;
	p[0] = n >> 8;
	p[1] = n & 0xff;
}

/* One's-complement sum of a 20-byte IPv4 header (no options), not complemented. */
static __always_inline __u32 ip_header_sum(const __u8 *h)
{
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 20; i += 2)
		s += ((__u32)h[i] << 8) | h[i + 1];
	return fold(s);
}

#endif
