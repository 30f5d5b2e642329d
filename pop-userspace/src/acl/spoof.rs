//! Anti-spoofing tables (step 4 of the packet path) from the customers of a config.
//!
//! A port where a customer with `anti_spoofing = true` attaches gets
//! [`IFACE_ANTI_SPOOFING`](pop_common::IFACE_ANTI_SPOOFING) in its
//! `PopIface::flags`; there, a packet passes only when its source belongs to a
//! customer attached at that port (any customer there, with or without
//! anti-spoofing: several customers can share a port on different VLANs).
use std::collections::{BTreeMap, BTreeSet};

use crate::config::validate::ValidCustomer;

/// What the maps `spoof_ports` and `spoof_allow` should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoofTables {
    /// ifindex of every anti-spoofing port → the customer id its spoofed
    /// packets are counted against (the first anti-spoofing customer there).
    pub ports: BTreeMap<u32, u32>,
    /// (customer id, ifindex): the customer attaches at that port, so its
    /// prefixes may source traffic there.
    pub allow: BTreeSet<(u32, u32)>,
}

impl SpoofTables {
    /// Whether `ifindex` needs `IFACE_ANTI_SPOOFING` in its `PopIface::flags`.
    pub fn is_anti_spoofing_port(&self, ifindex: u32) -> bool {
        self.ports.contains_key(&ifindex)
    }
}

/// The anti-spoofing tables for `customers`. Customers or interfaces without
/// an id / ifindex (not yet known to the kernel) are left out.
pub fn spoof_tables(
    customers: &[ValidCustomer],
    customer_id_of: &dyn Fn(&str) -> Option<u32>,
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
) -> SpoofTables {
    let mut tables = SpoofTables::default();
    for customer in customers {
        let Some(id) = customer_id_of(&customer.name) else {
            continue;
        };
        for iface in &customer.interfaces {
            let Some(ifindex) = ifindex_of(iface) else {
                continue;
            };
            tables.allow.insert((id, ifindex));
            if customer.anti_spoofing {
                tables.ports.entry(ifindex).or_insert(id);
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::parse_prefix;

    fn customer(name: &str, ifaces: &[&str], anti_spoofing: bool) -> ValidCustomer {
        ValidCustomer {
            name: name.into(),
            prefixes: vec![parse_prefix("192.0.2.0/24").unwrap()],
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            vlan: None,
            anti_spoofing,
            rate_bps: None,
            burst_bytes: None,
        }
    }

    #[test]
    fn every_customer_on_a_protected_port_may_send() {
        let customers = [
            customer("a", &["eth1"], true),
            customer("b", &["eth1", "eth2"], false),
            customer("c", &["gone0"], true),
        ];
        let ids = |n: &str| Some(n.as_bytes()[0] as u32);
        let ifindex = |n: &str| match n {
            "eth1" => Some(11),
            "eth2" => Some(12),
            _ => None,
        };
        let t = spoof_tables(&customers, &ids, &ifindex);
        assert_eq!(
            t.ports.into_iter().collect::<Vec<_>>(),
            vec![(11, 'a' as u32)]
        );
        let allow: Vec<_> = t.allow.into_iter().collect();
        assert_eq!(
            allow,
            vec![('a' as u32, 11), ('b' as u32, 11), ('b' as u32, 12)]
        );
    }
}
