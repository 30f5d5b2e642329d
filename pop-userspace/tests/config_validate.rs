//! Config parsing and validation (docs/reference.md): every rule accepted and rejected,
//! with the exact one-line message a user sees from `popctl apply` or popd.
use std::net::IpAddr;
use std::time::Instant;

use pop::config::model::{
    Acl, AclAction, Config, Customer, Interface, InterfaceRole, NoRouteAction, Route,
};
use pop::config::validate::{
    default_burst_bytes, parse_config, parse_config_routes, to_toml, validate, validate_with,
    ConfigError, Validated,
};

const EXAMPLE: &str = r#"
[dataplane]
xdp_mode = "auto"
no_route = "pass"

[[interfaces]]
name = "eth0"
role = "upstream"

[[interfaces]]
name = "eth1"
role = "customer"

[[customers]]
name = "acme"
prefixes = ["198.51.100.0/24", "2001:db8:a::/48"]
interfaces = ["eth1"]
vlan = 100
anti_spoofing = true
rate_bps = 100000000
burst_bytes = 1250000

[[routes]]
prefix = "0.0.0.0/0"
via = ["192.0.2.1", "192.0.2.2"]
dev = "eth0"

[[acls]]
priority = 100
action = "drop"
src = "0.0.0.0/0"
dst = "198.51.100.10/32"
proto = "tcp"
dst_port = "22"
in_iface = "eth0"
"#;

fn base() -> Config {
    parse_config(EXAMPLE).expect("the reference example parses")
}

fn route(prefix: &str, via: &[&str], dev: &str) -> Route {
    Route {
        prefix: prefix.into(),
        via: via.iter().map(|s| s.to_string()).collect(),
        dev: dev.into(),
    }
}

fn customer(name: &str, prefixes: &[&str]) -> Customer {
    Customer {
        name: name.into(),
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        interfaces: vec![],
        vlan: None,
        anti_spoofing: false,
        rate_bps: None,
        burst_bytes: None,
    }
}

fn acl(priority: u32) -> Acl {
    Acl {
        priority,
        action: AclAction::Drop,
        src: None,
        dst: None,
        proto: None,
        src_port: None,
        dst_port: None,
        in_iface: None,
    }
}

fn ok(cfg: &Config) -> Validated {
    validate(cfg).unwrap_or_else(|e| panic!("should be valid: {e}"))
}

fn rejected(cfg: &Config) -> String {
    match validate(cfg) {
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "one line: {text}");
            if cfg.routes.len() < 10_000 {
                // popd reads the routes of a file straight into their table:
                // the same message.
                assert_eq!(typed(&to_toml(cfg)), Err(text.clone()));
            }
            text
        }
        Ok(_) => panic!("should be rejected"),
    }
}

/// What popd makes of a file: routes read straight into their table
/// (`parse_config_routes`), then checked with the rest.
fn typed(text: &str) -> Result<usize, String> {
    let (cfg, routes) = parse_config_routes(text).map_err(|e| e.to_string())?;
    assert!(cfg.routes.is_empty());
    let valid = validate_with(&cfg, routes).map_err(|e| e.to_string())?;
    Ok(valid.routes.len())
}

/// What a file gives parsed into records, then validated.
fn records(text: &str) -> Result<usize, String> {
    let cfg = parse_config(text).map_err(|e| e.to_string())?;
    validate(&cfg)
        .map(|v| v.routes.len())
        .map_err(|e| e.to_string())
}

fn acl_of(v: &Validated, priority: u32) -> &pop::config::validate::ValidAcl {
    v.acls
        .iter()
        .find(|a| a.priority == priority)
        .expect("rule present")
}

fn with_route(r: Route) -> Config {
    let mut cfg = base();
    cfg.routes.push(r);
    cfg
}

fn with_customer(c: Customer) -> Config {
    let mut cfg = base();
    cfg.customers.push(c);
    cfg
}

fn with_acl(a: Acl) -> Config {
    let mut cfg = base();
    cfg.acls.push(a);
    cfg
}

// ---- parsing ---------------------------------------------------------------

#[test]
fn example_parses_and_validates_to_parsed_forms() {
    let v = ok(&base());
    assert_eq!(v.dataplane.no_route, NoRouteAction::Pass);
    assert_eq!(v.interfaces[1].role, InterfaceRole::Customer);
    let (prefix, hops) = v.routes.iter().next().unwrap();
    assert_eq!(prefix, "0.0.0.0/0".parse().unwrap());
    assert_eq!(
        hops.via,
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "192.0.2.2".parse().unwrap()
        ]
    );
    assert_eq!(
        v.customers[0].prefixes[1],
        "2001:db8:a::/48".parse().unwrap()
    );
    assert_eq!(v.customers[0].burst_bytes, Some(1_250_000));
    let a = &v.acls[0];
    assert_eq!(a.proto, Some(6));
    assert_eq!(a.dst_port, Some((22, 22)));
    assert_eq!(a.dst, Some("198.51.100.10/32".parse().unwrap()));
    assert_eq!(a.in_iface.as_deref(), Some("eth0"));
}

