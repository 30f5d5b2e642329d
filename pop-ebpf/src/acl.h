/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * ACL classifier: first match by priority, default allow; the deciding
 * rule's hit counter (acl_hits) counts the packet.
 *
 * popd compiles the rules into decision trees (HyperSplit style, see
 * docs/acl.md): every rule is a hyper-rectangle over POP_ACL_FIELDS u32
 * fields, inner nodes split one field at a threshold, leaves list at most
 * POP_ACL_LEAF_MAX rules in priority order. Rules are grouped by shape into
 * up to POP_ACL_MAX_TREES trees per family. Three binary levels are packed
 * into one node (one lookup), leaves hang directly in the child refs, and a
 * leaf's rules come in blocks of POP_ACL_LEAF_BLOCK entries that carry each
 * rule's two narrowest fields. A packet walks one root-to-leaf path per tree
 * (at most POP_ACL_MAX_NODE_DEPTH nodes), rejects most of the leaf's rules
 * from the entries, checks the rest fully, and the lowest matching priority
 * wins, so the cost barely grows with the number of rules. A rule keeps its
 * slot (index in acl_rules) for as long as it exists.
 *
 * All ACL maps hold two copies; pop_config.acl_copy, read once per packet,
 * picks one. popd writes a change into the other copy and then flips the
 * index, so no packet is ever judged by a mix of two rule sets.
 */
#ifndef POP_ACL_H
#define POP_ACL_H

#include "maps.h"
#include "parse.h"

/* Slots of the key; a power of two so a field index can be masked in bounds. */
#define ACL_KEY_SLOTS 16

struct acl_key {
	__u32 f[ACL_KEY_SLOTS];
};

static __always_inline void acl_key_fill(struct acl_key *key,
					 const struct packet *pkt,
					 __u32 ifindex)
{
	int has_ports = !pkt->non_first_fragment &&
			(pkt->l4_proto == IPPROTO_TCP ||
			 pkt->l4_proto == IPPROTO_UDP);
	int i;

	__builtin_memset(key, 0, sizeof(*key));
	if (pkt->eth_proto == ETH_P_IP) {
		key->f[POP_ACL_F_SRC0] = bpf_ntohl(pkt->src.v4);
		key->f[POP_ACL_F_DST0] = bpf_ntohl(pkt->dst.v4);
	} else {
		const __u32 *s = (const __u32 *)pkt->src.v6;
		const __u32 *d = (const __u32 *)pkt->dst.v6;

#pragma unroll
		for (i = 0; i < 4; i++) {
			key->f[POP_ACL_F_SRC0 + i] = bpf_ntohl(s[i]);
			key->f[POP_ACL_F_DST0 + i] = bpf_ntohl(d[i]);
		}
	}
	key->f[POP_ACL_F_PROTO] = pkt->l4_proto;
	key->f[POP_ACL_F_SPORT] = has_ports ? pkt->sport : POP_ACL_NO_PORT;
	key->f[POP_ACL_F_DPORT] = has_ports ? pkt->dport : POP_ACL_NO_PORT;
	key->f[POP_ACL_F_IFINDEX] = ifindex;
}

#define ACL_FIELD_OUTSIDE(rule, key, field)                                     \
	((key)->f[field] < (rule)->lo[field] || (key)->f[field] > (rule)->hi[field])

/* Fields in the order most likely to reject a rule early: the words that
 * distinguish IPv4 rules and the ports first, the low IPv6 words last. */
static __always_inline int acl_rule_matches(const struct pop_acl_rule *rule,
					    const struct acl_key *key)
{
	return !(ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_SRC0) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_DST0) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_DPORT) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_PROTO) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_SPORT) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_IFINDEX) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_SRC0 + 1) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_DST0 + 1) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_SRC0 + 2) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_DST0 + 2) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_SRC0 + 3) ||
		 ACL_FIELD_OUTSIDE(rule, key, POP_ACL_F_DST0 + 3));
}

/* Slot s of a node sends the key right (1) or left (0). */
#define ACL_GOES_RIGHT(node, key, s)                                            \
	((key)->f[(node)->field[s] & (ACL_KEY_SLOTS - 1)] > (node)->threshold[s])

/* The key is outside field j of a leaf entry (pop_acl_leaf_rule). */
#define ACL_ENTRY_OUTSIDE(entry, key, j)                                        \
	((key)->f[(entry)->field[j] & (ACL_KEY_SLOTS - 1)] < (entry)->lo[j] ||  \
	 (key)->f[(entry)->field[j] & (ACL_KEY_SLOTS - 1)] > (entry)->hi[j])

_Static_assert(POP_ACL_NODE_LEVELS == 3, "the walk spells out three levels");

/* The priority of the rule in slot `rule_slot` of copy `copy` when it
 * matches `key`, else POP_ACL_NO_RULE: the full check, for the few rules
 * whose leaf entry did not reject the key. */
