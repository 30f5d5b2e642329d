//! popctl's command line (the grammar in docs/reference.md) and its translation
//! into API requests.
//!
//! Everything that can be checked without popd is checked here, with the same
//! messages popd's validation gives, and values are sent in canonical form
//! (`2001:DB8::/32` → `2001:db8::/32`, `TCP` → `tcp`).
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::CliError;
use crate::api::protocol::{CaptureRequest, Request, TraceRequest};
use crate::config::model::{Acl, AclAction, Customer, Route};
use crate::config::validate::{
    check_acl, check_customer, check_interface_name, check_route, parse_port_range, parse_prefix,
    parse_proto, proto_name, ConfigError, Problem,
};

/// Where popd listens unless `--socket` or `POP_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/pop/popd.sock";

/// `popctl [--socket PATH] [-j|--json] OBJECT VERB [ARGS]`
#[derive(Debug, Parser)]
#[command(
    name = "popctl",
    version,
    about = "Control popd, the pop XDP forwarding plane"
)]
pub struct Cli {
    /// popd's API socket [env: POP_SOCKET] [default: /run/pop/popd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document (the response data) instead of tables
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `--socket`, else `$POP_SOCKET`, else [`DEFAULT_SOCKET`].
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                std::env::var_os("POP_SOCKET")
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
            })
            .unwrap_or_else(|| DEFAULT_SOCKET.into())
    }
}

/// The OBJECT of the command line.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Interfaces, XDP mode, program id, map fill, generation
    Status,
    /// Static routes
    Route {
        /// What to do with routes.
        #[command(subcommand)]
        verb: RouteVerb,
    },
    /// Customers (counted, policed, protected against spoofing)
    Customer {
        /// What to do with customers.
        #[command(subcommand)]
        verb: CustomerVerb,
    },
    /// Firewall rules
    Acl {
        /// What to do with ACL rules.
        #[command(subcommand)]
        verb: AclVerb,
    },
    /// Per-customer packets, bytes in/out and drops by reason
    Stats {
        /// Only this customer
        customer: Option<String>,
    },
    /// Live per-customer rates, refreshed each second
    Top {
        /// Stop after this many refreshes (for tests and scripts)
        #[arg(long, hide = true)]
        iterations: Option<u64>,
        /// Refresh interval in milliseconds
        #[arg(long, hide = true, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Replace the whole desired state with a config file, in one transaction
    Apply {
        /// Config file (TOML, as `popctl export` prints)
        file: PathBuf,
        /// Run every check apply runs and show what would change; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the whole desired state as a config file
    Export,
    /// Stop popd (forwarding keeps running unless --detach)
    Shutdown {
        /// Also detach XDP and remove the pinned maps
        #[arg(long)]
        detach: bool,
    },
    /// What the live data plane does with a packet
    Trace(TraceArgs),
    /// Capture the packets the data plane sees, with their verdicts, as pcapng
    ///
    /// Every filter given must match; none captures everything. Packets are
    /// written as the data plane left them (forwarded ones with their new MACs,
    /// VLAN tag and TTL), each with its verdict as a comment: the action
    /// (redirect, tx, pass, drop), the drop or pass reason, and the interfaces
    /// in and out, e.g. "drop acl; in eth1". The data plane captures at most
    /// 2000 packets a second per CPU, so a capture cannot hurt forwarding. The
    /// capture stops when popctl exits (--count, Ctrl-C). Only root and
    /// members of popd's socket group can capture.
    Capture(CaptureArgs),
}

/// `popctl route ...`
#[derive(Debug, Subcommand)]
pub enum RouteVerb {
    /// Add or replace a route: PREFIX via IP[,IP...] dev IFACE
    Add {
        /// Destination, e.g. 10.0.0.0/8
        prefix: String,
        /// via IP[,IP...] dev IFACE
        #[arg(value_name = "via IP[,IP...] dev IFACE")]
        words: Vec<String>,
    },
    /// Delete the route for exactly this prefix
    #[command(alias = "delete")]
    Del {
        /// Destination, e.g. 10.0.0.0/8
        prefix: String,
    },
    /// List routes with their next hops' state and source: "config" (the
    /// desired state) or "kernel" (learned from the routing table named by
    /// [kernel_routes]; a configured route for the same prefix wins)
    #[command(alias = "list", alias = "ls")]
    Show {
        /// Only routes from this source
        #[arg(long, value_parser = ["config", "kernel"])]
        source: Option<String>,
    },
    /// The route used for an address (longest-prefix match)
    Get {
        /// Destination address
        address: String,
    },
}

/// `popctl customer ...`
#[derive(Debug, Subcommand)]
pub enum CustomerVerb {
    /// Add a customer
    Add {
        /// Unique name (letters, digits, '_', '.', '-')
        name: String,
        /// A prefix of the customer (repeat or comma-separate for several)
        #[arg(
            long = "prefix",
            value_name = "P",
            required = true,
            value_delimiter = ','
        )]
        prefixes: Vec<String>,
        /// A port where the customer attaches (repeatable)
        #[arg(long = "iface", value_name = "IF", value_delimiter = ',')]
        interfaces: Vec<String>,
        /// 802.1Q id on those ports (1-4094)
        #[arg(long, value_name = "N")]
        vlan: Option<u16>,
        /// Drop traffic from its ports whose source is outside its prefixes
        #[arg(long)]
        anti_spoofing: bool,
        /// Policer rate in bits per second (1 to 10000000000000)
        #[arg(long, value_name = "N")]
        rate_bps: Option<u64>,
        /// Policer burst in bytes (default: 250 ms at the rate, at least 15000; TCP needs about that)
        #[arg(long, value_name = "N")]
        burst_bytes: Option<u64>,
    },
    /// Delete a customer
    #[command(alias = "delete")]
    Del {
        /// Customer name
        name: String,
    },
    /// List customers
    #[command(alias = "list", alias = "ls")]
    Show,
}