#[test]
fn syntax_error_is_one_line_with_line_number() {
    let err = parse_config("[dataplane]\nno_route = \"pass\"\n\n[[routes]]\nprefx = \"x\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { line: 5, .. }), "{text}");
    assert!(
        text.starts_with("config line 5: unknown field `prefx`"),
        "{text}"
    );
    assert!(!text.contains('\n'));

    let err = parse_config("[dataplane]\nno_route = \"maybe\"\n").unwrap_err();
    assert!(err.to_string().starts_with("config line 2: "), "{err}");
    let err = parse_config("[[routes]\n").unwrap_err();
    assert!(err.to_string().starts_with("config line 1: "), "{err}");
}

#[test]
fn empty_file_is_an_empty_valid_config() {
    let cfg = parse_config("").unwrap();
    assert_eq!(cfg, Config::default());
    ok(&cfg);
}

#[test]
fn to_toml_round_trips() {
    let cfg = base();
    let text = to_toml(&cfg);
    assert_eq!(parse_config(&text).unwrap(), cfg, "{text}");
    assert_eq!(
        parse_config(&to_toml(&Config::default())).unwrap(),
        Config::default()
    );
}

#[test]
fn to_toml_reads_like_the_reference_example() {
    let mut cfg = base();
    cfg.customers.clear();
    let text = to_toml(&cfg);
    // Sections in the reference order, no empty arrays above them.
    assert!(
        text.starts_with("[dataplane]\nxdp_mode = \"auto\"\nno_route = \"pass\"\n"),
        "{text}"
    );
    assert!(!text.contains("customers"), "{text}");
    let order: Vec<usize> = ["[[interfaces]]", "[[routes]]", "[[acls]]"]
        .iter()
        .map(|s| text.find(s).unwrap_or_else(|| panic!("{s} in {text}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(
        to_toml(&Config::default()),
        "[dataplane]\nxdp_mode = \"auto\"\nno_route = \"pass\"\n"
    );
}

// ---- interfaces --------------------------------------------------------------

#[test]
fn interface_names_follow_the_kernel_rules() {
    let mut cfg = base();
    cfg.interfaces.push(Interface {
        name: "a-very-long-if0".into(),
        role: InterfaceRole::Customer,
    });
    ok(&cfg);
    for (name, msg) in [
        ("", r#"interface "": name "" is empty"#),
        (
            "a-very-long-if01",
            r#"interface a-very-long-if01: name "a-very-long-if01" is longer than 15 characters"#,
        ),
        ("eth/1", r#"interface eth/1: name "eth/1" contains '/'"#),
        (
            "eth 1",
            r#"interface "eth 1": name "eth 1" contains whitespace"#,
        ),
        ("..", r#"interface ..: name ".." is reserved"#),
    ] {
        let mut cfg = base();
        cfg.interfaces.push(Interface {
            name: name.into(),
            role: InterfaceRole::Customer,
        });
        assert_eq!(rejected(&cfg), msg);
    }
}

#[test]
fn duplicate_interface() {
    let mut cfg = base();
    cfg.interfaces.push(Interface {
        name: "eth0".into(),
        role: InterfaceRole::Customer,
    });
    assert_eq!(rejected(&cfg), "interface eth0: name listed twice");
}

#[test]
fn too_many_interfaces() {
    let mut cfg = Config::default();
    for i in 0..=pop_common::MAX_IFACES {
        cfg.interfaces.push(Interface {
            name: format!("veth{i}"),
            role: InterfaceRole::Upstream,
        });
    }
    assert_eq!(
        rejected(&cfg),
        "too many interfaces: 1025 exceeds the maximum of 1024"
    );
    cfg.interfaces.pop();
    ok(&cfg);
}

// ---- routes --------------------------------------------------------------------

#[test]
fn route_prefixes() {
    ok(&with_route(route("10.0.0.0/8", &["192.0.2.1"], "eth0")));
    ok(&with_route(route("2001:db8::/32", &["fe80::1"], "eth0")));
    ok(&with_route(route("192.0.2.7/32", &["192.0.2.1"], "eth0")));
    for (prefix, msg) in [
        (
            "10.0.0.0/33",
            "route 10.0.0.0/33: prefix length 33 exceeds 32",
        ),
        (
            "2001:db8::/129",
            "route 2001:db8::/129: prefix length 129 exceeds 128",
        ),
        (
            "10.1.2.3/8",
            "route 10.1.2.3/8: host bits set (did you mean 10.0.0.0/8?)",
        ),
        (
            "10.0.0/8",
            "route 10.0.0/8: not an IP prefix (expected ADDRESS/LENGTH)",
        ),
        (
            "10.0.0.1",
            r#"route 10.0.0.1: missing prefix length (write "10.0.0.1/32" for a single address)"#,
        ),
        (
            "10.0.0.0/x",
            r#"route 10.0.0.0/x: prefix length "x" is not a number"#,
        ),
    ] {
        assert_eq!(
            rejected(&with_route(route(prefix, &["192.0.2.1"], "eth0"))),
            msg
        );
    }
}

#[test]
fn route_next_hops() {
    let eight: Vec<String> = (1..=8).map(|i| format!("192.0.2.{i}")).collect();
    let eight: Vec<&str> = eight.iter().map(String::as_str).collect();
    ok(&with_route(route("10.0.0.0/8", &eight, "eth0")));
    let mut nine = eight.clone();
    nine.push("192.0.2.9");
    for (via, msg) in [
        (vec![], "route 10.0.0.0/8: no next hop (via is empty)"),
        (
            nine,
            "route 10.0.0.0/8: 9 next hops exceed the maximum of 8",
        ),
        (
            vec!["2001:db8::1"],
            r#"route 10.0.0.0/8: via "2001:db8::1": address family differs from the prefix"#,
        ),
        (
            vec!["192.0.2.1", "192.0.2.1"],
            r#"route 10.0.0.0/8: via "192.0.2.1": listed twice"#,
        ),
        (
            vec!["gateway"],
            r#"route 10.0.0.0/8: via "gateway": not an IP address"#,
        ),
        (
            vec!["224.0.0.5"],
            r#"route 10.0.0.0/8: via "224.0.0.5": not a unicast address"#,
        ),
        (
            vec!["0.0.0.0"],
            r#"route 10.0.0.0/8: via "0.0.0.0": not a unicast address"#,
        ),
    ] {
        assert_eq!(
            rejected(&with_route(route("10.0.0.0/8", &via, "eth0"))),
            msg
        );
    }
}

#[test]
fn route_dev_must_be_configured() {
    assert_eq!(
        rejected(&with_route(route("10.0.0.0/8", &["192.0.2.1"], "eth9"))),
        r#"route 10.0.0.0/8: dev "eth9" is not a configured interface"#
    );
}

#[test]
fn duplicate_route_prefix_even_when_spelled_differently() {
    let mut cfg = with_route(route("2001:db8::/32", &["2001:db8::1"], "eth0"));
    cfg.routes
        .push(route("2001:0DB8::/32", &["2001:db8::2"], "eth0"));
    assert_eq!(rejected(&cfg), "route 2001:0DB8::/32: prefix listed twice");
}

// ---- customers -------------------------------------------------------------------

#[test]
fn customer_names() {
    ok(&with_customer(customer("Beta_2.net-x", &["10.0.0.0/8"])));
    assert_eq!(
        rejected(&with_customer(customer("", &["10.0.0.0/8"]))),
        r#"customer "": name is empty"#
    );
    assert_eq!(
        rejected(&with_customer(customer("be\"ta", &["10.0.0.0/8"]))),
        r#"customer "be\"ta": name "be\"ta": only letters, digits, '_', '.' and '-' are allowed"#
    );
    assert_eq!(
        rejected(&with_customer(customer("acme", &["10.0.0.0/8"]))),
        "customer acme: name listed twice"
    );
}

#[test]
fn customer_prefixes() {
    assert_eq!(
        rejected(&with_customer(customer("beta", &[]))),
        "customer beta: needs at least one prefix"
    );
    assert_eq!(
        rejected(&with_customer(customer("beta", &["198.51.100.0/33"]))),
        r#"customer beta: prefix "198.51.100.0/33": prefix length 33 exceeds 32"#
    );
    assert_eq!(
        rejected(&with_customer(customer("beta", &["203.0.113.1/24"]))),
        r#"customer beta: prefix "203.0.113.1/24": host bits set (did you mean 203.0.113.0/24?)"#
    );
    assert_eq!(
        rejected(&with_customer(customer(
            "beta",
            &["10.0.0.0/8", "10.0.0.0/8"]
        ))),
        r#"customer beta: prefix "10.0.0.0/8" listed twice"#
    );
}

#[test]
fn customer_prefixes_must_not_overlap_other_customers() {
    // Nested prefixes of one customer are fine.
    ok(&with_customer(customer(
        "beta",
        &["10.0.0.0/8", "10.1.0.0/16", "198.51.101.0/24"],
    )));
    // Inside another's.
    assert_eq!(
        rejected(&with_customer(customer("beta", &["198.51.100.128/25"]))),
        r#"customer beta: prefix "198.51.100.128/25" overlaps prefix "198.51.100.0/24" of customer acme"#
    );
    // Containing another's.
    assert_eq!(
        rejected(&with_customer(customer("beta", &["2001:db8::/32"]))),
        r#"customer beta: prefix "2001:db8::/32" overlaps prefix "2001:db8:a::/48" of customer acme"#
    );
    // Equal.
    assert_eq!(
        rejected(&with_customer(customer("beta", &["198.51.100.0/24"]))),
        r#"customer beta: prefix "198.51.100.0/24" overlaps prefix "198.51.100.0/24" of customer acme"#
    );
    // A third customer nested under two of one's own prefixes: still found.
    let mut cfg = with_customer(customer("beta", &["10.0.0.0/8", "10.1.0.0/16"]));
    cfg.customers.push(customer("gamma", &["10.1.2.0/24"]));
    assert_eq!(
        rejected(&cfg),
        r#"customer gamma: prefix "10.1.2.0/24" overlaps prefix "10.1.0.0/16" of customer beta"#
    );
}

#[test]
fn customer_interfaces() {
    let mut cfg = base();
    cfg.interfaces.push(Interface {
        name: "eth2".into(),
        role: InterfaceRole::Customer,
    });
    let mut beta = customer("beta", &["10.0.0.0/8"]);
    beta.interfaces = vec!["eth2".into()];
    cfg.customers.push(beta.clone());
    ok(&cfg);

    beta.interfaces = vec!["eth9".into()];
    assert_eq!(
        rejected(&with_customer(beta.clone())),
        r#"customer beta: interface "eth9" is not a configured interface"#
    );
    beta.interfaces = vec!["eth0".into()];
    assert_eq!(
        rejected(&with_customer(beta.clone())),
        r#"customer beta: interface "eth0" has role upstream, not customer"#
    );
    beta.interfaces = vec!["eth1".into(), "eth1".into()];
    beta.vlan = Some(200);
    assert_eq!(
        rejected(&with_customer(beta.clone())),
        r#"customer beta: interface "eth1" listed twice"#
    );
    beta.interfaces = vec!["eth 1".into()];
    assert_eq!(
        rejected(&with_customer(beta.clone())),
        r#"customer beta: interface "eth 1" contains whitespace"#
    );
}

/// Several customers may share a port (a shared segment, or one VLAN each): the
/// data plane allows each its own sources there.
#[test]
fn customers_may_share_a_port() {
    let mut beta = customer("beta", &["10.0.0.0/8"]);
    beta.interfaces = vec!["eth1".into()];
    beta.vlan = Some(200);
    ok(&with_customer(beta.clone()));
    beta.vlan = Some(100);
    ok(&with_customer(beta));
}

#[test]
fn too_many_acl_rules() {
    let max = pop_common::MAX_ACL_RULES;
    let mut cfg = Config {
        acls: (0..=max).map(acl).collect(),
        ..Config::default()
    };
    assert_eq!(
        rejected(&cfg),
        format!(
            "too many acl rules: {} exceeds the maximum of {max}",
            max + 1
        )
    );
    cfg.acls.pop();
    ok(&cfg);
}

#[test]
fn customer_vlan_range() {
    for vlan in [1, 4094] {
        let mut c = customer("beta", &["10.0.0.0/8"]);
        c.vlan = Some(vlan);
        ok(&with_customer(c));
    }
    for vlan in [0, 4095] {
        let mut c = customer("beta", &["10.0.0.0/8"]);
        c.vlan = Some(vlan);
        assert_eq!(
            rejected(&with_customer(c)),
            format!("customer beta: vlan {vlan} out of range 1-4094")
        );
    }
}

#[test]
fn customer_policer() {
    let mut c = customer("beta", &["10.0.0.0/8"]);
    c.rate_bps = Some(0);
    assert_eq!(
        rejected(&with_customer(c.clone())),
        "customer beta: rate_bps must be greater than 0"
    );
    c.rate_bps = None;
    c.burst_bytes = Some(10_000);
    assert_eq!(
        rejected(&with_customer(c.clone())),
        "customer beta: burst_bytes requires rate_bps"
    );
    c.rate_bps = Some(1_000_000);
    c.burst_bytes = Some(0);
    assert_eq!(
        rejected(&with_customer(c.clone())),
        "customer beta: burst_bytes must be greater than 0"
    );
    c.burst_bytes = Some(10_000);
    assert_eq!(
        ok(&with_customer(c.clone())).customers[1].burst_bytes,
        Some(10_000)
    );
}

/// The policer's arithmetic holds rates up to 10 Tbit/s and bursts up to 2 GiB:
/// beyond, the config is refused up front (it used to fail at the map write,
/// after a first start had already saved it).
#[test]
fn customer_policer_limits() {
    let max_rate = 10_000_000_000_000u64;
    let max_burst = 1u64 << 31;
    let mut c = customer("beta", &["10.0.0.0/8"]);
    c.rate_bps = Some(max_rate);
    ok(&with_customer(c.clone()));
    c.rate_bps = Some(100_000_000_000_000);
    assert_eq!(
        rejected(&with_customer(c.clone())),
        format!("customer beta: rate_bps 100000000000000 exceeds the maximum of {max_rate}")
    );
    c.rate_bps = Some(1_000_000);
    c.burst_bytes = Some(max_burst);
    ok(&with_customer(c.clone()));
    c.burst_bytes = Some(max_burst + 1);
    assert_eq!(
        rejected(&with_customer(c.clone())),
        format!(
            "customer beta: burst_bytes {} exceeds the maximum of {max_burst}",
            max_burst + 1
        )
    );
    // The same check, and message, for a customer added on its own.
    assert!(pop::config::validate::check_customer(&c).is_err());
}

/// On a port where a customer with anti-spoofing attaches, every prefix of
/// every customer there takes an entry of the anti-spoofing table of its
/// family; the customer whose interface overflows it is named, with the limit.
#[test]
fn anti_spoofing_entries_beyond_the_table_name_the_customer_and_the_limit() {
    let max = pop_common::MAX_SPOOF_PREFIXES as usize;
    let mut cfg = Config::default();
    let ports: Vec<String> = (0..5).map(|i| format!("eth{i}")).collect();
    for p in &ports {
        cfg.interfaces.push(Interface {
            name: p.clone(),
            role: InterfaceRole::Customer,
        });
    }
    // 13107 customers with one IPv4 prefix on 5 ports: 65535 entries, then
    // one customer more.
    let full = max / ports.len();
    for i in 0..=full {
        let net = format!("10.{}.{}.0/24", i / 256, i % 256);
        let mut c = customer(&format!("c{i}"), &[&net]);
        c.interfaces = ports.clone();
        c.anti_spoofing = i == 0;
        cfg.customers.push(c);
    }
    assert_eq!(
        rejected(&cfg),
        format!(
            "customer c{full}: interface \"eth1\" brings the IPv4 anti-spoofing entries to {}, beyond the maximum of {max} (interface, prefix) entries",
            max + 1
        )
    );
    // Without anti-spoofing on these ports, none of it is in the table.
    cfg.customers[0].anti_spoofing = false;
    ok(&cfg);
    cfg.customers[0].anti_spoofing = true;
    cfg.customers.last_mut().unwrap().interfaces.truncate(1);
    ok(&cfg);
}

/// Next-hop ids are 1..65536: one per distinct (dev, via) over all routes.
#[test]
fn next_hops_beyond_the_table_name_the_route_and_the_limit() {
    let max = pop_common::MAX_CONFIGURED_NEXTHOPS as usize;
    let mut cfg = base();
    cfg.routes.clear();
    for i in 0..max as u32 {
        let [_, a, b, c] = (i + 1).to_be_bytes();
        let via = format!("10.{a}.{b}.{c}");
        cfg.routes
            .push(route(&format!("{via}/32"), &[&via], "eth0"));
    }
    // The same next hops again: no new entries.
    cfg.routes
        .push(route("172.16.0.0/12", &["10.0.0.1", "10.0.0.2"], "eth0"));
    ok(&cfg);
    cfg.routes
        .push(route("192.168.0.0/16", &["10.0.0.1", "192.0.2.77"], "eth0"));
    assert_eq!(
        rejected(&cfg),
        format!(
            "route 192.168.0.0/16: via \"192.0.2.77\" is next hop {}, beyond the maximum of {max} distinct (dev, via) pairs",
            max + 1
        )
    );
}

#[test]
fn default_burst_is_250ms_of_rate_between_15000_bytes_and_the_bucket_size() {
    assert_eq!(default_burst_bytes(100_000), 15_000);
    assert_eq!(default_burst_bytes(1_000_000), 31_250);
    assert_eq!(default_burst_bytes(100_000_000), 3_125_000);
    assert_eq!(default_burst_bytes(10_000_000_000), 312_500_000);
    assert_eq!(default_burst_bytes(10_000_000_000_000), 1 << 31);
    let mut c = customer("beta", &["10.0.0.0/8"]);
    c.rate_bps = Some(100_000_000);
    let v = ok(&with_customer(c));
    assert_eq!(v.customers[1].burst_bytes, Some(3_125_000));
    let mut c = customer("gamma", &["10.0.0.0/8"]);
    c.anti_spoofing = true;
    assert_eq!(ok(&with_customer(c)).customers[1].burst_bytes, None);
}

#[test]
fn too_many_customers() {
    let max = pop_common::MAX_CUSTOMERS as usize - 1;
    let mut cfg = Config::default();
    for i in 0..=max {
        let net = format!("10.{}.{}.0/24", i / 256, i % 256);
        cfg.customers.push(customer(&format!("c{i}"), &[&net]));
    }
    assert_eq!(
        rejected(&cfg),
        format!(
            "too many customers: {} exceeds the maximum of {max}",
            max + 1
        )
    );
    cfg.customers.pop();
    ok(&cfg);
}

// ---- ACLs -----------------------------------------------------------------------

#[test]
fn acl_priorities_unique() {
    ok(&with_acl(acl(101)));
    assert_eq!(
        rejected(&with_acl(acl(100))),
        "acl 100: priority listed twice"
    );
}

#[test]
fn acl_priority_stops_below_the_no_rule_marker() {
    ok(&with_acl(acl(u32::MAX - 1)));
    assert_eq!(
        rejected(&with_acl(acl(u32::MAX))),
        "acl 4294967295: priority exceeds the maximum of 4294967294"
    );
}

#[test]
fn acls_come_out_sorted_by_priority() {
    let mut cfg = base();
    cfg.acls.insert(0, acl(300));
    cfg.acls.push(acl(5));
    let prios: Vec<u32> = ok(&cfg).acls.iter().map(|a| a.priority).collect();
    assert_eq!(prios, [5, 100, 300]);
}

#[test]
fn acl_prefixes_and_families() {
    let mut a = acl(7);
    a.src = Some("2001:db8::/32".into());
    a.dst = Some("2001:db8:1::/48".into());
    ok(&with_acl(a.clone()));
    a.dst = Some("10.0.0.0/33".into());
    assert_eq!(
        rejected(&with_acl(a.clone())),
        r#"acl 7: dst "10.0.0.0/33": prefix length 33 exceeds 32"#
    );
    a.dst = Some("10.0.0.0/8".into());
    assert_eq!(
        rejected(&with_acl(a.clone())),
        r#"acl 7: src "2001:db8::/32" and dst "10.0.0.0/8" differ in address family"#
    );
    a.dst = None;
    a.src = Some("10.0.0.1/8".into());
    assert_eq!(
        rejected(&with_acl(a)),
        r#"acl 7: src "10.0.0.1/8": host bits set (did you mean 10.0.0.0/8?)"#
    );
}

#[test]
fn acl_protocols() {
    for (proto, number) in [
        ("tcp", 6),
        ("udp", 17),
        ("icmp", 1),
        ("icmpv6", 58),
        ("47", 47),
        ("0", 0),
        ("255", 255),
    ] {
        let mut a = acl(7);
        a.proto = Some(proto.into());
        assert_eq!(acl_of(&ok(&with_acl(a)), 7).proto, Some(number), "{proto}");
    }
    for proto in ["256", "gre", "-1", ""] {
        let mut a = acl(7);
        a.proto = Some(proto.into());
        assert_eq!(
            rejected(&with_acl(a)),
            format!("acl 7: proto {proto:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255")
        );
    }
}

#[test]
fn acl_ports() {
    let mut a = acl(7);
    a.proto = Some("udp".into());
    a.src_port = Some("1000-2000".into());
    a.dst_port = Some("65535".into());
    let v = ok(&with_acl(a.clone()));
    assert_eq!(acl_of(&v, 7).src_port, Some((1000, 2000)));
    assert_eq!(acl_of(&v, 7).dst_port, Some((65535, 65535)));
    for (port, msg) in [
        ("70000", r#"acl 7: dst_port "70000": port exceeds 65535"#),
        (
            "99999999999999999999999",
            r#"acl 7: dst_port "99999999999999999999999": port exceeds 65535"#,
        ),
        (
            "2000-1000",
            r#"acl 7: dst_port "2000-1000": range start 2000 exceeds end 1000"#,
        ),
        (
            "ssh",
            r#"acl 7: dst_port "ssh": not a port or range (expected N or A-B)"#,
        ),
        (
            "1-",
            r#"acl 7: dst_port "1-": not a port or range (expected N or A-B)"#,
        ),
    ] {
        a.dst_port = Some(port.into());
        assert_eq!(rejected(&with_acl(a.clone())), msg);
    }
}

#[test]
fn acl_port_needs_tcp_or_udp() {
    let mut a = acl(7);
    a.dst_port = Some("22".into());
    assert_eq!(
        rejected(&with_acl(a.clone())),
        "acl 7: dst_port needs proto tcp or udp"
    );
    a.proto = Some("icmp".into());
    assert_eq!(
        rejected(&with_acl(a.clone())),
        "acl 7: dst_port needs proto tcp or udp"
    );
    a.proto = Some("17".into());
    ok(&with_acl(a.clone()));
    a.dst_port = None;
    a.src_port = Some("53".into());
    a.proto = None;
    assert_eq!(
        rejected(&with_acl(a)),
        "acl 7: src_port needs proto tcp or udp"
    );
}

#[test]
fn acl_in_iface_must_be_configured() {
    let mut a = acl(7);
    a.in_iface = Some("eth1".into());
    ok(&with_acl(a.clone()));
    a.in_iface = Some("eth9".into());
    assert_eq!(
        rejected(&with_acl(a.clone())),
        r#"acl 7: in_iface "eth9" is not a configured interface"#
    );
    a.in_iface = Some("a-very-long-name0".into());
    assert_eq!(
        rejected(&with_acl(a)),
        r#"acl 7: in_iface "a-very-long-name0" is longer than 15 characters"#
    );
}

// ---- scale -------------------------------------------------------------------------

/// popd validates the whole candidate config on every change: a million routes
/// and thousands of customers must take well under the time a person waits.
#[test]
fn a_million_routes_validate_quickly() {
    let mut cfg = base();
    cfg.routes.clear();
    let via = vec!["192.0.2.1".to_string()];
    for i in 0..1_000_000u32 {
        let [a, b, c, _] = (i << 8).to_be_bytes();
        cfg.routes.push(Route {
            prefix: format!("{}.{b}.{c}.0/24", a + 1),
            via: via.clone(),
            dev: "eth0".into(),
        });
    }
    for i in 0..10_000u32 {
        let [_, _, b, c] = i.to_be_bytes();
        cfg.customers
            .push(customer(&format!("c{i}"), &[&format!("100.{b}.{c}.0/24")]));
    }
    let start = Instant::now();
    let v = ok(&cfg);
    let took = start.elapsed();
    assert_eq!(v.routes.len(), 1_000_000);
    // Debug build on 2 cores; O(n^2) would take hours, O(n log n) takes ~1 s.
    assert!(took.as_secs() < 20, "validation took {took:?}");

    // A duplicate at the very end is still found.
    cfg.routes.push(route("1.0.0.0/24", &["192.0.2.9"], "eth0"));
    assert_eq!(rejected(&cfg), "route 1.0.0.0/24: prefix listed twice");
}

#[test]
fn icmp_section() {
    // Absent: the kernel's defaults (icmp_msgs_per_sec, icmp_msgs_burst).
    let cfg = base();
    assert_eq!((cfg.icmp.rate_per_s, cfg.icmp.burst), (1000, 50));
    assert!(
        !to_toml(&cfg).contains("[icmp]"),
        "defaults are not exported"
    );
    // Set, also the contract's way of writing it, and exported back.
    let text = format!("{EXAMPLE}\n[icmp]\nrate_per_s = 200\nburst = 10\n");
    let cfg = parse_config(&text).unwrap();
    assert_eq!((cfg.icmp.rate_per_s, cfg.icmp.burst), (200, 10));
    ok(&cfg);
    let exported = to_toml(&cfg);
    assert!(
        exported.contains("[icmp]\nrate_per_s = 200\nburst = 10\n"),
        "{exported}"
    );
    assert_eq!(parse_config(&exported).unwrap(), cfg);
    // One key alone keeps the other's default.
    let cfg = parse_config("[icmp]\nburst = 7\n").unwrap();
    assert_eq!((cfg.icmp.rate_per_s, cfg.icmp.burst), (1000, 7));
    // Out of range, with the field and the range.
    for (rate, burst, message) in [
        (0, 50, "icmp: rate_per_s 0 out of range 1-1000000"),
        (
            1_000_001,
            50,
            "icmp: rate_per_s 1000001 out of range 1-1000000",
        ),
        (1000, 0, "icmp: burst 0 out of range 1-1000000"),
        (
            1000,
            2_000_000,
            "icmp: burst 2000000 out of range 1-1000000",
        ),
    ] {
        let mut cfg = base();
        cfg.icmp.rate_per_s = rate;
        cfg.icmp.burst = burst;
        assert_eq!(rejected(&cfg), message);
    }
    // Unknown keys and negative numbers: one line with the line number.
    match parse_config("[icmp]\nrate = 5\n") {
        Err(ConfigError::Syntax { line: 2, message }) => {
            assert!(message.contains("unknown field `rate`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_config("[icmp]\nburst = -1\n"),
        Err(ConfigError::Syntax { line: 2, .. })
    ));
}

// ---- routes read straight into their table ----------------------------------

const ROUTED: &str = "[[interfaces]]\nname = \"eth0\"\nrole = \"upstream\"\n";

fn route_text(prefix: &str, via: &str, dev: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nvia = [\"{via}\"]\ndev = \"{dev}\"\n")
}

#[test]
fn typed_routes_report_the_first_problem_in_config_order() {
    let ok = route_text("10.0.0.0/8", "192.0.2.1", "eth0");
    let twice = route_text("10.0.0.0/8", "192.0.2.2", "eth0");
    let unknown = route_text("10.1.0.0/16", "192.0.2.1", "eth7");
    let unknown_twice = route_text("10.0.0.0/8", "192.0.2.1", "eth7");
    let bad = route_text("10.2.0.1/16", "192.0.2.1", "eth0");
    let family = route_text("10.3.0.0/16", "2001:db8::1", "eth0");
    let bad_acl = "\n[[acls]]\npriority = \"x\"\naction = \"drop\"\n";
    let bad_customer = "\n[[customers]]\nname = \"a b\"\nprefixes = [\"198.51.100.0/24\"]\n";
    let cases = [
        (
            vec![&ok, &twice, &unknown],
            "route 10.0.0.0/8: prefix listed twice",
        ),
        (
            vec![&ok, &unknown, &twice],
            "route 10.1.0.0/16: dev \"eth7\"",
        ),
        // One route both unknown-dev and a duplicate: the dev is checked first.
        (vec![&ok, &unknown_twice], "route 10.0.0.0/8: dev \"eth7\""),
        (vec![&ok, &family, &bad], "route 10.3.0.0/16: via"),
        (vec![&ok, &bad, &family], "route 10.2.0.1/16: host bits set"),
        (vec![&unknown, &bad], "route 10.1.0.0/16: dev \"eth7\""),
        (vec![&bad, &unknown], "route 10.2.0.1/16: host bits set"),
    ];
    for (routes, expected) in cases {
        let mut text = ROUTED.to_string();
        for r in &routes {
            text += r;
        }
        let want = records(&text);
        let got = typed(&text);
        assert_eq!(got, want, "{text}");
        let message = got.unwrap_err();
        assert!(message.starts_with(expected), "{message} for {text}");
        // A syntax error anywhere comes before any route's problem; a bad
        // route before a bad customer.
        let with_acl = format!("{text}{bad_acl}");
        assert_eq!(typed(&with_acl), records(&with_acl));
        assert!(typed(&with_acl).unwrap_err().starts_with("config line"));
        let with_customer = format!("{text}{bad_customer}");
        assert_eq!(typed(&with_customer), records(&with_customer));
        assert!(typed(&with_customer).unwrap_err().starts_with(expected));
    }
    // Routes toml has to read (comments, escapes, inline arrays of tables)
    // give the same table as the plain ones.
    let mixed = format!(
        "{ROUTED}{ok}\n[[routes]]  # x\nprefix = \"10.4.0.0/16\" # y\nvia = [\"192.0.2.\\u0031\",]\ndev = \"eth0\"\n"
    );
    assert_eq!(typed(&mixed), Ok(2));
    assert_eq!(records(&mixed), Ok(2));
    let inline = format!(
        "routes = [{{ prefix = \"10.0.0.0/8\", via = [\"192.0.2.1\"], dev = \"eth0\" }}]\n{ROUTED}"
    );
    assert_eq!(typed(&inline), Ok(1));
}

#[test]
fn a_bad_route_deep_in_a_big_file_is_named() {
    let mut text = ROUTED.to_string();
    let n = 200_000u32;
    for i in 0..n {
        let prefix = format!("{}.{}.{}.0/24", 1 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
        let via = if i == 150_001 {
            "2001:db8::1"
        } else {
            "192.0.2.1"
        };
        text += &route_text(&prefix, via, "eth0");
    }
    assert_eq!(
        typed(&text),
        Err(
            "route 3.73.241.0/24: via \"2001:db8::1\": address family differs from the prefix"
                .into()
        )
    );
    assert_eq!(typed(&text), records(&text));
    let good = text.replace("\"2001:db8::1\"", "\"192.0.2.1\"");
    assert_eq!(typed(&good), Ok(n as usize));
}
