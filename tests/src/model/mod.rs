//! A reference model of pop's packet pipeline, in plain Rust, for the
//! differential fuzzer ([`crate::fuzz`]).
//!
//! It is written from pop's documented packet behaviour (what a router does
//! with a frame, docs/architecture.md "A packet's path"), not from the C: it
//! takes the *desired state* ([`Desired`]: interfaces, routes, customers,
//! local addresses with their prefixes, the `no_route` setting) and a frame,
//! and predicts what the data plane does: the XDP action and its reason, the
//! egress port, the bytes that leave, and the counters that move.
//!
//! "Bytes vs meaning" (smoltcp style): [`parse`] turns bytes into a
//! [`Parsed`] meaning or a verdict; [`Model::predict`] decides on the meaning
//! and emits the output bytes.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use pop_common::{Action, Direction, DropReason, IcmpType, PassReason, NO_IFACE_SLOT};
use serde::{Deserialize, Serialize};

mod parse;
use parse::{be16, classify, parse, Step};
pub use parse::{internet_checksum, Parsed, IPV6_EXT_WALKED};

/// XDP return codes (`enum xdp_action`).
pub const XDP_DROP: u32 = 1;
/// Hand the frame to the kernel.
pub const XDP_PASS: u32 = 2;
/// Send it back out of the receiving port.
pub const XDP_TX: u32 = 3;
/// Send it out of another port.
pub const XDP_REDIRECT: u32 = 4;

/// An interface pop serves: an XDP port, or a VLAN device on one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceSpec {
    /// Its ifindex (made up for a VLAN device).
    pub ifindex: u32,
    /// Counter slot.
    pub slot: u32,
    /// The MAC the host accepts on it.
    pub mac: [u8; 6],
    /// For a VLAN device: its port and VLAN id.
    pub vlan_of: Option<(u32, u16)>,
    /// Source of IPv4 ICMP errors sent from here.
    pub icmp_src_v4: Option<Ipv4Addr>,
    /// Source of ICMPv6 errors sent from here.
    pub icmp_src_v6: Option<Ipv6Addr>,
    /// MACs of macvlan/VRRP devices on top of it.
    pub upper_macs: Vec<[u8; 6]>,
}

/// A next hop as the controller resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHopSpec {
    /// Egress XDP port.
    pub ifindex: u32,
    /// Whether its MAC is known (else: to the kernel, `unresolved`).
    pub resolved: bool,
    /// Neighbour MAC.
    pub dmac: [u8; 6],
    /// Egress MAC.
    pub smac: [u8; 6],
    /// Egress MTU (IP bytes); 0: no check.
    pub mtu: u32,
    /// Egress 802.1Q id; 0: untagged.
    pub vlan: u16,
}

/// A route: a prefix and its next hops (several: ECMP), or a blackhole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Next hops; the model accepts any of them for ECMP.
    pub nexthops: Vec<NextHopSpec>,
    /// Drops (`no_route`) like a missing route.
    pub blackhole: bool,
}

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Length in bits.
    pub len: u8,
}

impl Prefix {
    /// Whether `a` lies inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A customer: its id and prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerSpec {
    /// 1..
    pub id: u32,
    /// Its prefixes.
    pub prefixes: Vec<Prefix>,
    /// The interfaces (ifindexes) where it attaches.
    pub interfaces: Vec<u32>,
    /// Traffic from its interfaces must come from its prefixes.
    pub anti_spoofing: bool,
}

/// An ACL rule: every field optional; first match by priority wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRuleSpec {
    /// Lower first.
    pub priority: u32,
    /// Drop (else allow).
    pub drop: bool,
    /// Source prefix.
    pub src: Option<Prefix>,
    /// Destination prefix.
    pub dst: Option<Prefix>,
    /// IP protocol (IPv6: the header after the extension headers).
    pub proto: Option<u8>,
    /// Inclusive source port range.
    pub src_port: Option<(u16, u16)>,
    /// Inclusive destination port range.
    pub dst_port: Option<(u16, u16)>,
    /// Ingress interface (a VLAN device for tagged frames).
    pub in_iface: Option<u32>,
}

impl AclRuleSpec {
    fn matches(&self, p: &Parsed, ifindex: u32) -> bool {
        let port_ok = |range: Option<(u16, u16)>, pick: fn((u16, u16)) -> u16| {
            range.is_none_or(|(lo, hi)| p.ports.is_some_and(|x| (lo..=hi).contains(&pick(x))))
        };
        self.src.is_none_or(|x| x.contains(p.src))
            && self.dst.is_none_or(|x| x.contains(p.dst))
            && self.proto.is_none_or(|x| x == p.proto)
            && port_ok(self.src_port, |x| x.0)
            && port_ok(self.dst_port, |x| x.1)
            && self.in_iface.is_none_or(|x| x == ifindex)
    }
}

