/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * ACL classifier (CONTRACT §6 step 5): first match by priority, default allow.
 *
 * popd compiles the rules into decision trees (HyperSplit style, see
 * docs/acl.md): every rule is a hyper-rectangle over POP_ACL_FIELDS u32
 * fields, inner nodes split one field at a threshold, leaves list at most
 * POP_ACL_LEAF_MAX rules in priority order. Rules are grouped by shape into
 * up to POP_ACL_MAX_TREES trees per family. A packet walks one root-to-leaf
 * path per tree (bounded by POP_ACL_MAX_DEPTH), checks the leaf's few rules
 * fully, and the lowest matching rule index wins, so the cost barely grows
 * with the number of rules.
 *
 * All ACL maps hold two copies; pop_config.acl_copy, read once per packet,
 * picks one. popd writes the other copy completely and then flips the index,
 * so no packet is ever judged by a mix of two rule sets.
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

/*
 * The walk and the leaf check are global (not inlined) functions: the
 * verifier checks each once, on its own, instead of once per path into it,
 * which keeps the bounded loops far from the 1M-instruction limit.
 */

/* Index of the leaf `key` falls into, or POP_ACL_NODE_LEAF when the tree is
 * malformed (deeper than POP_ACL_MAX_DEPTH, out of range). */
__noinline __u32 pop_acl_find_leaf(const struct acl_key *key, __u32 copy,
				   __u32 root)
{
	const struct pop_acl_node *node;
	__u32 index = root, slot, field;
	int depth;

	if (!key || copy > 1)
		return POP_ACL_NODE_LEAF;
	for (depth = 0; depth <= POP_ACL_MAX_DEPTH; depth++) {
		if (index >= POP_MAX_ACL_NODES)
			return POP_ACL_NODE_LEAF;
		slot = copy * POP_MAX_ACL_NODES + index;
		node = bpf_map_lookup_elem(&acl_nodes, &slot);
		if (!node)
			return POP_ACL_NODE_LEAF;
		field = node->field;
		if (field == POP_ACL_NODE_LEAF)
			return index;
		index = key->f[field & (ACL_KEY_SLOTS - 1)] <= node->threshold ?
				node->left : node->right;
	}
	return POP_ACL_NODE_LEAF;
}

/* Index of the first of leaf `index`'s rules that matches, if below `limit`
 * (a match already found in another tree), else POP_ACL_NO_RULE. */
__noinline __u32 pop_acl_check_leaf(const struct acl_key *key, __u32 copy,
				    __u32 index, __u32 limit)
{
	const struct pop_acl_node *leaf;
	__u32 start, count, slot, rule_index, i;

	if (!key || copy > 1 || index >= POP_MAX_ACL_NODES)
		return POP_ACL_NO_RULE;
	slot = copy * POP_MAX_ACL_NODES + index;
	leaf = bpf_map_lookup_elem(&acl_nodes, &slot);
	if (!leaf)
		return POP_ACL_NO_RULE;
	start = leaf->left;
	count = leaf->right;
	for (i = 0; i < POP_ACL_LEAF_MAX; i++) {
		const struct pop_acl_rule *rule;
		__u32 *ref;

		if (i >= count || start + i >= POP_MAX_ACL_LEAF_REFS)
			break;
		slot = copy * POP_MAX_ACL_LEAF_REFS + start + i;
		ref = bpf_map_lookup_elem(&acl_leaf_rules, &slot);
		if (!ref)
			break;
		/* Leaves list rules in ascending index (= priority) order. */
		rule_index = *ref;
		if (rule_index >= limit || rule_index >= POP_MAX_ACL_RULES)
			break;
		slot = copy * POP_MAX_ACL_RULES + rule_index;
		rule = bpf_map_lookup_elem(&acl_rules, &slot);
		if (!rule)
			break;
		if (acl_rule_matches(rule, key))
			return rule_index;
	}
	return POP_ACL_NO_RULE;
}

/* Step 5: 1 when an ACL rule drops the packet. `copy` is the live ACL copy
 * (pop_config.acl_copy), read once per packet by the caller, so every lookup
 * of this packet uses the same copy. */
static __always_inline int acl_drops(const struct packet *pkt, __u32 ifindex,
				     __u32 copy)
{
	struct pop_acl_meta *meta = bpf_map_lookup_elem(&acl_meta, &copy);
	int is_v6 = pkt->eth_proto != ETH_P_IP;
	__u32 trees, t, leaf, found, best = POP_ACL_NO_RULE, slot;
	const struct pop_acl_rule *rule;
	struct acl_key key;

	if (!meta || meta->rule_count == 0)
		return 0;
	acl_key_fill(&key, pkt, ifindex);
	trees = is_v6 ? meta->trees_v6 : meta->trees_v4;
	for (t = 0; t < POP_ACL_MAX_TREES; t++) {
		if (t >= trees)
			break;
		/* Trees come by ascending first rule: once one matched, the
		 * trees whose rules all come later cannot win. */
		if ((is_v6 ? meta->first_rule_v6[t] : meta->first_rule_v4[t]) >= best)
			break;
		leaf = pop_acl_find_leaf(&key, copy,
					 is_v6 ? meta->root_v6[t] : meta->root_v4[t]);
		if (leaf == POP_ACL_NODE_LEAF)
			continue;
		found = pop_acl_check_leaf(&key, copy, leaf, best);
		if (found < best)
			best = found;
	}
	if (best >= POP_MAX_ACL_RULES)
		return 0;
	slot = copy * POP_MAX_ACL_RULES + best;
	rule = bpf_map_lookup_elem(&acl_rules, &slot);
	return rule && rule->action == POP_ACL_DROP;
}

#endif