/// `allow` or `drop` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Let the packet continue.
    Allow,
    /// Drop it (counted as `acl`).
    Drop,
}

/// `popctl acl ...`
#[derive(Debug, Subcommand)]
pub enum AclVerb {
    /// Add a rule (lower priority is evaluated first; first match wins)
    Add {
        /// Unique priority, 0 to 4294967294
        priority: u32,
        /// What to do with matching packets
        #[arg(long, value_enum)]
        action: ActionArg,
        /// Source prefix
        #[arg(long, value_name = "P")]
        src: Option<String>,
        /// Destination prefix
        #[arg(long, value_name = "P")]
        dst: Option<String>,
        /// tcp, udp, icmp, icmpv6 or a number
        #[arg(long, value_name = "X")]
        proto: Option<String>,
        /// Source port or range A-B (needs --proto tcp or udp)
        #[arg(long, value_name = "R")]
        sport: Option<String>,
        /// Destination port or range A-B (needs --proto tcp or udp)
        #[arg(long, value_name = "R")]
        dport: Option<String>,
        /// Ingress interface
        #[arg(long, value_name = "IF")]
        in_iface: Option<String>,
    },
    /// Delete the rule with this priority
    #[command(alias = "delete")]
    Del {
        /// Priority of the rule
        priority: u32,
    },
    /// List rules by priority, each with its hits: the packets it decided
    /// (HITS; "hits" in -j)
    #[command(alias = "list", alias = "ls")]
    Show,
}

