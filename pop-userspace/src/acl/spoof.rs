//! Anti-spoofing tables (step 4 of the packet path) from the customers of a config.
//!
//! A port where a customer with `anti_spoofing = true` attaches gets
//! [`IFACE_ANTI_SPOOFING`](pop_common::IFACE_ANTI_SPOOFING) in its
//! `PopIface::flags`; there, a packet passes only when its source lies in a
//! prefix of a customer attached at that port (any customer there, with or
//! without anti-spoofing: several customers can share a port on different
//! VLANs). The data plane answers that with one LPM lookup of (port, source)
//! in `spoof_src_v4` / `spoof_src_v6`, which hold one entry per (anti-spoofing
//! port, prefix of a customer attached there). The source's most specific
//! customer plays no part: a customer may sub-allocate a block of its prefix
//! to another customer attached elsewhere and still source it.

use crate::config::validate::ValidCustomer;

pub use crate::dataplane::acl::SpoofTables;

/// The anti-spoofing tables for `customers`. Customers or interfaces without
/// an id / ifindex (not yet known to the kernel) are left out.
pub fn spoof_tables(
    customers: &[ValidCustomer],
    customer_id_of: &dyn Fn(&str) -> Option<u32>,
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
) -> SpoofTables {
    let mut tables = SpoofTables::default();
    // (ifindex, customer) of every attachment, in config order.
    let mut attached: Vec<(u32, &ValidCustomer)> = vec![];
    for customer in customers {
        let Some(id) = customer_id_of(&customer.name) else {
            continue;
        };
        for iface in &customer.interfaces {
            let Some(ifindex) = ifindex_of(iface) else {
                continue;
            };
            attached.push((ifindex, customer));
            if customer.anti_spoofing {
                tables.ports.entry(ifindex).or_insert(id);
            }
        }
    }
    for (ifindex, customer) in attached {
        if tables.ports.contains_key(&ifindex) {
            for prefix in &customer.prefixes {
                tables.prefixes.insert((ifindex, prefix.trunc()));
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::parse_prefix;

    fn customer(name: &str, prefix: &str, ifaces: &[&str], anti_spoofing: bool) -> ValidCustomer {
        ValidCustomer {
            name: name.into(),
            prefixes: vec![parse_prefix(prefix).unwrap()],
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
            customer("a", "192.0.2.0/24", &["eth1"], true),
            customer("b", "198.51.100.0/24", &["eth1", "eth2"], false),
            customer("c", "203.0.113.0/24", &["gone0"], true),
        ];
        let ids = |n: &str| Some(n.as_bytes()[0] as u32);
        let ifindex = |n: &str| match n {
            "eth1" => Some(11),
            "eth2" => Some(12),
            _ => None,
        };
        let t = spoof_tables(&customers, &ids, &ifindex);
        assert_eq!(
            t.ports.clone().into_iter().collect::<Vec<_>>(),
            vec![(11, 'a' as u32)]
        );
        // eth1 holds a's and b's prefixes; b's port eth2 is not protected.
        let prefixes: Vec<_> = t
            .prefixes
            .iter()
            .map(|(i, p)| (*i, p.to_string()))
            .collect();
        assert_eq!(
            prefixes,
            vec![
                (11, "192.0.2.0/24".to_string()),
                (11, "198.51.100.0/24".to_string())
            ]
        );
        assert_eq!((t.count_v4(), t.count_v6()), (2, 0));
    }
}
