//! The lab's fixed topology: namespaces, links, addresses, routes and the customers,
//! plus the popd config files built from them. Every name and address here is part
//! of the documented lab (docs/operations.md); popd configs and tests rely on them.

/// The upstream transit (the "internet").
pub const UP: &str = "up";
/// The edge host that runs popd.
pub const EDGE: &str = "edge";
/// Customer 1 (acme).
pub const C1: &str = "c1";
/// Customer 2 (globex).
pub const C2: &str = "c2";
/// Every node, in the order they are created.
pub const NODES: [&str; 4] = [UP, EDGE, C1, C2];

/// The "internet" IPv4 address on the upstream's loopback.
pub const INTERNET_V4: &str = "100.64.0.1";
/// The "internet" IPv6 address on the upstream's loopback.
pub const INTERNET_V6: &str = "2001:db8:ffff:1::1";
/// Customer 1's IPv4 address.
pub const C1_V4: &str = "198.51.100.10";
/// Customer 1's IPv6 address.
pub const C1_V6: &str = "2001:db8:a::10";
/// Customer 2's IPv4 address.
pub const C2_V4: &str = "203.0.113.10";
/// Customer 2's IPv6 address.
pub const C2_V6: &str = "2001:db8:b::10";

/// Where popd's metrics listener binds, inside the edge namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9469";

