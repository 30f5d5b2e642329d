//! Typed handles on every pinned map, opened from their pins so that a fresh
//! load and an adoption take the same path.
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray};
use pop_common::{
    maps as names, Action, Direction, PopConfig, PopCounter, PopCustomerCounters, PopCustomerRef,
    PopIface, PopIfaceCounters, PopLocalV6, PopNexthop, PopRoute,
};

use super::DataplaneError;

/// Every map of the data plane.
pub struct Maps {
    /// Global settings.
    pub config: Array<MapData, PopConfig>,
    /// ifindex → interface.
    pub ifaces: HashMap<MapData, u32, PopIface>,
    /// The records of `ifaces` whose ifindex is below
    /// [`pop_common::IFACES_BY_INDEX`], per CPU, found by index
    /// ([`super::ifaces`]); `None` in maps pinned by a build without it.
    pub ifaces_by_index: Option<PerCpuArray<MapData, PopIface>>,
    /// Egress ports.
    pub tx_ports: DevMapHash<MapData>,
    /// IPv4 routes by prefix: the list popd reads back after a restart
    /// (the data plane looks IPv4 routes up in [`Maps::routes4`]).
    pub routes_v4: LpmTrie<MapData, [u8; 4], PopRoute>,
    /// IPv4 routes as the data plane looks them up: fib4 and route records.
    pub routes4: super::route4::Routes4,
    /// IPv6 routes by prefix: the list popd reads back after a restart
    /// (the data plane looks IPv6 routes up in [`Maps::routes6`]).
    pub routes_v6: LpmTrie<MapData, [u8; 16], PopRoute>,
    /// IPv6 routes as the data plane looks them up: fib6 and route records.
    pub routes6: super::route6::Routes6,
    /// Next hops by id.
    pub nexthops: Array<MapData, PopNexthop>,
    /// IPv4 customer prefixes: the list popd reads back after a restart
    /// (the data plane finds IPv4 customers in fib4, [`Maps::routes4`]).
    pub cust_v4: LpmTrie<MapData, [u8; 4], PopCustomerRef>,
    /// IPv6 customer prefixes: the list popd reads back after a restart
    /// (the data plane finds IPv6 customers in fib6, [`Maps::routes6`]).
    pub cust_v6: LpmTrie<MapData, [u8; 16], PopCustomerRef>,
    /// IPv4 customer prefixes, copy 1: no longer written or read (IPv4
    /// customers are in fib4); kept so the pinned layout stays the same.
    pub cust_v4_1: LpmTrie<MapData, [u8; 4], PopCustomerRef>,
    /// IPv6 customer prefixes, copy 1: no longer written or read (IPv6
    /// customers are in fib6), except once after a restart of an older
    /// popd's maps ([`super::addr6`]); kept so the pinned layout stays the same.
    pub cust_v6_1: LpmTrie<MapData, [u8; 16], PopCustomerRef>,
    /// This host's IPv4 addresses (network order) → kind
    /// ([`super::addr4::LOCAL_HOST`], [`super::addr4::LOCAL_BROADCAST`]): the
    /// list popd reads back (the data plane finds them in fib4).
    pub local_v4: HashMap<MapData, u32, u32>,
    /// This host's IPv6 addresses: the list popd reads back (the data plane
    /// finds them in fib6).
    pub local_v6: HashMap<MapData, PopLocalV6, u32>,
    /// Per interface slot: actions, drop and pass reasons.
    pub iface_counters: PerCpuArray<MapData, PopIfaceCounters>,
    /// Per customer id: forwarded packets by direction, drops by reason.
    pub customer_counters: PerCpuArray<MapData, PopCustomerCounters>,
    /// (XDP port, VLAN id) → ifindex of the VLAN device.
    pub vlan_ifaces: HashMap<MapData, pop_common::PopVlanKey, u32>,
    /// The trace program's record, per CPU.
    pub trace_out: PerCpuArray<MapData, pop_common::PopTrace>,
    /// ICMP errors sent, per [`pop_common::IcmpType`].
    pub icmp_stats: PerCpuArray<MapData, PopCounter>,
    /// The ICMP error rate limit's token bucket, per CPU.
    pub icmp_bucket: PerCpuArray<MapData, pop_common::PopIcmpBucket>,
    /// (interface, MAC of a macvlan/macvtap device on it) → that device's ifindex.
    pub upper_macs: HashMap<MapData, pop_common::PopUpperMacKey, u32>,
    /// The ACL, anti-spoofing and policer maps.
    pub acl: super::acl::AclMaps,
}