/// `popctl trace ...`: a packet to ask the data plane about.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Ingress interface
    #[arg(long = "in", value_name = "IFACE")]
    pub in_iface: String,
    /// Source address
    #[arg(long, value_name = "IP")]
    pub src: String,
    /// Destination address
    #[arg(long, value_name = "IP")]
    pub dst: String,
    /// tcp, udp, icmp, icmpv6 or a number (default: tcp with a port, else an echo request)
    #[arg(long, value_name = "X")]
    pub proto: Option<String>,
    /// Source port (default 40000)
    #[arg(long, value_name = "N")]
    pub sport: Option<String>,
    /// Destination port (default 0)
    #[arg(long, value_name = "N")]
    pub dport: Option<String>,
    /// 802.1Q id of the packet
    #[arg(long, value_name = "N")]
    pub vlan: Option<u16>,
    /// TTL / hop limit (default 64); 1 shows the ICMP Time Exceeded pop sends
    #[arg(long, value_name = "N")]
    pub ttl: Option<u8>,
    /// IP packet length in bytes, headers included (default: headers and 18
    /// bytes of payload); IPv4 packets have DF set, so one larger than the
    /// egress MTU shows the Fragmentation Needed pop sends
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u16>,
}

/// `popctl capture ...`: which packets to capture and where to write them.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Packets arriving on or leaving by this interface
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Packets from or to this customer's prefixes
    #[arg(long, value_name = "NAME")]
    pub customer: Option<String>,
    /// Only dropped packets; with REASON (acl, spoofed, policed, ...), only those
    #[arg(long, value_name = "REASON", num_args = 0..=1, default_missing_value = "")]
    pub drop: Option<String>,
    /// Stop after N packets
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Bytes kept of each packet (1-2048; default 2048)
    #[arg(long, value_name = "N")]
    pub snaplen: Option<u32>,
    /// Where to write pcapng: a file, or - for stdout
    #[arg(short = 'w', value_name = "FILE|-", required = true)]
    pub write: String,
}

/// What popctl does after parsing its arguments.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// One request, one response, rendered.
    Call(Request),
    /// Stream a capture into pcapng at `output` (`-`: stdout).
    Capture {
        /// The filter.
        request: CaptureRequest,
        /// File name or `-`.
        output: String,
    },
    /// Poll `Stats` and draw rates.
    Top {
        /// Refreshes before exiting (`None`: until interrupted).
        iterations: Option<u64>,
        /// Time between polls.
        interval: Duration,
    },
}

/// Turns a parsed command line into what to send, checking values client-side.
/// Reads the file of `apply`.
pub fn plan(command: &Command) -> Result<Plan, CliError> {
    let request = match command {
        Command::Status => Request::Status,
        Command::Route { verb } => route_request(verb)?,
        Command::Customer { verb } => customer_request(verb)?,
        Command::Acl { verb } => acl_request(verb)?,
        Command::Stats { customer } => Request::Stats {
            customer: customer.clone(),
        },
        Command::Top {
            iterations,
            interval_ms,
        } => {
            return Ok(Plan::Top {
                iterations: *iterations,
                interval: Duration::from_millis((*interval_ms).max(1)),
            })
        }
        Command::Apply { file, dry_run } => {
            let config = std::fs::read_to_string(file).map_err(|source| CliError::ReadFile {
                path: file.clone(),
                source,
            })?;
            Request::Apply {
                config,
                dry_run: *dry_run,
            }
        }
        Command::Export => Request::Export,
        Command::Shutdown { detach } => Request::Shutdown { detach: *detach },
        Command::Trace(args) => Request::Trace(trace_request(args)?),
        Command::Capture(args) => return capture_plan(args),
    };
    Ok(Plan::Call(request))
}

fn route_request(verb: &RouteVerb) -> Result<Request, CliError> {
    Ok(match verb {
        RouteVerb::Add { prefix, words } => {
            parse_prefix(prefix).map_err(|e| ConfigError::Route {
                prefix: prefix.clone(),
                problem: Problem::Prefix(e),
            })?;
            let (via, dev) = parse_route_words(prefix, words)?;
            let valid = check_route(&Route {
                prefix: prefix.clone(),
                via,
                dev,
            })?;
            Request::RouteAdd(Route {
                prefix: valid.prefix.to_string(),
                via: valid.via.iter().map(ToString::to_string).collect(),
                dev: valid.dev,
            })
        }
        RouteVerb::Del { prefix } => {
            let net = parse_prefix(prefix).map_err(|e| ConfigError::Route {
                prefix: prefix.clone(),
                problem: Problem::Prefix(e),
            })?;
            Request::RouteDel {
                prefix: net.to_string(),
            }
        }
        RouteVerb::Show { source } => Request::RouteShow {
            source: source.clone(),
        },
        RouteVerb::Get { address } => {
            let addr: IpAddr = address.parse().map_err(|_| CliError::BadAddress {
                field: "route get: address",
                value: address.clone(),
            })?;
            Request::RouteGet {
                address: addr.to_string(),
            }
        }
    })
}

