/* The seeded flow hash, bit for bit pktlb/core/flowkey.py: CRC-32 (zlib's, seeded) over the packed
 * 5-tuple "!BIIHH" (proto, src, dst, sport, dport in network order, 13 bytes), then MurmurHash3's
 * 32-bit finaliser.  The source hash of ``sh`` is the same over the 4 source-address bytes.
 */
#ifndef PKTLB_HASH_H
#define PKTLB_HASH_H

#include <linux/types.h>

static const __u32 crc32_table[256] = {
#include "crc32_table.h"
};

static __always_inline __u32 crc32_byte(__u32 crc, __u8 b)
{
	__u32 i = (crc ^ b) & 0xff;

	return crc32_table[i] ^ (crc >> 8);
}

static __always_inline __u32 fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

/* Addresses and ports as read from the packet (network order in memory). */
static __always_inline __u32 flow_hash(__u8 proto, const __u8 *src, const __u8 *dst, const __u8 *ports, __u32 seed)
{
	__u32 crc = ~seed;

	crc = crc32_byte(crc, proto);
#pragma unroll
	for (int i = 0; i < 4; i++)
		crc = crc32_byte(crc, src[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		crc = crc32_byte(crc, dst[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		crc = crc32_byte(crc, ports[i]);
	return fmix32(~crc);
}

static __always_inline __u32 src_hash(const __u8 *src, __u32 seed)
{
	__u32 crc = ~seed;

#pragma unroll
	for (int i = 0; i < 4; i++)
		crc = crc32_byte(crc, src[i]);
	return fmix32(~crc);
}

#endif