pub(super) fn open(dir: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| DataplaneError::Map {
        map: name,
        reason: format!("opening pin {}: {e}", path.display()),
    })?;
    Map::from_map_data(data).map_err(|e| DataplaneError::Map {
        map: name,
        reason: e.to_string(),
    })
}

macro_rules! typed {
    ($dir:expr, $name:expr) => {{
        let map = open($dir, $name)?;
        map.try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                map: $name,
                reason: e.to_string(),
            })?
    }};
}

/// Whether a map call failed only because the key was not there (a lookup's
/// `KeyNotFound`, a delete's ENOENT).
pub fn is_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Logs an undo that failed: `fib` (fib4, fib6) could not be put back after
/// the list beside it refused `what`.
pub fn undo_fib<E: std::fmt::Display>(fib: &str, what: &str, r: Result<impl Sized, E>) {
    if let Err(e) = r {
        tracing::error!("{what}: undoing the {fib} change failed: {e}");
    }
}

/// A removal of a key that is already gone succeeds.
pub fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(ref e) if is_missing(e) => Ok(()),
        other => other,
    }
}

/// Maps an aya error to ours.
pub fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        map,
        reason: super::error_chain(&e),
    }
}

impl Maps {
    /// Opens every map pinned in `dir`: maps a program load just created
    /// (`fresh`: all empty), or maps that were in use (adopted).
    pub fn open(dir: &Path, fresh: bool) -> Result<Self, DataplaneError> {
        let routes_v4: LpmTrie<MapData, [u8; 4], PopRoute> = typed!(dir, names::ROUTES_V4);
        let cust_v4: LpmTrie<MapData, [u8; 4], PopCustomerRef> = typed!(dir, names::CUST_V4);
        let local_v4: HashMap<MapData, u32, u32> = typed!(dir, names::LOCAL_V4);
        let routes4 = if fresh {
            super::route4::Routes4::open_new(dir)?
        } else {
            // The fib4 tables hold what routes_v4, cust_v4 and local_v4
            // list: adopt them, and write only what differs (nothing, unless
            // popd stopped mid-change).
            let pinned = routes_v4.iter().flatten().filter_map(|(k, v)| {
                let p = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8).ok()?;
                Some((p, v))
            });
            let others = super::addr4::Pinned4::read(&cust_v4, &local_v4);
            super::route4::Routes4::open(dir, pinned, others)?
        };
        let routes_v6: LpmTrie<MapData, [u8; 16], PopRoute> = typed!(dir, names::ROUTES_V6);
        let routes6 = if fresh {
            super::route6::Routes6::open_new(dir)?
        } else {
            // The same for IPv6: the fib6 trie holds what routes_v6 lists.
            let pinned = routes_v6.iter().flatten().filter_map(|(k, v)| {
                let p = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8).ok()?;
                Some((p, v))
            });
            // The customer list: cust_v6, or cust_v6_1 if a popd of the
            // double-buffered customer tables left copy 1 live.
            let config: Array<MapData, PopConfig> = typed!(dir, names::CONFIG);
            let copy1 = config.get(&0, 0).is_ok_and(|c| c.cust_copy & 1 == 1);
            let cust: LpmTrie<MapData, [u8; 16], PopCustomerRef> = if copy1 {
                typed!(dir, names::CUST_V6_1)
            } else {
                typed!(dir, names::CUST_V6)
            };
            let local_v6: HashMap<MapData, PopLocalV6, u32> = typed!(dir, names::LOCAL_V6);
            let others = super::addr6::Pinned6::read(&cust, &local_v6);
            super::route6::Routes6::open(dir, pinned, others)?
        };
        let mut maps = Self {
            routes4,
            routes6,
            config: typed!(dir, names::CONFIG),
            ifaces: typed!(dir, names::IFACES),
            ifaces_by_index: if dir.join(names::IFACES_BY_INDEX).exists() {
                Some(typed!(dir, names::IFACES_BY_INDEX))
            } else {
                None
            },
            tx_ports: typed!(dir, names::TX_PORTS),
            routes_v4,
            routes_v6,
            nexthops: typed!(dir, names::NEXTHOPS),
            cust_v4,
            cust_v6: typed!(dir, names::CUST_V6),
            cust_v4_1: typed!(dir, names::CUST_V4_1),
            cust_v6_1: typed!(dir, names::CUST_V6_1),
            local_v4,
            local_v6: typed!(dir, names::LOCAL_V6),
            iface_counters: typed!(dir, names::IFACE_COUNTERS),
            customer_counters: typed!(dir, names::CUSTOMER_COUNTERS),
            trace_out: typed!(dir, names::TRACE_OUT),
            vlan_ifaces: typed!(dir, names::VLAN_IFACES),
            icmp_stats: typed!(dir, names::ICMP_STATS),
            icmp_bucket: typed!(dir, names::ICMP_BUCKET),
            upper_macs: typed!(dir, names::UPPER_MACS),
            acl: super::acl::AclMaps::open(dir)?,
        };
        if !fresh {
            // Maps in use: make the array say what the hash says.
            maps.sync_ifaces_by_index()?;
        }
        Ok(maps)
    }

    /// Adds the counters pinned in `old_dir` (a data plane of another build,
    /// no longer running) to these, per CPU, so an upgrade does not reset what
    /// Prometheus has counted; from the layout before the per-interface and
    /// per-customer records too (see [`super::counters`]).
    pub fn add_counters_from(&mut self, old_dir: &Path) {
        super::counters::carry_over(self, old_dir);
    }

    fn sum(map: &PerCpuArray<MapData, PopCounter>, index: u32) -> PopCounter {
        map.get(&index, 0)
            .map(|v| PopCounter::sum(v.iter()))
            .unwrap_or_default()
    }

    /// One interface slot's record, summed over CPUs.
    pub fn iface_record(&self, slot: u32) -> PopIfaceCounters {
        super::counters::iface_record(&self.iface_counters, slot)
    }

    /// Interface counters for one action, summed over CPUs.
    pub fn iface_counter(&self, slot: u32, action: Action) -> PopCounter {
        self.iface_record(slot).action[action as usize]
    }

    /// Every interface record summed: its `drop` and `pass` are the global
    /// counters by reason.
    pub fn reason_totals(&self) -> PopIfaceCounters {
        super::counters::reason_totals(&self.iface_counters)
    }

    /// ICMP errors sent of one kind (packets, bytes of the errors).
    pub fn icmp_counter(&self, kind: pop_common::IcmpType) -> PopCounter {
        Self::sum(&self.icmp_stats, kind as u32)
    }

    /// A customer's record, summed over CPUs.
    pub fn customer_record(&self, id: u32) -> PopCustomerCounters {
        self.customer_counters
            .get(&id, 0)
            .map(|v| PopCustomerCounters::sum(v.iter()))
            .unwrap_or_default()
    }

    /// Customer traffic counter.
    pub fn customer_counter(&self, id: u32, dir: Direction) -> PopCounter {
        self.customer_record(id).dir[dir as usize]
    }

    /// Fills every CPU's ICMP error bucket (a zero `last_ns` reads as a long
    /// quiet period): a new `[icmp]` limit starts with its whole burst, not
    /// with credit counted at the old rate.
    pub fn fill_icmp_buckets(&mut self) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: names::ICMP_BUCKET,
            reason: e.to_string(),
        })?;
        let full =
            aya::maps::PerCpuValues::try_from(vec![pop_common::PopIcmpBucket::default(); cpus])
                .expect("nr_cpus values");
        self.icmp_bucket
            .set(0, full, 0)
            .map_err(map_err(names::ICMP_BUCKET))
    }

    /// Zeroes a customer's counters (a new customer must not inherit old counts).
    pub fn reset_customer(&mut self, id: u32) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: names::CUSTOMER_COUNTERS,
            reason: e.to_string(),
        })?;
        let zero = aya::maps::PerCpuValues::try_from(vec![PopCustomerCounters::default(); cpus])
            .expect("nr_cpus values");
        self.customer_counters
            .set(id, zero, 0)
            .map_err(map_err(names::CUSTOMER_COUNTERS))
    }
}

/// LPM key for an IPv4 prefix.
pub fn key_v4(net: &ipnet::Ipv4Net) -> Key<[u8; 4]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// LPM key for an IPv6 prefix.
pub fn key_v6(net: &ipnet::Ipv6Net) -> Key<[u8; 16]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}
