//! The source addresses of the ICMP errors the data plane sends itself (Time
//! Exceeded, Fragmentation Needed, Packet Too Big), chosen here per interface
//! and written into its `ifaces` entry, so the data plane reads them with the
//! interface it already looked up.
//!
//! Per address family, the first that exists of:
//! 1. an address of the interface the packet came in on (RFC 1812 4.3.2.4);
//! 2. for a VLAN device, an address of the port it sits on;
//! 3. an address of another pop interface, in `[[interfaces]]` order;
//! 4. an address of any other interface of the host, lowest ifindex first
//!    (so a router's loopback address, on `lo`, comes first).
//!
//! Only addresses that can reach other hosts count: global scope, not
//! tentative, not loopback, link-local, multicast or unspecified. With none
//! at all, the interface has no source and the data plane hands such packets
//! to the kernel, as it did before it answered them itself.
use std::net::IpAddr;

use crate::config::model::Config;
use crate::netlink::KernelView;

/// Whether `a` can be the source of an ICMP error to another host.
fn usable(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unicast_link_local()
                || a.is_unspecified()
                || a.is_multicast())
        }
    }
}

/// The ICMP sources of the interface `ifindex` (a port, or a VLAN device on
/// port `lower`): IPv4 and IPv6 in network order, zero where there is none.
pub fn sources(
    ifindex: u32,
    lower: Option<u32>,
    cfg: &Config,
    kernel: &KernelView,
) -> ([u8; 4], [u8; 16]) {
    // Interfaces in the order they are tried.
    let mut order: Vec<u32> = vec![ifindex];
    order.extend(lower);
    order.extend(
        cfg.interfaces
            .iter()
            .filter_map(|i| kernel.links.get(&i.name).map(|l| l.ifindex)),
    );
    let mut rest: Vec<u32> = kernel.link_addrs.keys().copied().collect();
    rest.sort_unstable();
    order.extend(rest);
    let first = |v4: bool| {
        order.iter().find_map(|i| {
            kernel
                .link_addrs
                .get(i)?
                .iter()
                .find(|a| a.is_ipv4() == v4 && usable(a))
                .copied()
        })
    };
    let v4 = match first(true) {
        Some(IpAddr::V4(a)) => a.octets(),
        _ => [0; 4],
    };
    let v6 = match first(false) {
        Some(IpAddr::V6(a)) => a.octets(),
        _ => [0; 16],
    };
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Interface, InterfaceRole};
    use crate::netlink::Link;

    fn kernel(addrs: &[(u32, &str)]) -> KernelView {
        let mut k = KernelView::default();
        for (name, ifindex) in [("lo", 1), ("eth0", 2), ("eth1", 3), ("eth1.100", 7)] {
            k.links.insert(
                name.into(),
                Link {
                    ifindex,
                    ..Link::default()
                },
            );
        }
        for (i, a) in addrs {
            k.link_addrs.entry(*i).or_default().push(a.parse().unwrap());
        }
        k
    }

    fn cfg() -> Config {
        let iface = |name: &str, role| Interface {
            name: name.into(),
            role,
        };
        Config {
            interfaces: vec![
                iface("eth0", InterfaceRole::Upstream),
                iface("eth1", InterfaceRole::Customer),
            ],
            ..Config::default()
        }
    }

    fn v4(s: &str) -> [u8; 4] {
        s.parse::<std::net::Ipv4Addr>().unwrap().octets()
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn the_receiving_interface_first() {
        let k = kernel(&[
            (1, "192.0.2.255"),
            (2, "203.0.113.2"),
            (3, "fe80::1"),
            (3, "198.51.100.1"),
            (3, "2001:db8:a::1"),
        ]);
        assert_eq!(
            sources(3, None, &cfg(), &k),
            (v4("198.51.100.1"), v6("2001:db8:a::1"))
        );
        // eth0 has no IPv6: the next pop interface's; link-local never.
        assert_eq!(
            sources(2, None, &cfg(), &k),
            (v4("203.0.113.2"), v6("2001:db8:a::1"))
        );
    }

    #[test]
    fn fallbacks_in_order() {
        // A VLAN device without addresses: its port's.
        let k = kernel(&[(3, "198.51.100.1"), (2, "203.0.113.2")]);
        assert_eq!(sources(7, Some(3), &cfg(), &k).0, v4("198.51.100.1"));
        // Its port without either: the first pop interface's.
        let k = kernel(&[(2, "203.0.113.2"), (1, "192.0.2.255")]);
        assert_eq!(sources(7, Some(3), &cfg(), &k).0, v4("203.0.113.2"));
        // No pop interface has one: the host's, loopback's global first.
        let k = kernel(&[(9, "100.64.0.1"), (1, "127.0.0.1"), (1, "192.0.2.255")]);
        assert_eq!(sources(3, None, &cfg(), &k).0, v4("192.0.2.255"));
        // Nothing usable: none.
        let k = kernel(&[(1, "127.0.0.1"), (3, "169.254.0.1"), (3, "fe80::1")]);
        assert_eq!(sources(3, None, &cfg(), &k), ([0; 4], [0; 16]));
    }
}
