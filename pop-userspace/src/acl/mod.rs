//! Admission control compiled for the data plane (anti-spoofing, ACLs and
//! policers, in the order a packet meets them): the ACL classifier
//! ([`tree`]), its per-rule hit counters ([`hits`]), anti-spoofing tables
//! ([`spoof`]) and per-customer policers ([`police`]), and [`AclMaps`] to
//! write them.
//!
//! ACL changes are atomic: every ACL map holds two copies, and
//! `PopConfig::acl_copy` says which one packets use. A change is
//! [`AclMaps::write_copy`] of the inactive copy, then [`AclMaps::activate`]
//! (or the controller writing `acl_copy` in its `PopConfig`). Each packet reads
//! `acl_copy` once, so it is judged entirely by the old or the new rules.
pub mod filter;
pub mod hits;
pub mod police;
pub mod spoof;
pub mod tree;

use std::path::Path;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData,
};
use ipnet::IpNet;
use pop_common::{
    maps as names, policer_index, Direction, PopAclFilter, PopAclLeafBlock, PopAclMeta, PopAclNode,
    PopAclRule, PopConfig, PopPolicer, MAX_ACL_LEAF_BLOCKS, MAX_ACL_NODES, MAX_ACL_RULES,
    MAX_CUSTOMERS,
};

pub use police::policer;
pub use spoof::{spoof_tables, SpoofTables};
pub use tree::{compile, key_v4, key_v6, AclKey, AclStats, CompiledAcl};

/// Handles on the maps this module writes, opened from their pins.
pub struct AclMaps {
    config: Array<MapData, PopConfig>,
    meta: Array<MapData, PopAclMeta>,
    nodes: Array<MapData, PopAclNode>,
    leaf_rules: Array<MapData, PopAclLeafBlock>,
    rules: Array<MapData, PopAclRule>,
    /// The first stage; `None` with an object built before it existed, which
    /// walks every tree and needs none.
    filter: Option<Array<MapData, PopAclFilter>>,
    spoof_ports: HashMap<MapData, u32, u32>,
    spoof_src_v4: LpmTrie<MapData, [u8; 8], u32>,
    spoof_src_v6: LpmTrie<MapData, [u8; 20], u32>,
    policers: Array<MapData, PopPolicer>,
    hits: hits::HitsMap,
    /// Hit counts carried into the copy last written, settled when it goes live.
    carry: Option<hits::Carry>,
    /// The rules this handle wrote into each copy, by priority, so a swap and
    /// `acl show` need not read them back from the maps.
    written: [Option<hits::RulesByPriority>; 2],
}

pub(crate) fn open<T>(dir: &Path, name: &'static str) -> Result<T, String>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = dir.join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| format!("map {name}: opening pin {}: {e}", path.display()))?;
    let map = Map::from_map_data(data).map_err(|e| format!("map {name}: {e}"))?;
    T::try_from(map).map_err(|e| format!("map {name}: {e}"))
}

fn map_err(name: &'static str, what: String) -> impl FnOnce(aya::maps::MapError) -> String {
    move |e| format!("map {name}: {what}: {e}")
}