/// Parses `via IP[,IP...] dev IFACE` (either order; `via` may repeat) like ip(8).
fn parse_route_words(prefix: &str, words: &[String]) -> Result<(Vec<String>, String), CliError> {
    let usage = |msg: String| CliError::Usage(format!("route add {prefix}: {msg}"));
    let mut via: Vec<String> = Vec::new();
    let mut dev: Option<String> = None;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let value = |what: &str| match words.clone().next() {
            Some(v) if v != "via" && v != "dev" => Ok(v.clone()),
            _ => Err(usage(format!("\"{word}\" needs {what}"))),
        };
        match word.as_str() {
            "via" => {
                let list = value("an address (via IP[,IP...])")?;
                words.next();
                via.extend(
                    list.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            "dev" => {
                let name = value("an interface name (dev IFACE)")?;
                words.next();
                if dev.is_some() {
                    return Err(usage("\"dev\" given twice".to_string()));
                }
                dev = Some(name);
            }
            other if other.parse::<IpAddr>().is_ok() && !via.is_empty() => {
                return Err(usage(format!(
                    "unexpected {other:?} (separate next hops with commas: via IP,IP)"
                )))
            }
            other => {
                return Err(usage(format!(
                    "unexpected {other:?} (expected \"via IP[,IP...]\" and \"dev IFACE\")"
                )))
            }
        }
    }
    if via.is_empty() {
        return Err(usage("missing \"via IP[,IP...]\"".to_string()));
    }
    let Some(dev) = dev else {
        return Err(usage("missing \"dev IFACE\"".to_string()));
    };
    Ok((via, dev))
}

fn customer_request(verb: &CustomerVerb) -> Result<Request, CliError> {
    Ok(match verb {
        CustomerVerb::Add {
            name,
            prefixes,
            interfaces,
            vlan,
            anti_spoofing,
            rate_bps,
            burst_bytes,
        } => {
            let customer = Customer {
                name: name.clone(),
                prefixes: prefixes.clone(),
                interfaces: interfaces.clone(),
                vlan: *vlan,
                anti_spoofing: *anti_spoofing,
                rate_bps: *rate_bps,
                burst_bytes: *burst_bytes,
            };
            let valid = check_customer(&customer)?;
            Request::CustomerAdd(Customer {
                prefixes: valid.prefixes.iter().map(ToString::to_string).collect(),
                ..customer
            })
        }
        CustomerVerb::Del { name } => Request::CustomerDel { name: name.clone() },
        CustomerVerb::Show => Request::CustomerShow,
    })
}

fn acl_request(verb: &AclVerb) -> Result<Request, CliError> {
    Ok(match verb {
        AclVerb::Add {
            priority,
            action,
            src,
            dst,
            proto,
            sport,
            dport,
            in_iface,
        } => {
            let acl = Acl {
                priority: *priority,
                action: match action {
                    ActionArg::Allow => AclAction::Allow,
                    ActionArg::Drop => AclAction::Drop,
                },
                src: src.clone(),
                dst: dst.clone(),
                proto: proto.clone(),
                src_port: sport.clone(),
                dst_port: dport.clone(),
                in_iface: in_iface.clone(),
            };
            let valid = check_acl(&acl)?;
            let ports = |range: Option<(u16, u16)>| {
                range.map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
            };
            Request::AclAdd(Acl {
                src: valid.src.map(|n| n.to_string()),
                dst: valid.dst.map(|n| n.to_string()),
                proto: valid
                    .proto
                    .map(|p| proto_name(p).map_or(p.to_string(), str::to_string)),
                src_port: ports(valid.src_port),
                dst_port: ports(valid.dst_port),
                ..acl
            })
        }
        AclVerb::Del { priority } => Request::AclDel {
            priority: *priority,
        },
        AclVerb::Show => Request::AclShow,
    })
}

fn trace_request(args: &TraceArgs) -> Result<TraceRequest, CliError> {
    check_interface_name("--in", &args.in_iface)
        .map_err(|p| CliError::Usage(format!("trace: {p}")))?;
    let src: IpAddr = args.src.parse().map_err(|_| CliError::BadAddress {
        field: "trace: --src",
        value: args.src.clone(),
    })?;
    let dst: IpAddr = args.dst.parse().map_err(|_| CliError::BadAddress {
        field: "trace: --dst",
        value: args.dst.clone(),
    })?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(CliError::Usage(format!(
            "trace: --src {src} and --dst {dst} differ in address family"
        )));
    }
    if let Some(p) = &args.proto {
        if parse_proto(p).is_none() {
            return Err(CliError::Usage(format!(
                "trace: --proto {p:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255"
            )));
        }
    }
    let mut ports = [None, None];
    for (port, (flag, value)) in ports
        .iter_mut()
        .zip([("--sport", &args.sport), ("--dport", &args.dport)])
    {
        if let Some(v) = value {
            match parse_port_range(v) {
                Ok((a, b)) if a == b => *port = Some(a),
                Ok(_) => {
                    return Err(CliError::Usage(format!(
                        "trace: {flag} {v:?}: expected one port"
                    )))
                }
                Err(e) => return Err(CliError::Usage(format!("trace: {flag} {v:?}: {e}"))),
            }
        }
    }
    if let Some(vlan) = args.vlan {
        if !(1..=4094).contains(&vlan) {
            return Err(CliError::Usage(format!(
                "trace: --vlan {vlan} out of range 1-4094"
            )));
        }
    }
    Ok(TraceRequest {
        in_iface: args.in_iface.clone(),
        src: args.src.clone(),
        dst: args.dst.clone(),
        proto: args.proto.clone(),
        sport: ports[0],
        dport: ports[1],
        vlan: args.vlan,
        ttl: args.ttl,
        size: args.size,
    })
}

