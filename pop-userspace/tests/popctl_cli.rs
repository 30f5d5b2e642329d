//! The real popctl binary against a fake popd: a Unix socket in a temp dir that
//! records each request line and answers canned responses. Checks what is sent for
//! each command, what is printed, and the exit codes (docs/reference.md).
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// A fake popd answering each connection with the next canned response (the last
/// one repeats), recording the request lines.
struct FakePopd {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakePopd {
    fn new(responses: Vec<Value>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("popd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut next = 0;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                assert!(line.ends_with('\n'), "request is one line: {line:?}");
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).expect("request is JSON"));
                let answer = &responses[next.min(responses.len() - 1)];
                next += 1;
                let _ = (&stream).write_all(format!("{answer}\n").as_bytes());
            }
        });
        Self {
            _dir: dir,
            socket,
            requests,
        }
    }

    fn ok(data: Value) -> Self {
        Self::new(vec![json!({"status": "ok", "data": data})])
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    fn popctl(&self, args: &[&str]) -> Output {
        popctl_at(&self.socket, args)
    }
}

fn popctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("POP_SOCKET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Exit 0, nothing on stderr.
fn assert_success(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    assert!(o.stderr.is_empty(), "stderr: {}", stderr(o));
}

/// The given exit code and exactly one stderr line starting with "popctl: ".
fn assert_one_line_error(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {} stderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("popctl: ") && err.ends_with('\n'),
        "{err:?}"
    );
    assert!(o.stdout.is_empty(), "no stdout on error: {}", stdout(o));
    err.trim_end().to_string()
}

