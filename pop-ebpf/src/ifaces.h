/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* The interface record of an ifindex. popd writes each one to the hash
 * ifaces and, when the ifindex is below POP_IFACES_BY_INDEX, also to the
 * array ifaces_by_index, whose lookup costs less per packet. Both give the
 * same answer for every ifindex: an ifindex below the bound whose array
 * element is not present (popd never wrote it, or an older popd that did
 * not know the array runs) is looked up in the hash. */
#ifndef POP_IFACES_H
#define POP_IFACES_H

#include "maps.h"

/* The record of `ifindex`, or NULL. A record found in the hash is copied to
 * this CPU's element 0 of ifaces_by_index (a few words, only for ifindexes
 * the array does not hold), so that every answer is a value of the same map:
 * values of two maps would make the verifier walk the whole pipeline once
 * per map (twice the verified instructions). */
static __always_inline struct pop_iface *lookup_iface(__u32 ifindex)
{
	struct pop_iface *iface, *found;
	__u32 scratch = 0;

	if (ifindex - 1 < POP_IFACES_BY_INDEX - 1) {
		iface = bpf_map_lookup_elem(&ifaces_by_index, &ifindex);
		if (iface && (iface->flags & POP_IFACE_PRESENT))
			return iface;
	}
	found = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!found)
		return NULL;
	iface = bpf_map_lookup_elem(&ifaces_by_index, &scratch);
	if (!iface)
		return NULL;
	*iface = *found;
	return iface;
}

#endif