/// The desired state the model judges by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Interfaces pop serves.
    pub ifaces: Vec<IfaceSpec>,
    /// Ports in the device map (redirect targets).
    pub tx_ports: Vec<u32>,
    /// Routes.
    pub routes: Vec<RouteSpec>,
    /// Customers.
    pub customers: Vec<CustomerSpec>,
    /// The host's addresses with their subnet (for directed broadcasts).
    pub local: Vec<Prefix>,
    /// `no_route = "drop"`.
    pub no_route_drop: bool,
    /// ACL rules.
    pub acls: Vec<AclRuleSpec>,
}

/// One counter pop keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Interface slot and action.
    Iface(u32, Action),
    /// Interface slot and drop reason.
    IfaceDrop(u32, DropReason),
    /// Interface slot and pass reason.
    IfacePass(u32, PassReason),
    /// Drop reason.
    Drop(DropReason),
    /// Pass reason.
    Pass(PassReason),
    /// Customer and direction.
    Cust(u32, Direction),
    /// Customer drop reason.
    CustDrop(u32, DropReason),
    /// ICMP errors sent.
    Icmp(IcmpType),
}

/// What the data plane decided, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Forwarded out of another port.
    Redirect,
    /// Forwarded out of the receiving port.
    Tx,
    /// Answered with an ICMP error.
    Icmp(IcmpType),
    /// To the kernel.
    Pass(PassReason),
    /// Dropped.
    Drop(DropReason),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Redirect => write!(f, "redirect"),
            Verdict::Tx => write!(f, "tx"),
            Verdict::Icmp(k) => write!(f, "icmp {}", k.label()),
            Verdict::Pass(r) => write!(f, "pass {}", r.label()),
            Verdict::Drop(r) => write!(f, "drop {}", r.label()),
        }
    }
}

/// The model's prediction for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What it decided.
    pub verdict: Verdict,
    /// The XDP return code.
    pub action: u32,
    /// The egress port of a redirect.
    pub egress: Option<u32>,
    /// The frame as it leaves (unchanged for pass and drop).
    pub out: Vec<u8>,
    /// Counters that move, each by one packet and these bytes.
    pub counters: Vec<(Counter, u64)>,
}

/// A deliberate bug, for the test of the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// Forwarded packets keep their TTL / hop limit.
    TtlNotDecremented,
    /// Forwarded packets are not counted for the receiving customer.
    CustomerInNotCounted,
}

/// The reference model over one desired state.
pub struct Model {
    /// The state it judges by.
    pub desired: Desired,
    /// A deliberate bug (tests of the fuzzer only).
    pub breakage: Option<Breakage>,
}

const ICMP_V4_MAX: usize = 576;
const ICMP_V6_MAX: usize = 1280;

fn lpm<'a, T>(items: impl Iterator<Item = (&'a Prefix, T)>, a: IpAddr) -> Option<T> {
    items
        .filter(|(p, _)| p.contains(a))
        .max_by_key(|(p, _)| p.len)
        .map(|(_, t)| t)
}

impl Model {
    /// A model of `desired`.
    pub fn new(desired: Desired) -> Model {
        Model {
            desired,
            breakage: None,
        }
    }

    fn customer(&self, a: IpAddr) -> u32 {
        lpm(
            self.desired
                .customers
                .iter()
                .flat_map(|c| c.prefixes.iter().map(move |p| (p, c.id))),
            a,
        )
        .unwrap_or(0)
    }