fn capture_plan(args: &CaptureArgs) -> Result<Plan, CliError> {
    if let Some(iface) = &args.iface {
        check_interface_name("--iface", iface)
            .map_err(|p| CliError::Usage(format!("capture: {p}")))?;
    }
    if let Some(n) = args.snaplen {
        let max = pop_common::CAPTURE_BYTES;
        if n == 0 || n as usize > max {
            return Err(CliError::Usage(format!(
                "capture: --snaplen {n} out of range 1-{max}"
            )));
        }
    }
    if args.count == Some(0) {
        return Err(CliError::Usage(
            "capture: --count 0: give at least 1".into(),
        ));
    }
    let drop_reason = args.drop.clone().filter(|r| !r.is_empty());
    if let Some(r) = &drop_reason {
        if !pop_common::DropReason::ALL.iter().any(|d| d.label() == r) {
            let all: Vec<&str> = pop_common::DropReason::ALL
                .iter()
                .map(|d| d.label())
                .collect();
            return Err(CliError::Usage(format!(
                "capture: --drop {r}: not a drop reason (one of {})",
                all.join(", ")
            )));
        }
    }
    Ok(Plan::Capture {
        request: CaptureRequest {
            iface: args.iface.clone(),
            customer: args.customer.clone(),
            drops: args.drop.is_some(),
            drop_reason,
            count: args.count,
            snaplen: args.snaplen,
        },
        output: args.write.clone(),
    })
}
