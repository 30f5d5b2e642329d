/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Is a unicast frame for this host? The kernel accepts, on an interface, its
 * own MAC and the MACs of the macvlan/macvtap devices on top of it (keepalived
 * implements VRRP virtual MACs as such devices). Anything else is another
 * host's frame that reached us on a shared segment (an exchange LAN, a
 * flooding switch): routing it would duplicate what its owner routes. */
#ifndef POP_HOSTMAC_H
#define POP_HOSTMAC_H

#include <linux/if_ether.h>
#include "maps.h"

/* Whether (ifindex, MAC in the first six bytes of `mac`) is in upper_macs.
 * A global function: the verifier checks it once, on its own, instead of
 * along every path of the pipeline after it (inlined, it cost ~25k verified
 * instructions). */
__attribute__((noinline)) int upper_mac_known(__u32 ifindex, __u64 mac)
{
	struct pop_upper_mac_key key = { .ifindex = ifindex };

	__builtin_memcpy(key.mac, &mac, ETH_ALEN);
	return bpf_map_lookup_elem(&upper_macs, &key) != NULL;
}

/* 1 when `dmac` (a unicast MAC in the packet) is one the host accepts on
 * `ifindex`, whose record is `iface`. The common case, the interface's own
 * MAC, is compared inline; only other MACs cost a call and a hash lookup
 * (the MAC passes in the first six bytes of `mac`, in packet order). */
static __always_inline int mac_is_for_host(const struct pop_iface *iface,
					   __u32 ifindex, const __u8 *dmac)
{
	__u64 mac = 0;

	if (((dmac[0] ^ iface->mac[0]) | (dmac[1] ^ iface->mac[1]) |
	     (dmac[2] ^ iface->mac[2]) | (dmac[3] ^ iface->mac[3]) |
	     (dmac[4] ^ iface->mac[4]) | (dmac[5] ^ iface->mac[5])) == 0)
		return 1;
	__builtin_memcpy(&mac, dmac, ETH_ALEN);
	return upper_mac_known(ifindex, mac);
}

#endif
