/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Anti-spoofing (step 4 of the packet path). On a port flagged
 * POP_IFACE_ANTI_SPOOFING, the source must belong to a customer attached at
 * that port: (source's customer, ingress ifindex) must be in spoof_allow.
 * Ports without the flag cost one bit test.
 */
#ifndef POP_SPOOF_H
#define POP_SPOOF_H

#include "maps.h"

/* 0 when the source may send from this port, else the customer id to count
 * the spoofed packet against (the port's anti-spoofing customer;
 * POP_MAX_CUSTOMERS when unknown, which count_customer_drop ignores). */
static __always_inline __u32 spoofed_on_port(const struct pop_iface *iface,
					     __u32 ifindex, __u32 customer_src)
{
	struct pop_spoof_key key = { .customer_id = customer_src,
				     .ifindex = ifindex };
	__u32 *port_customer;

	if (!(iface->flags & POP_IFACE_ANTI_SPOOFING))
		return 0;
	if (customer_src && bpf_map_lookup_elem(&spoof_allow, &key))
		return 0;
	port_customer = bpf_map_lookup_elem(&spoof_ports, &ifindex);
	return port_customer && *port_customer ? *port_customer : POP_MAX_CUSTOMERS;
}

#endif
