//! argv → Request: what each command line sends, and what it refuses before sending.
use super::args::{Cli, Plan};
use super::*;
use crate::config::model::{Acl, AclAction, Customer, Route};

fn plan_of(argv: &[&str]) -> Result<Plan, CliError> {
    let cli = Cli::try_parse_from(std::iter::once("popctl").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?} should parse: {e}"));
    args::plan(&cli.command)
}

fn request(argv: &[&str]) -> Request {
    match plan_of(argv) {
        Ok(Plan::Call(req)) => req,
        other => panic!("{argv:?}: expected a request, got {other:?}"),
    }
}

fn error(argv: &[&str]) -> (i32, String) {
    match plan_of(argv) {
        Err(e) => (e.exit_code(), e.to_string()),
        Ok(p) => panic!("{argv:?} should be refused, got {p:?}"),
    }
}

fn run_capture(argv: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(
        std::iter::once("popctl").chain(argv.iter().copied()),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn route_add_with_ecmp_and_canonical_forms() {
    assert_eq!(
        request(&[
            "route",
            "add",
            "2001:DB8::/32",
            "via",
            "2001:db8::1,2001:db8::2",
            "dev",
            "eth0"
        ]),
        Request::RouteAdd(Route {
            prefix: "2001:db8::/32".into(),
            via: vec!["2001:db8::1".into(), "2001:db8::2".into()],
            dev: "eth0".into(),
        })
    );
}

#[test]
fn route_add_keywords_in_any_order_and_repeated_via() {
    assert_eq!(
        request(&[
            "route",
            "add",
            "10.0.0.0/8",
            "dev",
            "eth0",
            "via",
            "192.0.2.1",
            "via",
            "192.0.2.2"
        ]),
        Request::RouteAdd(Route {
            prefix: "10.0.0.0/8".into(),
            via: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            dev: "eth0".into(),
        })
    );
}

#[test]
fn route_add_missing_or_misplaced_keywords_are_usage_errors() {
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "via", "192.0.2.1"]),
        (2, r#"route add 10.0.0.0/8: missing "dev IFACE""#.into())
    );
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "dev", "eth0"]),
        (
            2,
            r#"route add 10.0.0.0/8: missing "via IP[,IP...]""#.into()
        )
    );
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "via", "dev", "eth0"]),
        (
            2,
            r#"route add 10.0.0.0/8: "via" needs an address (via IP[,IP...])"#.into()
        )
    );
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "via", "192.0.2.1", "dev"]),
        (
            2,
            r#"route add 10.0.0.0/8: "dev" needs an interface name (dev IFACE)"#.into()
        )
    );
    assert_eq!(
        error(&[
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            "192.0.2.1",
            "dev",
            "a",
            "dev",
            "b"
        ]),
        (2, r#"route add 10.0.0.0/8: "dev" given twice"#.into())
    );
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "192.0.2.1", "dev", "eth0"]),
        (
            2,
            r#"route add 10.0.0.0/8: unexpected "192.0.2.1" (expected "via IP[,IP...]" and "dev IFACE")"#
                .into()
        )
    );
    assert_eq!(
        error(&["route", "add", "10.0.0.0/8", "via", "192.0.2.1", "192.0.2.2", "dev", "eth0"]),
        (
            2,
            r#"route add 10.0.0.0/8: unexpected "192.0.2.2" (separate next hops with commas: via IP,IP)"#
                .into()
        )
    );
}