/// One veth pair: `(node, interface)` at each end, and the addresses of each end.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Node and interface name of the first end.
    pub a: (&'static str, &'static str),
    /// Node and interface name of the second end.
    pub b: (&'static str, &'static str),
    /// Addresses (with prefix length) of the first end.
    pub a_addrs: [&'static str; 2],
    /// Addresses (with prefix length) of the second end.
    pub b_addrs: [&'static str; 2],
}

/// The three links: edge eth0 ↔ up eth0, edge eth1 ↔ c1 eth0, edge eth2 ↔ c2 eth0.
pub const LINKS: [Link; 3] = [
    Link {
        a: (EDGE, "eth0"),
        b: (UP, "eth0"),
        a_addrs: ["192.0.2.2/24", "2001:db8:ffff::2/64"],
        b_addrs: ["192.0.2.1/24", "2001:db8:ffff::1/64"],
    },
    Link {
        a: (EDGE, "eth1"),
        b: (C1, "eth0"),
        a_addrs: ["198.51.100.1/24", "2001:db8:a::1/64"],
        b_addrs: ["198.51.100.10/24", "2001:db8:a::10/64"],
    },
    Link {
        a: (EDGE, "eth2"),
        b: (C2, "eth0"),
        a_addrs: ["203.0.113.1/24", "2001:db8:b::1/64"],
        b_addrs: ["203.0.113.10/24", "2001:db8:b::10/64"],
    },
];

/// Addresses on the upstream's loopback.
pub const UP_LOOPBACK: [&str; 2] = ["100.64.0.1/32", "2001:db8:ffff:1::1/128"];

/// Kernel routes in the non-edge namespaces: `(node, prefix, via)`.
pub const KERNEL_ROUTES: [(&str, &str, &str); 8] = [
    (C1, "default", "198.51.100.1"),
    (C1, "default", "2001:db8:a::1"),
    (C2, "default", "203.0.113.1"),
    (C2, "default", "2001:db8:b::1"),
    (UP, "198.51.100.0/24", "192.0.2.2"),
    (UP, "203.0.113.0/24", "192.0.2.2"),
    (UP, "2001:db8:a::/48", "2001:db8:ffff::2"),
    (UP, "2001:db8:b::/48", "2001:db8:ffff::2"),
];

/// The edge's interfaces as popd sees them: `(name, role)`.
pub const EDGE_INTERFACES: [(&str, &str); 3] = [
    ("eth0", "upstream"),
    ("eth1", "customer"),
    ("eth2", "customer"),
];

/// A route popd forwards with: `popctl route add PREFIX via VIA dev DEV`.
#[derive(Clone, Copy, Debug)]
pub struct PopRoute {
    /// Destination prefix.
    pub prefix: &'static str,
    /// Next hop.
    pub via: &'static str,
    /// Egress interface on the edge.
    pub dev: &'static str,
}

/// popd's routes in the lab.
pub const POP_ROUTES: [PopRoute; 6] = [
    PopRoute {
        prefix: "0.0.0.0/0",
        via: "192.0.2.1",
        dev: "eth0",
    },
    PopRoute {
        prefix: "::/0",
        via: "2001:db8:ffff::1",
        dev: "eth0",
    },
    PopRoute {
        prefix: "198.51.100.0/24",
        via: "198.51.100.10",
        dev: "eth1",
    },
    PopRoute {
        prefix: "2001:db8:a::/48",
        via: "2001:db8:a::10",
        dev: "eth1",
    },
    PopRoute {
        prefix: "203.0.113.0/24",
        via: "203.0.113.10",
        dev: "eth2",
    },
    PopRoute {
        prefix: "2001:db8:b::/48",
        via: "2001:db8:b::10",
        dev: "eth2",
    },
];

/// A customer in the lab: `popctl customer add NAME --prefix .. --iface ..`.
#[derive(Clone, Copy, Debug)]
pub struct PopCustomer {
    /// Customer name.
    pub name: &'static str,
    /// Its IPv4 and IPv6 prefixes.
    pub prefixes: [&'static str; 2],
    /// The edge port it attaches to.
    pub iface: &'static str,
    /// The node (namespace) that plays this customer.
    pub node: &'static str,
}

/// The two customers.
pub const POP_CUSTOMERS: [PopCustomer; 2] = [
    PopCustomer {
        name: "acme",
        prefixes: ["198.51.100.0/24", "2001:db8:a::/48"],
        iface: "eth1",
        node: C1,
    },
    PopCustomer {
        name: "globex",
        prefixes: ["203.0.113.0/24", "2001:db8:b::/48"],
        iface: "eth2",
        node: C2,
    },
];

impl PopRoute {
    /// The popctl arguments that add this route.
    pub fn popctl_add(&self) -> Vec<String> {
        [
            "route",
            "add",
            self.prefix,
            "via",
            self.via,
            "dev",
            self.dev,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl PopCustomer {
    /// The popctl arguments that add this customer.
    pub fn popctl_add(&self) -> Vec<String> {
        let mut args = vec![
            "customer".to_string(),
            "add".to_string(),
            self.name.to_string(),
        ];
        for prefix in self.prefixes {
            args.push("--prefix".to_string());
            args.push(prefix.to_string());
        }
        args.push("--iface".to_string());
        args.push(self.iface.to_string());
        args
    }
}

/// popd's config with only `[dataplane]` and the interfaces: routes and customers
/// are then pushed with popctl (what the demo does).
pub fn base_config() -> String {
    let mut out = String::from("[dataplane]\nxdp_mode = \"auto\"\nno_route = \"pass\"\n");
    for (name, role) in EDGE_INTERFACES {
        out.push_str(&format!(
            "\n[[interfaces]]\nname = \"{name}\"\nrole = \"{role}\"\n"
        ));
    }
    out
}

/// popd's full lab config: interfaces, customers and routes.
pub fn full_config() -> String {
    let mut out = base_config();
    for c in POP_CUSTOMERS {
        out.push_str(&format!(
            "\n[[customers]]\nname = \"{}\"\nprefixes = [\"{}\", \"{}\"]\ninterfaces = [\"{}\"]\n",
            c.name, c.prefixes[0], c.prefixes[1], c.iface
        ));
    }
    for r in POP_ROUTES {
        out.push_str(&format!(
            "\n[[routes]]\nprefix = \"{}\"\nvia = [\"{}\"]\ndev = \"{}\"\n",
            r.prefix, r.via, r.dev
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_lists_every_route_and_customer() {
        let text = full_config();
        for r in POP_ROUTES {
            assert!(
                text.contains(&format!("prefix = \"{}\"", r.prefix)),
                "{text}"
            );
        }
        for c in POP_CUSTOMERS {
            assert!(text.contains(&format!("name = \"{}\"", c.name)), "{text}");
        }
        assert_eq!(text.matches("[[interfaces]]").count(), 3);
    }

    #[test]
    fn popctl_arguments_follow_the_reference_grammar() {
        assert_eq!(
            POP_ROUTES[0].popctl_add().join(" "),
            "route add 0.0.0.0/0 via 192.0.2.1 dev eth0"
        );
        assert_eq!(
            POP_CUSTOMERS[0].popctl_add().join(" "),
            "customer add acme --prefix 198.51.100.0/24 --prefix 2001:db8:a::/48 --iface eth1"
        );
    }
}