__noinline __u32 pop_acl_rule_matches(const struct acl_key *key, __u32 copy,
				      __u32 rule_slot)
{
	const struct pop_acl_rule *rule;
	__u32 slot;

	if (!key || copy > 1 || rule_slot >= POP_MAX_ACL_RULES)
		return POP_ACL_NO_RULE;
	slot = copy * POP_MAX_ACL_RULES + rule_slot;
	rule = bpf_map_lookup_elem(&acl_rules, &slot);
	if (!rule || !acl_rule_matches(rule, key))
		return POP_ACL_NO_RULE;
	return rule->priority;
}

/*
 * The walk of one tree is a global (not inlined) function: the verifier
 * checks it once, on its own, instead of once per path into it, which keeps
 * the bounded loops far from the 1M-instruction limit.
 *
 * The first rule of the leaf `key` falls into in the tree at `ref` that
 * matches, if its priority is below `limit` (a match already found in another
 * tree): its priority << 32 | its slot, else POP_ACL_NO_MATCH (also when the
 * tree is malformed).
 */
#define POP_ACL_NO_MATCH 0xFFFFFFFFFFFFFFFFULL

__noinline __u64 pop_acl_tree_match(const struct acl_key *key, __u32 copy,
				    __u32 ref, __u32 limit)
{
	const struct pop_acl_node *node;
	__u32 start, count, slot, rule_slot, priority, b, j, c;
	int depth;

	if (!key || copy > 1)
		return POP_ACL_NO_MATCH;
	for (depth = 0; depth < POP_ACL_MAX_NODE_DEPTH; depth++) {
		if (ref & POP_ACL_REF_LEAF)
			break;
		if (ref >= POP_MAX_ACL_NODES)
			return POP_ACL_NO_MATCH;
		slot = copy * POP_MAX_ACL_NODES + ref;
		node = bpf_map_lookup_elem(&acl_nodes, &slot);
		if (!node)
			return POP_ACL_NO_MATCH;
		/* The three levels spelled out: constant offsets, one
		 * compare and branch per level. */
		if (!ACL_GOES_RIGHT(node, key, 0)) {
			if (!ACL_GOES_RIGHT(node, key, 1))
				c = ACL_GOES_RIGHT(node, key, 3);
			else
				c = 2 + ACL_GOES_RIGHT(node, key, 4);
		} else {
			if (!ACL_GOES_RIGHT(node, key, 2))
				c = 4 + ACL_GOES_RIGHT(node, key, 5);
			else
				c = 6 + ACL_GOES_RIGHT(node, key, 6);
		}
		ref = node->child[c & (POP_ACL_NODE_CHILDREN - 1)];
	}
	if (!(ref & POP_ACL_REF_LEAF))
		return POP_ACL_NO_MATCH;
	start = ref & POP_ACL_REF_START;
	count = (ref >> POP_ACL_REF_COUNT_SHIFT) & POP_ACL_REF_COUNT;
	for (b = 0; b < POP_ACL_LEAF_MAX / POP_ACL_LEAF_BLOCK; b++) {
		const struct pop_acl_leaf_block *block;

		if (b * POP_ACL_LEAF_BLOCK >= count ||
		    start + b >= POP_MAX_ACL_LEAF_BLOCKS)
			break;
		slot = copy * POP_MAX_ACL_LEAF_BLOCKS + start + b;
		block = bpf_map_lookup_elem(&acl_leaf_rules, &slot);
		if (!block)
			break;
#pragma unroll
		for (j = 0; j < POP_ACL_LEAF_BLOCK; j++) {
			const struct pop_acl_leaf_rule *entry = &block->rule[j];

			if (b * POP_ACL_LEAF_BLOCK + j >= count)
				return POP_ACL_NO_MATCH;
			/* Leaves list rules by ascending priority: the first
			 * match is the leaf's answer. Slots are stable across
			 * changes (popd never renumbers a rule), so the order
			 * is the rule's priority, not its slot. */
			rule_slot = entry->rule;
			if (ACL_ENTRY_OUTSIDE(entry, key, 0) ||
			    ACL_ENTRY_OUTSIDE(entry, key, 1))
				continue;
			priority = pop_acl_rule_matches(key, copy, rule_slot);
			if (priority == POP_ACL_NO_RULE)
				continue;
			if (priority >= limit)
				return POP_ACL_NO_MATCH;
			return (__u64)priority << 32 | rule_slot;
		}
	}
	return POP_ACL_NO_MATCH;
}

/*
 * The first stage: the trees (bit t = tree t of the family) that cannot match
 * `key`, from four bytes of `filter` (acl_filter[copy]): the cells of the
 * source, destination, protocol and destination port. A cell is 16 bits of
 * the key value: the top half of an IPv4 address (a /16), the low half of an
 * IPv6 address's first word (bits 16-31, where /32 allocations differ), the
 * whole protocol or port (a port-less packet's 65536 lands in cell 0, which
 * the compiler treats the same). popd marks a tree in a cell when no rule of
 * it reaches that cell. Inlined: a call costs more than the four loads.
 */