    /// What pop does with `frame` arriving on port `port`: one outcome, or
    /// one per ECMP next hop (any of them is right).
    pub fn predict(&self, frame: &[u8], port: u32) -> Vec<Outcome> {
        let len = frame.len() as u64;
        let unchanged = |verdict: Verdict, counters: Vec<(Counter, u64)>| {
            let action = match verdict {
                Verdict::Pass(_) => XDP_PASS,
                _ => XDP_DROP,
            };
            vec![Outcome {
                verdict,
                action,
                egress: None,
                out: frame.to_vec(),
                counters,
            }]
        };
        let pass = |iface: &IfaceSpec, r: PassReason| {
            unchanged(
                Verdict::Pass(r),
                vec![
                    (Counter::Iface(iface.slot, Action::Pass), len),
                    (Counter::IfacePass(iface.slot, r), len),
                    (Counter::Pass(r), len),
                ],
            )
        };
        let drop = |iface: &IfaceSpec, r: DropReason, customer: u32| {
            let mut c = vec![
                (Counter::Iface(iface.slot, Action::Drop), len),
                (Counter::IfaceDrop(iface.slot, r), len),
                (Counter::Drop(r), len),
            ];
            if customer != 0 {
                c.push((Counter::CustDrop(customer, r), len));
            }
            unchanged(Verdict::Drop(r), c)
        };
        let Some(port_iface) = self
            .desired
            .ifaces
            .iter()
            .find(|i| i.ifindex == port && i.vlan_of.is_none())
        else {
            return unchanged(
                Verdict::Pass(PassReason::UnknownIface),
                vec![
                    (Counter::Iface(NO_IFACE_SLOT, Action::Pass), len),
                    (
                        Counter::IfacePass(NO_IFACE_SLOT, PassReason::UnknownIface),
                        len,
                    ),
                    (Counter::Pass(PassReason::UnknownIface), len),
                ],
            );
        };
        let (step, iface) = parse(&self.desired, frame, port_iface);
        let p = match step {
            Step::Go(p) => p,
            Step::Pass(r) => return pass(iface, r),
            Step::Drop(r) => return drop(iface, r, 0),
        };
        match classify(&p, &self.desired.local) {
            Some(Ok(r)) => return pass(iface, r),
            Some(Err(r)) => return drop(iface, r, 0),
            None => {}
        }
        let cust_out = self.customer(p.src);
        let cust_in = self.customer(p.dst);
        // Anti-spoofing: on a port of a customer that asks for it, the
        // source must lie in the prefixes of a customer attached there.
        let here = |c: &&CustomerSpec| c.interfaces.contains(&iface.ifindex);
        if let Some(guard) = self
            .desired
            .customers
            .iter()
            .filter(here)
            .find(|c| c.anti_spoofing)
        {
            let allowed = self
                .desired
                .customers
                .iter()
                .filter(here)
                .any(|c| c.prefixes.iter().any(|x| x.contains(p.src)));
            if !allowed {
                return drop(iface, DropReason::Spoofed, guard.id);
            }
        }
        let mut rules: Vec<&AclRuleSpec> = self.desired.acls.iter().collect();
        rules.sort_by_key(|r| r.priority);
        if rules
            .iter()
            .find(|r| r.matches(&p, iface.ifindex))
            .is_some_and(|r| r.drop)
        {
            let concerned = if cust_out != 0 { cust_out } else { cust_in };
            return drop(iface, DropReason::Acl, concerned);
        }
        let route = lpm(self.desired.routes.iter().map(|r| (&r.prefix, r)), p.dst);
        let route = match route {
            // A blackhole (discard) route drops whatever `no_route` says.
            Some(r) if r.blackhole => return drop(iface, DropReason::Blackhole, cust_out),
            Some(r) if !r.nexthops.is_empty() => r,
            _ if self.desired.no_route_drop => return drop(iface, DropReason::NoRoute, cust_out),
            _ => return pass(iface, PassReason::NoRoute),
        };
        if p.ttl <= 1 {
            return self.icmp_or_pass(frame, &p, iface, IcmpType::TimeExceeded, 0, PassReason::Ttl);
        }
        route
            .nexthops
            .iter()
            .map(|nh| {
                if !nh.resolved {
                    return pass(iface, PassReason::Unresolved).remove(0);
                }
                if nh.mtu != 0 && p.l3_len > nh.mtu as usize {
                    let kind = match p.dst {
                        IpAddr::V6(_) => IcmpType::PacketTooBig,
                        IpAddr::V4(_) if p.df => IcmpType::FragNeeded,
                        IpAddr::V4(_) => return pass(iface, PassReason::Mtu).remove(0),
                    };
                    return self
                        .icmp_or_pass(frame, &p, iface, kind, nh.mtu, PassReason::Mtu)
                        .remove(0);
                }
                if nh.ifindex != port && !self.desired.tx_ports.contains(&nh.ifindex) {
                    return pass(iface, PassReason::Unresolved).remove(0);
                }
                self.forward(frame, &p, port, iface, nh, cust_out, cust_in)
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        frame: &[u8],
        p: &Parsed,
        port: u32,
        iface: &IfaceSpec,
        nh: &NextHopSpec,
        cust_out: u32,
        cust_in: u32,
    ) -> Outcome {
        let len = frame.len() as u64;
        let mut ip = frame[p.l2_len..].to_vec();
        if self.breakage != Some(Breakage::TtlNotDecremented) {
            match p.dst {
                IpAddr::V4(_) => {
                    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), m the TTL/protocol word.
                    let old = u32::from(be16(&ip, 8));
                    ip[8] -= 1;
                    let new = u32::from(be16(&ip, 8));
                    let hc = u32::from(be16(&ip, 10));
                    let mut sum = (!hc & 0xffff) + (!old & 0xffff) + new;
                    while sum > 0xffff {
                        sum = (sum & 0xffff) + (sum >> 16);
                    }
                    let check = !(sum as u16);
                    ip[10..12].copy_from_slice(&check.to_be_bytes());
                }
                IpAddr::V6(_) => ip[7] -= 1,
            }
        }
        let mut out = Vec::with_capacity(frame.len() + 4);
        out.extend_from_slice(&nh.dmac);
        out.extend_from_slice(&nh.smac);
        if nh.vlan != 0 {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            let pcp_dei = p.tci.map_or(0, |t| t & 0xf000);
            out.extend_from_slice(&(pcp_dei | (nh.vlan & 0x0fff)).to_be_bytes());
        }
        out.extend_from_slice(&frame[p.l2_len - 2..p.l2_len]);
        out.extend_from_slice(&ip);
        let mut counters = Vec::new();
        if cust_out != 0 {
            counters.push((Counter::Cust(cust_out, Direction::Out), len));
        }
        if cust_in != 0 && self.breakage != Some(Breakage::CustomerInNotCounted) {
            counters.push((Counter::Cust(cust_in, Direction::In), len));
        }
        let (verdict, action, egress) = if nh.ifindex == port {
            (Verdict::Tx, XDP_TX, None)
        } else {
            (Verdict::Redirect, XDP_REDIRECT, Some(nh.ifindex))
        };
        let a = if verdict == Verdict::Tx {
            Action::Tx
        } else {
            Action::Redirect
        };
        counters.push((Counter::Iface(iface.slot, a), len));
        Outcome {
            verdict,
            action,
            egress,
            out,
            counters,
        }
    }

    /// Step 7's answer: an ICMP error from the receiving interface, or the
    /// kernel when pop must not or cannot answer.
    fn icmp_or_pass(
        &self,
        frame: &[u8],
        p: &Parsed,
        iface: &IfaceSpec,
        kind: IcmpType,
        mtu: u32,
        otherwise: PassReason,
    ) -> Vec<Outcome> {
        let len = frame.len() as u64;
        let pass = || {
            vec![Outcome {
                verdict: Verdict::Pass(otherwise),
                action: XDP_PASS,
                egress: None,
                out: frame.to_vec(),
                counters: vec![
                    (Counter::Iface(iface.slot, Action::Pass), len),
                    (Counter::IfacePass(iface.slot, otherwise), len),
                    (Counter::Pass(otherwise), len),
                ],
            }]
        };
        if p.non_first_fragment || p.icmp_error {
            return pass();
        }
        let ip = &frame[p.l2_len..p.l2_len + p.l3_len];
        let mut out = Vec::new();
        out.extend_from_slice(&frame[6..12]);
        out.extend_from_slice(&frame[0..6]);
        out.extend_from_slice(&frame[12..p.l2_len]);
        match (p.src, kind) {
            (IpAddr::V4(dst), _) => {
                let Some(src) = iface.icmp_src_v4 else {
                    return pass();
                };
                let quote = &ip[..ip.len().min(ICMP_V4_MAX - 28)];
                let mut h = vec![0x45, 0xc0];
                h.extend_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
                h.extend_from_slice(&src.octets());
                h.extend_from_slice(&dst.octets());
                let c = internet_checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                let (t, code, word) = match kind {
                    IcmpType::FragNeeded => (3u8, 4u8, mtu & 0xffff),
                    _ => (11, 0, 0),
                };
                let mut icmp = vec![t, code, 0, 0];
                icmp.extend_from_slice(&word.to_be_bytes());
                icmp.extend_from_slice(quote);
                let c = internet_checksum(&icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                out.extend(h);
                out.extend(icmp);
            }
            (IpAddr::V6(dst), _) => {
                let Some(src) = iface.icmp_src_v6 else {
                    return pass();
                };
                let quote = &ip[..ip.len().min(ICMP_V6_MAX - 48)];
                let plen = (8 + quote.len()) as u16;
                let (t, word) = match kind {
                    IcmpType::PacketTooBig => (2u8, mtu),
                    _ => (3, 0),
                };
                let mut icmp = vec![t, 0, 0, 0];
                icmp.extend_from_slice(&word.to_be_bytes());
                icmp.extend_from_slice(quote);
                let mut pseudo = src.octets().to_vec();
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&u32::from(plen).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 58]);
                pseudo.extend_from_slice(&icmp);
                let c = internet_checksum(&pseudo);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&plen.to_be_bytes());
                out.extend_from_slice(&[58, 64]);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend(icmp);
            }
        }
        let sent = out.len() as u64;
        vec![Outcome {
            verdict: Verdict::Icmp(kind),
            action: XDP_TX,
            egress: None,
            out,
            counters: vec![
                (Counter::Iface(iface.slot, Action::Tx), len),
                (Counter::Icmp(kind), sent),
            ],
        }]
    }
}
