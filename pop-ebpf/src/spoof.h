/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Anti-spoofing (step 4 of the packet path). On a port flagged
 * POP_IFACE_ANTI_SPOOFING, the source must lie in a prefix of a customer
 * attached at that port: one LPM lookup of (ingress ifindex, source) in
 * spoof_src_v4 / spoof_src_v6, whose entries are (port, customer prefix).
 * The source's most specific customer alone is not the answer: a customer
 * may sub-allocate part of its prefix to another customer elsewhere and
 * still source it. It decides the common case cheaply, though: when the
 * source's customer (from the lookup the pipeline did anyway) is the port's
 * anti-spoofing customer (spoof_ports), that customer is attached here and
 * has a prefix covering the source, which is exactly an entry of the LPM
 * table: the packet passes without the LPM lookup. Otherwise the LPM lookup
 * decides. Ports without the flag cost one bit test.
 */
#ifndef POP_SPOOF_H
#define POP_SPOOF_H

#include <bpf/bpf_endian.h>

#include "maps.h"
#include "parse.h"

/* Whether some prefix allowed at `ifindex` covers the packet's source. */
static __always_inline int source_allowed_on_port(const struct packet *pkt,
						  __u32 ifindex)
{
	if (pkt->eth_proto == ETH_P_IP) {
		struct pop_spoof_v4_key key = { .prefixlen = 32 + 32,
						.ifindex = bpf_htonl(ifindex) };

		__builtin_memcpy(key.addr, &pkt->src.v4, 4);
		return bpf_map_lookup_elem(&spoof_src_v4, &key) != NULL;
	} else {
		struct pop_spoof_v6_key key = { .prefixlen = 32 + 128,
						.ifindex = bpf_htonl(ifindex) };

		__builtin_memcpy(key.addr, pkt->src.v6, 16);
		return bpf_map_lookup_elem(&spoof_src_v6, &key) != NULL;
	}
}

/* 0 when the source may send from this port, else the customer id to count
 * the spoofed packet against (the port's anti-spoofing customer;
 * POP_MAX_CUSTOMERS when unknown, which count_customer_drop ignores).
 * `src_customer`: the source's most specific customer (0: none). */
static __always_inline __u32 spoofed_on_port(const struct pop_iface *iface,
					     __u32 ifindex,
					     const struct packet *pkt,
					     __u32 src_customer)
{
	__u32 *port_customer;

	if (!(iface->flags & POP_IFACE_ANTI_SPOOFING))
		return 0;
	port_customer = bpf_map_lookup_elem(&spoof_ports, &ifindex);
	if (src_customer && port_customer && *port_customer == src_customer)
		return 0;
	if (source_allowed_on_port(pkt, ifindex))
		return 0;
	return port_customer && *port_customer ? *port_customer : POP_MAX_CUSTOMERS;
}

#endif