/// Column start offsets of a table's header must hold each row's cells.
fn assert_aligned(table: &str, headers: &[&str]) {
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    let starts: Vec<usize> = headers
        .iter()
        .map(|h| {
            header
                .find(h)
                .unwrap_or_else(|| panic!("header {h} in {header:?}"))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{header}");
    for row in &lines[1..] {
        for &s in &starts[1..] {
            assert_eq!(
                &row[s - 2..s],
                "  ",
                "cell boundary at {s} in {row:?}\n{table}"
            );
            assert_ne!(
                &row[s..s + 1],
                " ",
                "cell starts at {s} in {row:?}\n{table}"
            );
        }
    }
}

fn generation(n: u64) -> Value {
    json!({"generation": n})
}

// ---- what each command sends ---------------------------------------------------------

#[test]
fn each_command_sends_its_request() {
    let cases: Vec<(Vec<&str>, Value)> = vec![
        (vec!["status"], json!({"cmd": "status"})),
        (
            vec![
                "route",
                "add",
                "10.0.0.0/8",
                "via",
                "192.0.2.1,192.0.2.2",
                "dev",
                "eth0",
            ],
            json!({"cmd": "route_add", "prefix": "10.0.0.0/8", "via": ["192.0.2.1", "192.0.2.2"], "dev": "eth0"}),
        ),
        (
            vec!["route", "del", "10.0.0.0/8"],
            json!({"cmd": "route_del", "prefix": "10.0.0.0/8"}),
        ),
        (vec!["route", "show"], json!({"cmd": "route_show"})),
        (
            vec!["route", "get", "10.1.2.3"],
            json!({"cmd": "route_get", "address": "10.1.2.3"}),
        ),
        (
            vec![
                "customer",
                "add",
                "acme",
                "--prefix",
                "198.51.100.0/24",
                "--prefix",
                "2001:db8:a::/48",
                "--iface",
                "eth1",
                "--vlan",
                "100",
                "--anti-spoofing",
                "--rate-bps",
                "100000000",
            ],
            json!({"cmd": "customer_add", "name": "acme", "prefixes": ["198.51.100.0/24", "2001:db8:a::/48"],
                   "interfaces": ["eth1"], "vlan": 100, "anti_spoofing": true, "rate_bps": 100000000u64}),
        ),
        (
            vec!["customer", "del", "acme"],
            json!({"cmd": "customer_del", "name": "acme"}),
        ),
        (vec!["customer", "show"], json!({"cmd": "customer_show"})),
        (
            vec![
                "acl",
                "add",
                "100",
                "--action",
                "drop",
                "--dst",
                "198.51.100.10/32",
                "--proto",
                "tcp",
                "--dport",
                "22",
            ],
            json!({"cmd": "acl_add", "priority": 100, "action": "drop", "dst": "198.51.100.10/32",
                   "proto": "tcp", "dst_port": "22"}),
        ),
        (
            vec!["acl", "del", "100"],
            json!({"cmd": "acl_del", "priority": 100}),
        ),
        (vec!["acl", "show"], json!({"cmd": "acl_show"})),
        (vec!["stats"], json!({"cmd": "stats"})),
        (
            vec!["stats", "acme"],
            json!({"cmd": "stats", "customer": "acme"}),
        ),
        (vec!["export"], json!({"cmd": "export"})),
        (
            vec!["shutdown"],
            json!({"cmd": "shutdown", "detach": false}),
        ),
        (
            vec!["shutdown", "--detach"],
            json!({"cmd": "shutdown", "detach": true}),
        ),
    ];
    for (args, expected) in cases {
        // -j so that any data shape is accepted: this test is about the request.
        let popd = FakePopd::ok(json!({}));
        let mut argv = vec!["-j"];
        argv.extend(&args);
        let out = popd.popctl(&argv);
        assert_success(&out);
        assert_eq!(popd.requests(), vec![expected], "popctl {}", args.join(" "));
    }
}

#[test]
fn apply_sends_the_file_text_and_prints_changes_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pop.toml");
    let text = "[[interfaces]]\nname = \"eth0\"\nrole = \"upstream\"\n";
    std::fs::write(&file, text).unwrap();
    let popd = FakePopd::ok(json!({
        "dry_run": false, "changes": ["+ interface eth0 (upstream)"], "generation": 8
    }));
    let out = popd.popctl(&["apply", file.to_str().unwrap()]);
    assert_success(&out);
    assert_eq!(
        popd.requests(),
        vec![json!({"cmd": "apply", "config": text, "dry_run": false})]
    );
    assert_eq!(stdout(&out), "+ interface eth0 (upstream)\ngeneration 8\n");

    let popd = FakePopd::ok(json!({"dry_run": true, "changes": [], "generation": 7}));
    let out = popd.popctl(&["apply", file.to_str().unwrap(), "--dry-run"]);
    assert_success(&out);
    assert_eq!(popd.requests()[0]["dry_run"], json!(true));
    assert!(
        stdout(&out).starts_with("no changes\ndry run"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn socket_from_environment() {
    let popd = FakePopd::ok(generation(1));
    let out = Command::new(env!("CARGO_BIN_EXE_popctl"))
        .args(["-j", "customer", "del", "acme"])
        .env("POP_SOCKET", &popd.socket)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(popd.requests().len(), 1);
}

// ---- output ----------------------------------------------------------------------------

#[test]
fn json_output_is_exactly_the_data() {
    let data = json!([
        {"prefix": "0.0.0.0/0", "dev": "eth0", "nexthops": [
            {"via": "192.0.2.1", "mac": "02:00:00:00:00:01", "state": "resolved"},
            {"via": "192.0.2.2", "mac": null, "state": "unresolved"}]}
    ]);
    let popd = FakePopd::ok(data.clone());
    let out = popd.popctl(&["-j", "route", "show"]);
    assert_success(&out);
    let parsed: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(parsed, data);

    let popd = FakePopd::ok(generation(42));
    let out = popd.popctl(&["route", "del", "10.0.0.0/8", "--json"]);
    assert_success(&out);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        generation(42)
    );
}

#[test]
fn route_show_table_has_a_row_per_next_hop() {
    let popd = FakePopd::ok(json!([
        {"prefix": "0.0.0.0/0", "dev": "eth0", "nexthops": [
            {"via": "192.0.2.1", "mac": "02:00:00:00:00:01", "state": "resolved"},
            {"via": "192.0.2.2", "mac": null, "state": "unresolved"}]},
        {"prefix": "2001:db8:ffff::/48", "dev": "eth1", "nexthops": [
            {"via": "2001:db8::1", "mac": null, "state": "unresolved"}]}
    ]));
    let out = popd.popctl(&["route", "show"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_aligned(&text, &["PREFIX", "VIA", "DEV", "STATE"]);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(rows[0][..4], ["0.0.0.0/0", "192.0.2.1", "eth0", "resolved"]);
    assert_eq!(
        rows[1][..4],
        ["0.0.0.0/0", "192.0.2.2", "eth0", "unresolved"]
    );
    assert_eq!(
        rows[2][..4],
        ["2001:db8:ffff::/48", "2001:db8::1", "eth1", "unresolved"]
    );
}

#[test]
fn stats_table_is_aligned_with_drops_by_reason() {
    let popd = FakePopd::ok(json!([
        {"name": "acme", "packets_in": 1234567, "bytes_in": 987654321, "packets_out": 5,
         "bytes_out": 420, "drops": {"acl": 3, "spoofed": 1}},
        {"name": "a-much-longer-customer", "packets_in": 0, "bytes_in": 0, "packets_out": 0,
         "bytes_out": 0, "drops": {}}
    ]));
    let out = popd.popctl(&["stats"]);
    assert_success(&out);
    let text = stdout(&out);
    let headers = [
        "CUSTOMER",
        "PKTS_IN",
        "BYTES_IN",
        "PKTS_OUT",
        "BYTES_OUT",
        "DROPS",
    ];
    assert_aligned(&text, &headers);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), headers);
    assert!(
        lines[1].starts_with("acme ") && lines[1].ends_with("acl=3 spoofed=1"),
        "{text}"
    );
    assert!(lines[2].ends_with(" -"), "{text}");
}

#[test]
fn customer_and_acl_tables() {
    let popd = FakePopd::ok(json!([
        {"name": "acme", "prefixes": ["198.51.100.0/24", "2001:db8:a::/48"], "interfaces": ["eth1"],
         "vlan": 100, "anti_spoofing": true, "rate_bps": 100000000u64, "burst_bytes": 1250000}
    ]));
    let out = popd.popctl(&["customer", "show"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_aligned(&text, &["NAME", "PREFIXES", "INTERFACES", "VLAN"]);
    assert!(text.contains("198.51.100.0/24,2001:db8:a::/48"), "{text}");

    let popd = FakePopd::ok(json!([
        {"priority": 100, "action": "drop", "dst": "198.51.100.10/32", "proto": "tcp", "dst_port": "22",
         "hits": 1234, "hit_bytes": 81444},
        {"priority": 65000, "action": "allow", "hits": 0, "hit_bytes": 0}
    ]));
    let out = popd.popctl(&["acl", "show"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_aligned(
        &text,
        &[
            "PRIORITY", "ACTION", "SRC", "DST", "PROTO", "SPORT", "DPORT", "IN_IFACE", "HITS",
        ],
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "100",
            "drop",
            "-",
            "198.51.100.10/32",
            "tcp",
            "-",
            "22",
            "-",
            "1234"
        ]
    );
    assert_eq!(
        rows[1],
        ["65000", "allow", "-", "-", "-", "-", "-", "-", "0"]
    );
}

#[test]
fn status_and_export() {
    let popd = FakePopd::ok(json!({
        "version": "0.1.0", "program_id": 42, "generation": 7,
        "interfaces": [{"name": "eth0", "ifindex": 2, "role": "upstream", "xdp_mode": "native"}],
        "maps": [{"name": "routes_v4", "entries": 3, "max_entries": 2097152}]
    }));
    let out = popd.popctl(&["status"]);
    assert_success(&out);
    let text = stdout(&out);
    for word in ["0.1.0", "42", "eth0", "native", "routes_v4", "2097152"] {
        assert!(text.contains(word), "{word} in {text}");
    }

    let toml = "[dataplane]\nxdp_mode = \"auto\"\nno_route = \"pass\"\n";
    let popd = FakePopd::ok(json!({"config": toml}));
    let out = popd.popctl(&["export"]);
    assert_success(&out);
    assert_eq!(stdout(&out), toml);
}

#[test]
fn top_draws_rates_from_deltas() {
    let sample = |pkts: u64| {
        json!({"status": "ok", "data": [{"name": "acme", "packets_in": pkts, "bytes_in": pkts * 100,
               "packets_out": 0, "bytes_out": 0, "drops": {}}]})
    };
    let popd = FakePopd::new(vec![sample(0), sample(1_000_000), sample(2_000_000)]);
    let out = popd.popctl(&["top", "--iterations", "2", "--interval-ms", "200"]);
    assert_success(&out);
    assert_eq!(popd.requests(), vec![json!({"cmd": "stats"}); 3]);
    let text = stdout(&out);
    assert_eq!(text.matches("\x1b[H\x1b[2J").count(), 2, "{text:?}");
    // 1M packets in ~0.2 s: some Mpps, never 0.
    let row = text.lines().rfind(|l| l.starts_with("acme")).unwrap();
    let pps_in = row.split_whitespace().nth(1).unwrap();
    assert!(pps_in.ends_with('M'), "{row}");
}

// ---- errors --------------------------------------------------------------------------

#[test]
fn server_error_is_printed_verbatim_with_exit_1() {
    let message = r#"route 10.0.0.0/8: dev "eth9" is not a configured interface"#;
    let popd = FakePopd::new(vec![json!({"status": "error", "message": message})]);
    let out = popd.popctl(&[
        "route",
        "add",
        "10.0.0.0/8",
        "via",
        "192.0.2.1",
        "dev",
        "eth9",
    ]);
    assert_eq!(assert_one_line_error(&out, 1), format!("popctl: {message}"));
    // Same with -j: errors never go to stdout.
    let out = popd.popctl(&["-j", "route", "show"]);
    assert_eq!(assert_one_line_error(&out, 1), format!("popctl: {message}"));
}

#[test]
fn bad_input_is_refused_without_contacting_popd() {
    let popd = FakePopd::ok(generation(1));
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "route",
                "add",
                "10.0.0.0/33",
                "via",
                "192.0.2.1",
                "dev",
                "eth0",
            ],
            1,
            "popctl: route 10.0.0.0/33: prefix length 33 exceeds 32",
        ),
        (
            &["route", "add", "10.0.0.0/8", "via", "192.0.2.1"],
            2,
            r#"popctl: route add 10.0.0.0/8: missing "dev IFACE""#,
        ),
        (
            &[
                "acl", "add", "100", "--action", "drop", "--proto", "tcp", "--dport", "70000",
            ],
            1,
            r#"popctl: acl 100: dst_port "70000": port exceeds 65535"#,
        ),
        (
            &["customer", "add", "acme", "--prefix", "198.51.100.0/33"],
            1,
            r#"popctl: customer acme: prefix "198.51.100.0/33": prefix length 33 exceeds 32"#,
        ),
        (
            &[
                "customer",
                "add",
                "acme",
                "--prefix",
                "198.51.100.0/24",
                "--rate-bps",
                "100000000000000",
            ],
            1,
            "popctl: customer acme: rate_bps 100000000000000 exceeds the maximum of 10000000000000",
        ),
        (
            &["route", "get", "nowhere"],
            1,
            r#"popctl: route get: address "nowhere": not an IP address"#,
        ),
        (
            &[
                "trace", "--in", "eth0", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--vlan", "5000",
            ],
            2,
            "popctl: trace: --vlan 5000 out of range 1-4094",
        ),
    ];
    for (args, code, message) in cases {
        let out = popd.popctl(args);
        assert_eq!(
            assert_one_line_error(&out, *code),
            *message,
            "popctl {}",
            args.join(" ")
        );
    }
    // clap's own usage errors are one line too, exit 2.
    let out = popd.popctl(&["acl", "add", "100"]);
    let err = assert_one_line_error(&out, 2);
    assert!(err.contains("--action"), "{err}");
    assert!(popd.requests().is_empty(), "sent: {:?}", popd.requests());
}

#[test]
fn missing_socket_gives_a_clear_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("popd.sock");
    let out = popctl_at(&socket, &["status"]);
    assert_eq!(
        assert_one_line_error(&out, 1),
        format!(
            "popctl: cannot connect to popd at {}: No such file or directory (is popd running?)",
            socket.display()
        )
    );
}

#[test]
fn unexpected_data_shape_is_an_error_not_a_panic() {
    let popd = FakePopd::ok(json!({"surprise": true}));
    let out = popd.popctl(&["stats"]);
    let err = assert_one_line_error(&out, 1);
    assert!(
        err.starts_with("popctl: popd sent an unexpected answer to stats: "),
        "{err}"
    );
}