static __always_inline __u32 acl_trees_to_skip(const struct pop_acl_filter *filter,
						const struct acl_key *key,
						int is_v6)
{
	__u32 src = key->f[POP_ACL_F_SRC0], dst = key->f[POP_ACL_F_DST0], base;

	if (is_v6) {
		base = POP_ACL_FILTER_FIELDS * POP_ACL_FILTER_CELLS;
	} else {
		base = 0;
		src >>= 16;
		dst >>= 16;
	}
	return filter->skip[base + (src & (POP_ACL_FILTER_CELLS - 1))] |
	       filter->skip[base + POP_ACL_FILTER_CELLS +
			    (dst & (POP_ACL_FILTER_CELLS - 1))] |
	       filter->skip[base + 2 * POP_ACL_FILTER_CELLS +
			    (key->f[POP_ACL_F_PROTO] & (POP_ACL_FILTER_CELLS - 1))] |
	       filter->skip[base + 3 * POP_ACL_FILTER_CELLS +
			    (key->f[POP_ACL_F_DPORT] & (POP_ACL_FILTER_CELLS - 1))];
}

/* The first match by priority over the trees of the packet's family that
 * the first stage leaves (`skip`): its priority << 32 | its slot, else
 * POP_ACL_NO_MATCH. A global function, like the walk: the verifier checks
 * the loop over the trees once, not once per path into the pipeline. */
__noinline __u64 pop_acl_classify(const struct acl_key *key, __u32 copy,
				  __u32 is_v6, __u32 skip)
{
	const struct pop_acl_meta *meta;
	__u32 trees, t, best = POP_ACL_NO_RULE, best_slot = 0;
	__u64 found;

	if (!key || copy > 1)
		return POP_ACL_NO_MATCH;
	meta = bpf_map_lookup_elem(&acl_meta, &copy);
	if (!meta)
		return POP_ACL_NO_MATCH;
	trees = is_v6 ? meta->trees_v6 : meta->trees_v4;
	for (t = 0; t < POP_ACL_MAX_TREES; t++) {
		if (t >= trees)
			break;
		if (skip & (1U << t))
			continue;
		/* Trees come by ascending first priority: once one matched,
		 * the trees whose rules all come later cannot win. */
		if ((is_v6 ? meta->first_rule_v6[t] : meta->first_rule_v4[t]) >= best)
			break;
		found = pop_acl_tree_match(key, copy,
					   is_v6 ? meta->root_v6[t] : meta->root_v4[t],
					   best);
		if (found != POP_ACL_NO_MATCH && (__u32)(found >> 32) < best) {
			best = found >> 32;
			best_slot = (__u32)found;
		}
	}
	if (best == POP_ACL_NO_RULE)
		return POP_ACL_NO_MATCH;
	return (__u64)best << 32 | best_slot;
}

/* Step 5: 1 when an ACL rule drops the packet. `copy` is the live ACL copy
 * (pop_config.acl_copy), read once per packet by the caller, so every lookup
 * of this packet uses the same copy. The first matching rule counts a hit of
 * `bytes`; `trace` (NULL in the live program) gets its priority instead. */
static __always_inline int acl_drops(const struct packet *pkt, __u32 ifindex,
				     __u32 copy, __u32 bytes,
				     struct pop_trace *trace)
{
	struct pop_acl_meta *meta = bpf_map_lookup_elem(&acl_meta, &copy);
	const struct pop_acl_filter *filter;
	int is_v6 = pkt->eth_proto != ETH_P_IP;
	const struct pop_acl_rule *rule;
	__u32 rule_slot, slot, skip, trees;
	struct acl_key key;
	__u64 found;

	if (!meta || meta->rule_count == 0)
		return 0;
	acl_key_fill(&key, pkt, ifindex);
	/* Same key as acl_meta's: no stack slot of its own. */
	filter = bpf_map_lookup_elem(&acl_filter, &copy);
	skip = filter ? acl_trees_to_skip(filter, &key, is_v6) : 0;
	/* The first stage ruled out every tree of the family (traffic no rule
	 * is about, the common case): no rule can match, and the walk is not
	 * called. A call costs more here than the rest of this step. */
	trees = is_v6 ? meta->trees_v6 : meta->trees_v4;
	if (trees <= POP_ACL_MAX_TREES && (~skip & ((1U << trees) - 1)) == 0)
		return 0;
	found = pop_acl_classify(&key, copy, is_v6, skip);
	if (found == POP_ACL_NO_MATCH)
		return 0;
	rule_slot = (__u32)found;
	if (rule_slot >= POP_MAX_ACL_RULES)
		return 0;
	slot = copy * POP_MAX_ACL_RULES + rule_slot;
	rule = bpf_map_lookup_elem(&acl_rules, &slot);
	if (!rule)
		return 0;
	if (trace) {
		trace->acl_matched = 1;
		trace->acl_priority = rule->priority;
	} else {
		/* Indexed by the slot alone: a rule keeps its slot in both
		 * copies, so its count goes on across every flip. */
		struct pop_counter *hits = bpf_map_lookup_elem(&acl_hits, &rule_slot);

		if (hits) {
			hits->packets += 1;
			hits->bytes += bytes;
		}
	}
	return rule->action == POP_ACL_DROP;
}

#endif