#[test]
fn route_add_bad_values_are_refused_with_validation_messages() {
    assert_eq!(
        error(&[
            "route",
            "add",
            "10.0.0.0/33",
            "via",
            "192.0.2.1",
            "dev",
            "eth0"
        ]),
        (1, "route 10.0.0.0/33: prefix length 33 exceeds 32".into())
    );
    assert_eq!(
        error(&[
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            "2001:db8::1",
            "dev",
            "eth0"
        ]),
        (
            1,
            r#"route 10.0.0.0/8: via "2001:db8::1": address family differs from the prefix"#.into()
        )
    );
    assert_eq!(
        error(&[
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            "192.0.2.1",
            "dev",
            "eth/0"
        ]),
        (1, r#"route 10.0.0.0/8: dev "eth/0" contains '/'"#.into())
    );
}

#[test]
fn route_del_show_get() {
    assert_eq!(
        request(&["route", "del", "10.0.0.0/8"]),
        Request::RouteDel {
            prefix: "10.0.0.0/8".into()
        }
    );
    assert_eq!(
        error(&["route", "del", "10.1.2.3/8"]),
        (
            1,
            "route 10.1.2.3/8: host bits set (did you mean 10.0.0.0/8?)".into()
        )
    );
    assert_eq!(
        request(&["route", "show"]),
        Request::RouteShow { source: None }
    );
    assert_eq!(
        request(&["route", "list"]),
        Request::RouteShow { source: None }
    );
    assert_eq!(
        request(&["route", "show", "--source", "kernel"]),
        Request::RouteShow {
            source: Some("kernel".into())
        }
    );
    let e = Cli::try_parse_from(["popctl", "route", "show", "--source", "bgp"])
        .expect_err("an unknown source is refused");
    assert!(
        e.to_string().contains("possible values: config, kernel"),
        "{e}"
    );
    assert_eq!(
        request(&["route", "get", "10.1.2.3"]),
        Request::RouteGet {
            address: "10.1.2.3".into()
        }
    );
    assert_eq!(
        error(&["route", "get", "10.1.2"]),
        (
            1,
            r#"route get: address "10.1.2": not an IP address"#.into()
        )
    );
}

#[test]
fn customer_add_all_options() {
    assert_eq!(
        request(&[
            "customer",
            "add",
            "acme",
            "--prefix",
            "198.51.100.0/24",
            "--prefix",
            "2001:DB8:A::/48",
            "--iface",
            "eth1",
            "--vlan",
            "100",
            "--anti-spoofing",
            "--rate-bps",
            "100000000",
            "--burst-bytes",
            "1250000",
        ]),
        Request::CustomerAdd(Customer {
            name: "acme".into(),
            prefixes: vec!["198.51.100.0/24".into(), "2001:db8:a::/48".into()],
            interfaces: vec!["eth1".into()],
            vlan: Some(100),
            anti_spoofing: true,
            rate_bps: Some(100_000_000),
            burst_bytes: Some(1_250_000),
        })
    );
    assert_eq!(
        request(&["customer", "add", "b", "--prefix", "10.0.0.0/8,10.1.0.0/16"]),
        Request::CustomerAdd(Customer {
            name: "b".into(),
            prefixes: vec!["10.0.0.0/8".into(), "10.1.0.0/16".into()],
            interfaces: vec![],
            vlan: None,
            anti_spoofing: false,
            rate_bps: None,
            burst_bytes: None,
        })
    );
}

#[test]
fn customer_add_bad_values() {
    assert_eq!(
        error(&["customer", "add", "acme", "--prefix", "198.51.100.0/33"]),
        (
            1,
            r#"customer acme: prefix "198.51.100.0/33": prefix length 33 exceeds 32"#.into()
        )
    );
    assert_eq!(
        error(&[
            "customer",
            "add",
            "acme",
            "--prefix",
            "10.0.0.0/8",
            "--vlan",
            "4095"
        ]),
        (1, "customer acme: vlan 4095 out of range 1-4094".into())
    );
    assert_eq!(
        error(&["customer", "add", "a b", "--prefix", "10.0.0.0/8"]),
        (
            1,
            r#"customer "a b": name "a b": only letters, digits, '_', '.' and '-' are allowed"#
                .into()
        )
    );
    assert_eq!(
        error(&[
            "customer",
            "add",
            "acme",
            "--prefix",
            "10.0.0.0/8",
            "--burst-bytes",
            "9"
        ]),
        (1, "customer acme: burst_bytes requires rate_bps".into())
    );
}

#[test]
fn customer_del_show() {
    assert_eq!(
        request(&["customer", "del", "acme"]),
        Request::CustomerDel {
            name: "acme".into()
        }
    );
    assert_eq!(request(&["customer", "show"]), Request::CustomerShow);
}

#[test]
fn acl_add_canonicalizes() {
    assert_eq!(
        request(&[
            "acl",
            "add",
            "100",
            "--action",
            "drop",
            "--src",
            "0.0.0.0/0",
            "--dst",
            "198.51.100.10/32",
            "--proto",
            "6",
            "--dport",
            "22",
            "--sport",
            "1000-2000",
            "--in-iface",
            "eth0",
        ]),
        Request::AclAdd(Acl {
            priority: 100,
            action: AclAction::Drop,
            src: Some("0.0.0.0/0".into()),
            dst: Some("198.51.100.10/32".into()),
            proto: Some("tcp".into()),
            src_port: Some("1000-2000".into()),
            dst_port: Some("22".into()),
            in_iface: Some("eth0".into()),
        })
    );
    assert_eq!(
        request(&["acl", "add", "5", "--action", "allow"]),
        Request::AclAdd(Acl {
            priority: 5,
            action: AclAction::Allow,
            src: None,
            dst: None,
            proto: None,
            src_port: None,
            dst_port: None,
            in_iface: None,
        })
    );
}

#[test]
fn acl_add_bad_values() {
    assert_eq!(
        error(&["acl", "add", "100", "--action", "drop", "--proto", "tcp", "--dport", "70000"]),
        (1, r#"acl 100: dst_port "70000": port exceeds 65535"#.into())
    );
    assert_eq!(
        error(&["acl", "add", "100", "--action", "drop", "--dport", "22"]),
        (1, "acl 100: dst_port needs proto tcp or udp".into())
    );
    assert_eq!(
        error(&["acl", "add", "100", "--action", "drop", "--proto", "gre"]),
        (
            1,
            r#"acl 100: proto "gre": expected tcp, udp, icmp, icmpv6 or a number 0-255"#.into()
        )
    );
}

#[test]
fn acl_del_show_stats_export_status_shutdown() {
    assert_eq!(
        request(&["acl", "del", "100"]),
        Request::AclDel { priority: 100 }
    );
    assert_eq!(request(&["acl", "show"]), Request::AclShow);
    assert_eq!(request(&["stats"]), Request::Stats { customer: None });
    assert_eq!(
        request(&["stats", "acme"]),
        Request::Stats {
            customer: Some("acme".into())
        }
    );
    assert_eq!(request(&["export"]), Request::Export);
    assert_eq!(request(&["status"]), Request::Status);
    assert_eq!(request(&["shutdown"]), Request::Shutdown { detach: false });
    assert_eq!(
        request(&["shutdown", "--detach"]),
        Request::Shutdown { detach: true }
    );
}

#[test]
fn apply_reads_the_file_client_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pop.toml");
    std::fs::write(&path, "[dataplane]\nno_route = \"drop\"\n").unwrap();
    let p = path.to_str().unwrap();
    assert_eq!(
        request(&["apply", p, "--dry-run"]),
        Request::Apply {
            config: "[dataplane]\nno_route = \"drop\"\n".into(),
            dry_run: true
        }
    );
    let missing = dir.path().join("nope.toml");
    assert_eq!(
        error(&["apply", missing.to_str().unwrap()]),
        (
            1,
            format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )
        )
    );
}