fn is_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Waits until every packet that may have read the old `acl_copy` is done.
///
/// XDP programs (and BPF_PROG_TEST_RUN) run inside RCU read-side sections;
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace period
/// (`synchronize_rcu`), so afterwards no packet still walks the old copy.
pub fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // nohz_full kernels refuse CMD_GLOBAL: a packet takes microseconds.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl AclMaps {
    /// Opens the maps pinned in `maps_dir` (popd's `<bpffs>/maps`).
    pub fn open(maps_dir: &Path) -> Result<Self, String> {
        Ok(Self {
            config: open(maps_dir, names::CONFIG)?,
            meta: open(maps_dir, names::ACL_META)?,
            nodes: open(maps_dir, names::ACL_NODES)?,
            leaf_rules: open(maps_dir, names::ACL_LEAF_RULES)?,
            rules: open(maps_dir, names::ACL_RULES)?,
            filter: if maps_dir.join(names::ACL_FILTER).exists() {
                Some(open(maps_dir, names::ACL_FILTER)?)
            } else {
                None
            },
            spoof_ports: open(maps_dir, names::SPOOF_PORTS)?,
            spoof_src_v4: open(maps_dir, names::SPOOF_SRC_V4)?,
            spoof_src_v6: open(maps_dir, names::SPOOF_SRC_V6)?,
            policers: open(maps_dir, names::POLICERS)?,
            hits: open(maps_dir, names::ACL_HITS)?,
            carry: None,
            written: [None, None],
        })
    }

    /// The ACL copy packets use now (`PopConfig::acl_copy`).
    pub fn active_copy(&self) -> Result<u32, String> {
        let config = self
            .config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "get 0".into()))?;
        Ok(config.acl_copy & 1)
    }

    /// The copy to write next: the one packets do not use.
    pub fn inactive_copy(&self) -> Result<u32, String> {
        Ok(1 - self.active_copy()?)
    }

    /// Writes `compiled` completely into ACL copy `copy` (0 or 1), which must
    /// not be the active one. Packets do not see it until [`AclMaps::activate`].
    pub fn write_copy(&mut self, copy: u32, compiled: &CompiledAcl) -> Result<(), String> {
        if copy > 1 {
            return Err(format!("acl copy {copy}: must be 0 or 1"));
        }
        let live = self.active_copy()?;
        let live_meta = self
            .meta
            .get(&live, 0)
            .map_err(map_err(names::ACL_META, format!("get {live}")))?;
        if copy == live && live_meta.rule_count != 0 {
            return Err(format!(
                "acl copy {copy}: it is the active copy; write copy {} and activate it",
                1 - copy
            ));
        }
        let fits = |what: &str, n: usize, max: u32| {
            if n > max as usize {
                Err(format!("acl: {n} {what} exceed the maximum of {max}"))
            } else {
                Ok(())
            }
        };
        fits("rules", compiled.rules.len(), MAX_ACL_RULES)?;
        fits("tree nodes", compiled.nodes.len(), MAX_ACL_NODES)?;
        fits(
            "leaf blocks",
            compiled.leaf_rules.len(),
            MAX_ACL_LEAF_BLOCKS,
        )?;
        self.carry = None;
        self.written[copy as usize] = None;
        // A packet that read the previous index may still walk this copy.
        wait_for_readers();
        // Rules equal to a live one keep its hit count; the others start at 0.
        let live_rules = match self.written[live as usize].take() {
            Some(rules) => rules,
            None => hits::rules_by_priority(&self.meta, &self.rules, live)?,
        };
        let carry = hits::Carry::prepare(&mut self.hits, &live_rules, live, copy, &compiled.rules);
        if live != copy {
            self.written[live as usize] = Some(live_rules);
        }
        self.carry = Some(carry?);
        // Everything a node can point at first, the nodes, then the roots.
        for (i, rule) in compiled.rules.iter().enumerate() {
            let index = copy * MAX_ACL_RULES + i as u32;
            self.rules
                .set(index, rule, 0)
                .map_err(map_err(names::ACL_RULES, format!("set {index}")))?;
        }
        for (i, block) in compiled.leaf_rules.iter().enumerate() {
            let index = copy * MAX_ACL_LEAF_BLOCKS + i as u32;
            self.leaf_rules
                .set(index, block, 0)
                .map_err(map_err(names::ACL_LEAF_RULES, format!("set {index}")))?;
        }
        for (i, node) in compiled.nodes.iter().enumerate() {
            let index = copy * MAX_ACL_NODES + i as u32;
            self.nodes
                .set(index, node, 0)
                .map_err(map_err(names::ACL_NODES, format!("set {index}")))?;
        }
        if let Some(filter) = &mut self.filter {
            // Always written: a filter left from an older rule set would skip
            // the wrong trees (all zero, for a compile without one, skips none).
            let zeros;
            let value = match filter::as_value(&compiled.filter) {
                Some(value) => value,
                None => {
                    zeros = vec![0u8; pop_common::ACL_FILTER_BYTES];
                    filter::as_value(&zeros).expect("ACL_FILTER_BYTES long")
                }
            };
            filter
                .set(copy, value, 0)
                .map_err(map_err(names::ACL_FILTER, format!("set {copy}")))?;
        }
        self.meta
            .set(copy, compiled.meta, 0)
            .map_err(map_err(names::ACL_META, format!("set {copy}")))?;
        self.written[copy as usize] = Some(hits::index_rules(&compiled.rules));
        Ok(())
    }

    /// Makes `copy` the live one (read-modify-write of `PopConfig::acl_copy`,
    /// keeping the other fields), then waits until no packet uses the old copy,
    /// so it may be rewritten. A controller that writes `PopConfig` itself must
    /// carry `acl_copy` over and call [`wait_for_readers`] after the write.
    pub fn activate(&mut self, copy: u32) -> Result<(), String> {
        if copy > 1 {
            return Err(format!("acl copy {copy}: must be 0 or 1"));
        }
        let mut config = self
            .config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "get 0".into()))?;
        config.acl_copy = copy;
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG, format!("set acl_copy {copy}")))?;
        wait_for_readers();
        self.settle_hits(copy)
    }

    /// Call once `copy` is live and no packet uses the other copy (after
    /// [`wait_for_readers`]): adds the hits that rules carried over by the
    /// last [`AclMaps::write_copy`] of `copy` took in the old copy meanwhile.
    pub fn settle_hits(&mut self, copy: u32) -> Result<(), String> {
        match self.carry.take() {
            Some(carry) if carry.to_copy == copy => carry.settle(&mut self.hits),
            _ => Ok(()),
        }
    }

    /// Hit counters (summed over CPUs) of the rules of copy `copy`, by
    /// priority. A rule left out of the copy (its `in_iface` does not exist)
    /// is absent.
    pub fn hits(
        &self,
        copy: u32,
    ) -> Result<std::collections::BTreeMap<u32, pop_common::PopCounter>, String> {
        let copy = copy & 1;
        match &self.written[copy as usize] {
            Some(rules) => Ok(hits::read_copy(&self.hits, rules, copy)),
            None => {
                let rules = hits::rules_by_priority(&self.meta, &self.rules, copy)?;
                Ok(hits::read_copy(&self.hits, &rules, copy))
            }
        }
    }

    /// Writes `compiled` to the inactive copy and activates it. Returns the
    /// copy now live.
    pub fn swap_in(&mut self, compiled: &CompiledAcl) -> Result<u32, String> {
        let copy = self.inactive_copy()?;
        self.write_copy(copy, compiled)?;
        self.activate(copy)?;
        Ok(copy)
    }

    /// Adds what `want` has and the maps lack. Call before the interfaces'
    /// `IFACE_ANTI_SPOOFING` flags are set, so a newly protected port never
    /// drops its own customers' traffic.
    pub fn add_spoof(&mut self, want: &SpoofTables) -> Result<(), String> {
        for &(ifindex, prefix) in &want.prefixes {
            let what = || format!("insert ifindex {ifindex} prefix {prefix}");
            let len = 32 + u32::from(prefix.prefix_len());
            match prefix {
                IpNet::V4(p) => {
                    let key = Key::new(len, spoof_data_v4(ifindex, p.network().octets()));
                    self.spoof_src_v4
                        .insert(&key, 0, 0)
                        .map_err(map_err(names::SPOOF_SRC_V4, what()))?;
                }
                IpNet::V6(p) => {
                    let key = Key::new(len, spoof_data_v6(ifindex, p.network().octets()));
                    self.spoof_src_v6
                        .insert(&key, 0, 0)
                        .map_err(map_err(names::SPOOF_SRC_V6, what()))?;
                }
            }
        }
        for (&ifindex, &customer_id) in &want.ports {
            self.spoof_ports
                .insert(ifindex, customer_id, 0)
                .map_err(map_err(
                    names::SPOOF_PORTS,
                    format!("insert ifindex {ifindex} customer {customer_id}"),
                ))?;
        }
        Ok(())
    }

    /// Removes what the maps hold beyond `want`. Call after the flags of ports
    /// that lost anti-spoofing are cleared.
    pub fn prune_spoof(&mut self, want: &SpoofTables) -> Result<(), String> {
        let stale: Vec<Key<[u8; 8]>> = self
            .spoof_src_v4
            .keys()
            .flatten()
            .filter(|k| !want.prefixes.contains(&spoof_entry_v4(k)))
            .collect();
        for key in stale {
            if let Err(e) = self.spoof_src_v4.remove(&key) {
                if !is_missing(&e) {
                    let (ifindex, prefix) = spoof_entry_v4(&key);
                    return Err(format!(
                        "map {}: remove ifindex {ifindex} prefix {prefix}: {e}",
                        names::SPOOF_SRC_V4
                    ));
                }
            }
        }
        let stale: Vec<Key<[u8; 20]>> = self
            .spoof_src_v6
            .keys()
            .flatten()
            .filter(|k| !want.prefixes.contains(&spoof_entry_v6(k)))
            .collect();
        for key in stale {
            if let Err(e) = self.spoof_src_v6.remove(&key) {
                if !is_missing(&e) {
                    let (ifindex, prefix) = spoof_entry_v6(&key);
                    return Err(format!(
                        "map {}: remove ifindex {ifindex} prefix {prefix}: {e}",
                        names::SPOOF_SRC_V6
                    ));
                }
            }
        }
        let stale: Vec<u32> = self
            .spoof_ports
            .keys()
            .flatten()
            .filter(|k| !want.ports.contains_key(k))
            .collect();
        for ifindex in stale {
            match self.spoof_ports.remove(&ifindex) {
                Err(e) if !is_missing(&e) => {
                    return Err(format!(
                        "map {}: remove ifindex {ifindex}: {e}",
                        names::SPOOF_PORTS
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sets customer `customer_id`'s policer (both directions) to
    /// `(rate_bps, burst_bytes)`, or removes it with `None`. An unchanged
    /// policer is left alone, keeping its bucket state.
    pub fn set_policer(
        &mut self,
        customer_id: u32,
        rate_and_burst: Option<(u64, u64)>,
    ) -> Result<(), String> {
        if customer_id == 0 || customer_id >= MAX_CUSTOMERS {
            return Err(format!(
                "customer id {customer_id}: must be between 1 and {}",
                MAX_CUSTOMERS - 1
            ));
        }
        let want = match rate_and_burst {
            Some((rate_bps, burst_bytes)) => policer(rate_bps, burst_bytes)?,
            None => PopPolicer::default(),
        };
        for direction in [Direction::In, Direction::Out] {
            let index = policer_index(customer_id, direction);
            let have = self
                .policers
                .get(&index, 0)
                .map_err(map_err(names::POLICERS, format!("get {index}")))?;
            if !police::same_config(&have, &want) {
                self.policers
                    .set(index, want, 0)
                    .map_err(map_err(names::POLICERS, format!("set {index}")))?;
            }
        }
        Ok(())
    }
}

/// The data of a `spoof_src_v4` key (`struct pop_spoof_v4_key` after its
/// prefixlen): the ifindex big-endian, then the address.
fn spoof_data_v4(ifindex: u32, addr: [u8; 4]) -> [u8; 8] {
    let mut data = [0; 8];
    data[..4].copy_from_slice(&ifindex.to_be_bytes());
    data[4..].copy_from_slice(&addr);
    data
}

/// The data of a `spoof_src_v6` key, like [`spoof_data_v4`].
fn spoof_data_v6(ifindex: u32, addr: [u8; 16]) -> [u8; 20] {
    let mut data = [0; 20];
    data[..4].copy_from_slice(&ifindex.to_be_bytes());
    data[4..].copy_from_slice(&addr);
    data
}

/// The (ifindex, prefix) a `spoof_src_v4` key stands for.
fn spoof_entry_v4(key: &Key<[u8; 8]>) -> (u32, IpNet) {
    let data = key.data();
    let ifindex = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let addr: [u8; 4] = [data[4], data[5], data[6], data[7]];
    let len = key.prefix_len().saturating_sub(32).min(32) as u8;
    let net = ipnet::Ipv4Net::new(addr.into(), len).expect("length <= 32");
    (ifindex, IpNet::V4(net.trunc()))
}

/// The (ifindex, prefix) a `spoof_src_v6` key stands for.
fn spoof_entry_v6(key: &Key<[u8; 20]>) -> (u32, IpNet) {
    let data = key.data();
    let ifindex = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&data[4..]);
    let len = key.prefix_len().saturating_sub(32).min(128) as u8;
    let net = ipnet::Ipv6Net::new(addr.into(), len).expect("length <= 128");
    (ifindex, IpNet::V6(net.trunc()))
}