#[test]
fn top_and_trace() {
    assert_eq!(
        plan_of(&["top", "--iterations", "2", "--interval-ms", "50"]).unwrap(),
        Plan::Top {
            iterations: Some(2),
            interval: std::time::Duration::from_millis(50)
        }
    );
    assert_eq!(
        request(&[
            "trace", "--in", "eth0", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp",
            "--dport", "22"
        ]),
        Request::Trace(crate::api::protocol::TraceRequest {
            in_iface: "eth0".into(),
            src: "10.0.0.1".into(),
            dst: "10.0.0.2".into(),
            proto: Some("tcp".into()),
            sport: None,
            dport: Some(22),
            vlan: None,
            ttl: None,
            size: None,
        })
    );
    assert_eq!(
        error(&[
            "trace", "--in", "eth0", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--dport", "1-2"
        ]),
        (2, "trace: --dport \"1-2\": expected one port".into())
    );
    assert_eq!(
        error(&[
            "trace",
            "--in",
            "eth0",
            "--src",
            "10.0.0.1",
            "--dst",
            "2001:db8::1"
        ]),
        (
            2,
            "trace: --src 10.0.0.1 and --dst 2001:db8::1 differ in address family".into()
        )
    );
}

#[test]
fn socket_flag_beats_environment() {
    let cli = Cli::try_parse_from(["popctl", "--socket", "/tmp/x.sock", "status"]).unwrap();
    assert_eq!(cli.socket_path(), std::path::PathBuf::from("/tmp/x.sock"));
    let cli = Cli::try_parse_from(["popctl", "status", "-j"]).unwrap();
    assert!(cli.json);
}

#[test]
fn clap_errors_are_one_line_exit_2() {
    let (code, out, err) = run_capture(&["route", "frobnicate"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("popctl: unrecognized subcommand 'frobnicate'"),
        "{err}"
    );

    let (code, _, err) = run_capture(&["customer", "add", "acme"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--prefix <P>"), "{err}");

    let (code, _, err) = run_capture(&["acl", "add", "100", "--action", "reject"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("'reject'"), "{err}");
}

#[test]
fn help_goes_to_stdout_with_exit_0() {
    let (code, out, err) = run_capture(&["route", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("add"), "{out}");
    assert!(err.is_empty());
}
