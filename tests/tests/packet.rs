//! Packet-level tests of pop's XDP program through BPF_PROG_TEST_RUN.
//!
//! Katran/Cilium style: every [`Case`] row is a frame (its meaning, a [`Frame`],
//! kept apart from its bytes, made by [`Frame::emit`] with etherparse), the
//! ingress port, the tables to load, the expected XDP action, a check on the
//! frame as it left, and the counter deltas. Adding a case is adding a row to
//! [`cases`]. Properties that need many packets (ECMP spread, the checksum over
//! every TTL, customer byte counts) have their own tests below the table.
//!
//! Every test runs in a private network namespace with its own veths and its own
//! bpffs directory, so they run in parallel and leave nothing behind.
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Header, Icmpv6Header, IpFragOffset,
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader,
    Ipv6Header, Ipv6RawExtHeader, NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId,
};
use pop_common::{
    Action, Direction, DropReason, IcmpType, PassReason, PopNexthop, Role, CFG_NO_ROUTE_DROP,
    NH_RESOLVED, NH_VALID, ROUTE_BLACKHOLE,
};
use pop_tests::rng::Rng;
use pop_tests::testrun::{in_netns, require_root, veth_pair, Harness, Port, Program};

/// XDP return codes (`enum xdp_action`).
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

fn action_name(action: u32) -> &'static str {
    match action {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------
// The frames: meaning (Frame) and bytes (Frame::emit, then Mangle).
// ---------------------------------------------------------------------------

/// MAC of whoever sent the frame to pop (the upstream router or a customer).
const SENDER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xaa, 0x01];
/// The upstream neighbour's MAC (next hop 2).
const UPSTREAM_NH_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0e, 0x02];
/// The customer router's MAC (next hop 1).
const CUSTOMER_NH_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0c, 0x01];

/// Layer 4 of a test frame.
#[derive(Clone, Copy, Debug)]
enum L4 {
    Udp {
        sport: u16,
        dport: u16,
    },
    Tcp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (in IPv4) or ICMPv6 (in IPv6) of this type and code.
    Icmp {
        type_: u8,
        code: u8,
    },
}

/// Layer 3 of a test frame.
#[derive(Clone, Debug)]
enum L3 {
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        identification: u16,
        /// IPv4 options bytes (a multiple of 4); non-empty makes IHL > 5.
        options: Vec<u8>,
        /// Don't Fragment.
        df: bool,
        l4: L4,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        l4: L4,
    },
    /// An ARP request.
    Arp,
}

/// What a test frame means; [`Frame::emit`] turns it into bytes.
#[derive(Clone, Debug)]
struct Frame {
    /// Destination MAC; `None` is the MAC of the ingress port.
    dst_mac: Option<[u8; 6]>,
    /// 802.1Q tags, outermost first (0, 1 or 2).
    vlans: Vec<u16>,
    l3: L3,
    payload_len: usize,
    /// Fragment of a larger datagram (IPv4 flags, or an IPv6 fragment header).
    fragment: Option<Fragment>,
    /// An IPv6 hop-by-hop options header before layer 4.
    hop_by_hop: bool,
    /// Byte-level damage applied after emitting, for malformed frames.
    mangle: Vec<Mangle>,
}

/// Where a fragment sits in its datagram.
#[derive(Clone, Copy, Debug)]
struct Fragment {
    /// More fragments follow.
    more: bool,
    /// Offset in 8-byte units (0 = the first fragment, which carries the ports).
    offset: u16,
    /// Datagram identification.
    id: u16,
}

/// Damage to a well-formed frame's bytes.
#[derive(Clone, Copy, Debug)]
enum Mangle {
    /// Keep only the first n bytes.
    Truncate(usize),
    /// Set the IPv4 IHL field.
    Ipv4Ihl(u8),
    /// Set the IPv4 version field.
    Ipv4Version(u8),
    /// Set the IPv4 total length field.
    Ipv4TotalLen(u16),
    /// Set the IPv4 header checksum field (network order value).
    Ipv4Checksum(u16),
    /// Make the IPv4 header checksum wrong (add one to it).
    Ipv4ChecksumWrong,
    /// Set the IPv6 payload length field.
    Ipv6PayloadLen(u16),
    /// Append n bytes of Ethernet padding after the IP packet.
    Pad(usize),
}

impl Frame {
    fn v4(src: &str, dst: &str) -> Frame {
        Frame {
            dst_mac: None,
            vlans: vec![],
            l3: L3::Ipv4 {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                ttl: 64,
                identification: 0x1234,
                options: vec![],
                df: true,
                l4: L4::Udp {
                    sport: 40000,
                    dport: 53,
                },
            },
            payload_len: 18,
            fragment: None,
            hop_by_hop: false,
            mangle: vec![],
        }
    }

    fn v6(src: &str, dst: &str) -> Frame {
        Frame {
            dst_mac: None,
            vlans: vec![],
            l3: L3::Ipv6 {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                hop_limit: 64,
                l4: L4::Udp {
                    sport: 40000,
                    dport: 53,
                },
            },
            payload_len: 18,
            fragment: None,
            hop_by_hop: false,
            mangle: vec![],
        }
    }

    fn arp() -> Frame {
        Frame {
            dst_mac: Some([0xff; 6]),
            vlans: vec![],
            l3: L3::Arp,
            payload_len: 0,
            fragment: None,
            hop_by_hop: false,
            mangle: vec![],
        }
    }

    fn ttl(mut self, value: u8) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { ttl, .. } => *ttl = value,
            L3::Ipv6 { hop_limit, .. } => *hop_limit = value,
            L3::Arp => panic!("ARP has no TTL"),
        }
        self
    }

    fn ports(mut self, sport: u16, dport: u16) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { l4, .. } | L3::Ipv6 { l4, .. } => *l4 = L4::Udp { sport, dport },
            L3::Arp => panic!("ARP has no ports"),
        }
        self
    }

    fn tcp(mut self) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { l4, .. } | L3::Ipv6 { l4, .. } => {
                if let L4::Udp { sport, dport } = *l4 {
                    *l4 = L4::Tcp { sport, dport };
                }
            }
            L3::Arp => panic!("ARP has no ports"),
        }
        self
    }

    fn icmp(mut self, type_: u8, code: u8) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { l4, .. } | L3::Ipv6 { l4, .. } => *l4 = L4::Icmp { type_, code },
            L3::Arp => panic!("ARP has no ICMP"),
        }
        self
    }

    fn df(mut self, value: bool) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { df, .. } => *df = value,
            _ => panic!("only IPv4 has DF"),
        }
        self
    }

    fn identification(mut self, value: u16) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { identification, .. } => *identification = value,
            _ => panic!("only IPv4 has an identification"),
        }
        self
    }

    fn options(mut self, bytes: &[u8]) -> Frame {
        match &mut self.l3 {
            L3::Ipv4 { options, .. } => *options = bytes.to_vec(),
            _ => panic!("only IPv4 has options"),
        }
        self
    }

    fn vlan(mut self, ids: &[u16]) -> Frame {
        self.vlans = ids.to_vec();
        self
    }

    fn dst_mac(mut self, mac: [u8; 6]) -> Frame {
        self.dst_mac = Some(mac);
        self
    }

    fn payload(mut self, len: usize) -> Frame {
        self.payload_len = len;
        self
    }

    fn fragment(mut self, more: bool, offset: u16, id: u16) -> Frame {
        self.fragment = Some(Fragment { more, offset, id });
        self
    }

    fn hop_by_hop(mut self) -> Frame {
        self.hop_by_hop = true;
        self
    }

    fn mangle(mut self, m: Mangle) -> Frame {
        self.mangle.push(m);
        self
    }

    /// Offset of the IP header in the emitted frame.
    fn l3_offset(&self) -> usize {
        14 + 4 * self.vlans.len()
    }

    /// The frame's bytes, as it arrives on a port with MAC `port_mac`.
    fn emit(&self, port_mac: [u8; 6]) -> Vec<u8> {
        let dst_mac = self.dst_mac.unwrap_or(port_mac);
        let payload: Vec<u8> = (0..self.payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let mut out = Vec::new();
        let eth = PacketBuilder::ethernet2(SENDER_MAC, dst_mac);
        macro_rules! finish {
            ($step:expr) => {{
                let step = $step;
                match &self.l3 {
                    L3::Ipv4 {
                        src,
                        dst,
                        ttl,
                        identification,
                        options,
                        df,
                        l4,
                    } => {
                        let mut h =
                            Ipv4Header::new(0, *ttl, IpNumber::UDP, src.octets(), dst.octets())
                                .unwrap();
                        h.identification = *identification;
                        h.dont_fragment = *df;
                        if let Some(f) = self.fragment {
                            h.identification = f.id;
                            h.more_fragments = f.more;
                            h.fragment_offset = IpFragOffset::try_new(f.offset).unwrap();
                        }
                        h.options = options.as_slice().try_into().unwrap();
                        let ip = step.ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()));
                        write_l4(ip, *l4, false, &payload, &mut out);
                    }
                    L3::Ipv6 {
                        src,
                        dst,
                        hop_limit,
                        l4,
                    } => {
                        let header = Ipv6Header {
                            hop_limit: *hop_limit,
                            source: src.octets(),
                            destination: dst.octets(),
                            ..Ipv6Header::default()
                        };
                        let mut exts = Ipv6Extensions::default();
                        if self.hop_by_hop {
                            // PadN over the 6 option bytes (RFC 8200 4.2).
                            let options = [1, 4, 0, 0, 0, 0];
                            exts.hop_by_hop_options =
                                Some(Ipv6RawExtHeader::new_raw(IpNumber::UDP, &options).unwrap());
                        }
                        if let Some(f) = self.fragment {
                            exts.fragment = Some(Ipv6FragmentHeader::new(
                                IpNumber::UDP,
                                IpFragOffset::try_new(f.offset).unwrap(),
                                f.more,
                                u32::from(f.id),
                            ));
                        }
                        let ip = step.ip(IpHeaders::Ipv6(header, exts));
                        write_l4(ip, *l4, true, &payload, &mut out);
                    }
                    L3::Arp => step
                        .arp(
                            ArpPacket::new(
                                ArpHardwareId::ETHERNET,
                                EtherType::IPV4,
                                ArpOperation::REQUEST,
                                &SENDER_MAC,
                                &[203, 0, 113, 1],
                                &[0; 6],
                                &[203, 0, 113, 2],
                            )
                            .unwrap(),
                        )
                        .write(&mut out)
                        .unwrap(),
                }
            }};
        }
        let vlan = |id: u16| VlanId::try_new(id).unwrap();
        match self.vlans.as_slice() {
            [] => finish!(eth),
            [one] => finish!(eth.single_vlan(vlan(*one))),
            [outer, inner] => finish!(eth.double_vlan(vlan(*outer), vlan(*inner))),
            more => panic!("{} VLAN tags: at most 2", more.len()),
        }
        let l3 = self.l3_offset();
        // Damage to IPv4 header fields keeps the header checksum right, so
        // the frame is wrong for that reason alone; the checksum's own
        // mangles come after.
        let mut ipv4_header_changed = false;
        for m in &self.mangle {
            match *m {
                Mangle::Truncate(n) => out.truncate(n),
                Mangle::Ipv4Ihl(ihl) => out[l3] = (out[l3] & 0xf0) | (ihl & 0x0f),
                Mangle::Ipv4Version(v) => out[l3] = (out[l3] & 0x0f) | (v << 4),
                Mangle::Ipv4TotalLen(n) => out[l3 + 2..l3 + 4].copy_from_slice(&n.to_be_bytes()),
                Mangle::Ipv4Checksum(_) | Mangle::Ipv4ChecksumWrong => continue,
                Mangle::Ipv6PayloadLen(n) => out[l3 + 4..l3 + 6].copy_from_slice(&n.to_be_bytes()),
                Mangle::Pad(n) => out.extend(std::iter::repeat_n(0u8, n)),
            }
            ipv4_header_changed |= matches!(
                m,
                Mangle::Ipv4Ihl(_) | Mangle::Ipv4Version(_) | Mangle::Ipv4TotalLen(_)
            );
        }
        if ipv4_header_changed {
            let ihl = usize::from(out[l3] & 0x0f).max(5) * 4;
            if out.len() >= l3 + ihl {
                let c = ipv4_header_checksum(&out[l3..l3 + ihl]);
                out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
        }
        for m in &self.mangle {
            match *m {
                Mangle::Ipv4Checksum(c) => out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes()),
                Mangle::Ipv4ChecksumWrong => {
                    let c = u16::from_be_bytes([out[l3 + 10], out[l3 + 11]]).wrapping_add(1);
                    out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
                }
                _ => {}
            }
        }
        out
    }
}

/// Writes `ip` with the transport header `l4` (ICMPv6 when `v6`) and
/// `payload` after it into `out`.
fn write_l4(
    ip: etherparse::PacketBuilderStep<IpHeaders>,
    l4: L4,
    v6: bool,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    match l4 {
        L4::Udp { sport, dport } => ip.udp(sport, dport).write(out, payload),
        L4::Tcp { sport, dport } => ip.tcp(sport, dport, 1, 65535).write(out, payload),
        L4::Icmp { type_, code } if v6 => {
            ip.icmpv6_raw(type_, code, [0, 1, 0, 1]).write(out, payload)
        }
        L4::Icmp { type_, code } => ip.icmpv4_raw(type_, code, [0, 1, 0, 1]).write(out, payload),
    }
    .unwrap()
}

/// RFC 1071 Internet checksum of `bytes` (even length), written independently
/// of the data plane and of etherparse.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 header checksum a fresh computation gives (checksum field zeroed).
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut h = header.to_vec();
    h[10] = 0;
    h[11] = 0;
    internet_checksum(&h)
}

// ---------------------------------------------------------------------------
// The lab inside the namespace and the tables.
// ---------------------------------------------------------------------------

/// The ports of the test namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortId {
    /// Towards transit (slot 0).
    Upstream,
    /// Where the customers attach (slot 1).
    Customer,
    /// A real interface pop does not manage.
    Unmanaged,
}

/// The veths of one test namespace.
struct Lab {
    upstream: Port,
    customer: Port,
    unmanaged: Port,
}

impl Lab {
    /// Creates the veths; call inside `in_netns`.
    fn new() -> Lab {
        let (upstream, unmanaged) = veth_pair("pta", "ptb").expect("creating veth pta/ptb");
        let (customer, _) = veth_pair("ptc", "ptd").expect("creating veth ptc/ptd");
        Lab {
            upstream,
            customer,
            unmanaged,
        }
    }

    fn port(&self, id: PortId) -> &Port {
        match id {
            PortId::Upstream => &self.upstream,
            PortId::Customer => &self.customer,
            PortId::Unmanaged => &self.unmanaged,
        }
    }

    fn slot(id: PortId) -> u32 {
        match id {
            PortId::Upstream => 0,
            PortId::Customer => 1,
            PortId::Unmanaged => panic!("the unmanaged port has no slot"),
        }
    }
}

/// One entry to load into the data plane's maps.
#[derive(Clone, Debug)]
enum Table {
    Iface(PortId, Role),
    TxPort(PortId),
    RouteV4(&'static str, Vec<u32>, u32),
    RouteV6(&'static str, Vec<u32>, u32),
    /// id, egress port, neighbour MAC, flags (NH_*), MTU.
    Nexthop(u32, PortId, [u8; 6], u32, u32),
    CustomerV4(&'static str, u32),
    CustomerV6(&'static str, u32),
    LocalV4(&'static str),
    LocalV6(&'static str),
    Config(u32),
    /// The ICMP error sources of a port (IPv4, IPv6; `None`: none).
    IcmpSrc(PortId, Option<&'static str>, Option<&'static str>),
    /// A macvlan device with this MAC on the port (map `upper_macs`).
    UpperMac(PortId, [u8; 6]),
    /// An ACL rule (priority 10) that drops this IP protocol to this
    /// destination port.
    AclDropDstPort(u8, u16),
    /// Customers (id, prefixes, port, anti-spoofing), compiled into the
    /// anti-spoofing tables by popd's own code, and the anti-spoofing flag on
    /// the ports where one with anti-spoofing attaches.
    AntiSpoofing(Vec<(u32, &'static [&'static str], PortId, bool)>),
}

/// Writes the anti-spoofing tables of `customers` (see [`Table::AntiSpoofing`]).
fn install_anti_spoofing(h: &mut Harness, lab: &Lab, customers: &[(u32, &[&str], PortId, bool)]) {
    let valid: Vec<pop::config::validate::ValidCustomer> = customers
        .iter()
        .map(
            |(id, prefixes, port, anti_spoofing)| pop::config::validate::ValidCustomer {
                name: id.to_string(),
                prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
                interfaces: vec![lab.port(*port).ifindex.to_string()],
                vlan: None,
                anti_spoofing: *anti_spoofing,
                rate_bps: None,
                burst_bytes: None,
            },
        )
        .collect();
    let tables = pop::acl::spoof_tables(&valid, &|n| n.parse().ok(), &|n| n.parse().ok());
    pop::acl::AclMaps::open(h.pin_dir())
        .expect("opening the ACL maps")
        .add_spoof(&tables)
        .expect("writing the anti-spoofing tables");
    for ifindex in tables.ports.keys() {
        let map = h.map_mut(pop_common::maps::IFACES).expect("ifaces");
        let mut ifaces: aya::maps::HashMap<_, u32, pop_common::PopIface> =
            aya::maps::HashMap::try_from(map).expect("ifaces is a hash map");
        let mut value = ifaces.get(ifindex, 0).expect("the port was written");
        value.flags |= pop_common::IFACE_ANTI_SPOOFING;
        ifaces.insert(ifindex, value, 0).expect("writing ifaces");
    }
}

/// Acme (with anti-spoofing) on the customer port holds 10.0.0.0/8 and has
/// sub-allocated 10.1.2.0/24 to beta, on the upstream port.
fn sub_allocated() -> Vec<Table> {
    const ACME: &[&str] = &["198.51.100.0/24", "2001:db8:a::/48", "10.0.0.0/8"];
    const BETA: &[&str] = &["192.0.2.0/24", "10.1.2.0/24"];
    vec![
        Table::CustomerV4("10.0.0.0/8", CUST_ACME),
        Table::CustomerV4("10.1.2.0/24", CUST_BETA),
        Table::AntiSpoofing(vec![
            (CUST_ACME, ACME, PortId::Customer, true),
            (CUST_BETA, BETA, PortId::Upstream, false),
        ]),
    ]
}

/// ifindex recorded for the made-up macvlan devices of [`Table::UpperMac`].
const UPPER_IFINDEX: u32 = 999;
/// A VRRP virtual router MAC (RFC 5798: 00-00-5E-00-01-{VRID}).
const VRRP_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];
/// The MAC of another router on the upstream segment.
const OTHER_ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0e, 0x77];

/// Installs `rules` as the whole ACL, through popd's own compiler.
fn install_acl(h: &Harness, rules: &[pop::config::validate::ValidAcl]) {
    let compiled = pop::acl::compile(rules, &|_| None).expect("compiling the ACL");
    pop::acl::AclMaps::open(h.pin_dir())
        .expect("opening the ACL maps")
        .swap_in(&compiled)
        .expect("installing the ACL");
}

const NH_CUSTOMER: u32 = 1;
const NH_UPSTREAM: u32 = 2;
const CUST_ACME: u32 = 1;
const CUST_BETA: u32 = 2;
const NH_OK: u32 = NH_VALID | NH_RESOLVED;

/// The PoP every case starts from: two managed ports, acme (198.51.100.0/24,
/// 2001:db8:a::/48) behind the customer port, beta (192.0.2.0/24) also there,
/// the Internet (203.0.113.0/24, 2001:db8:f::/48) behind the upstream port.
fn base_tables() -> Vec<Table> {
    use Table::*;
    vec![
        Iface(PortId::Upstream, Role::Upstream),
        Iface(PortId::Customer, Role::Customer),
        TxPort(PortId::Upstream),
        TxPort(PortId::Customer),
        Nexthop(NH_CUSTOMER, PortId::Customer, CUSTOMER_NH_MAC, NH_OK, 1500),
        Nexthop(NH_UPSTREAM, PortId::Upstream, UPSTREAM_NH_MAC, NH_OK, 1500),
        RouteV4("198.51.100.0/24", vec![NH_CUSTOMER], 0),
        RouteV4("192.0.2.0/24", vec![NH_CUSTOMER], 0),
        RouteV6("2001:db8:a::/48", vec![NH_CUSTOMER], 0),
        RouteV4("203.0.113.0/24", vec![NH_UPSTREAM], 0),
        RouteV6("2001:db8:f::/48", vec![NH_UPSTREAM], 0),
        CustomerV4("198.51.100.0/24", CUST_ACME),
        CustomerV6("2001:db8:a::/48", CUST_ACME),
        CustomerV4("192.0.2.0/24", CUST_BETA),
        IcmpSrc(
            PortId::Upstream,
            Some(UPSTREAM_SRC_V4),
            Some(UPSTREAM_SRC_V6),
        ),
        IcmpSrc(
            PortId::Customer,
            Some(CUSTOMER_SRC_V4),
            Some(CUSTOMER_SRC_V6),
        ),
    ]
}

/// The addresses of pop's ports, the sources of its ICMP errors.
const UPSTREAM_SRC_V4: &str = "203.0.113.1";
const UPSTREAM_SRC_V6: &str = "2001:db8:f::1";
const CUSTOMER_SRC_V4: &str = "198.51.100.1";
const CUSTOMER_SRC_V6: &str = "2001:db8:a::1";

/// The ICMP source `base_tables` gives `port` for the frame's family.
fn icmp_source(port: PortId, v6: bool) -> std::net::IpAddr {
    let text = match (port, v6) {
        (PortId::Upstream, false) => UPSTREAM_SRC_V4,
        (PortId::Upstream, true) => UPSTREAM_SRC_V6,
        (PortId::Customer, false) => CUSTOMER_SRC_V4,
        (PortId::Customer, true) => CUSTOMER_SRC_V6,
        (PortId::Unmanaged, _) => panic!("the unmanaged port sends no ICMP"),
    };
    text.parse().unwrap()
}

fn load_tables(h: &mut Harness, lab: &Lab, tables: &[Table]) {
    for t in tables {
        let r = match t {
            Table::Iface(p, role) => h.set_iface(lab.port(*p).ifindex, Lab::slot(*p), *role, 1500),
            Table::TxPort(p) => h.add_tx_port(lab.port(*p).ifindex),
            Table::RouteV4(prefix, nhs, flags) => h.add_route_v4(prefix, nhs, *flags),
            Table::RouteV6(prefix, nhs, flags) => h.add_route_v6(prefix, nhs, *flags),
            Table::Nexthop(id, p, dmac, flags, mtu) => {
                let port = lab.port(*p);
                h.set_nexthop(
                    *id,
                    PopNexthop {
                        ifindex: port.ifindex,
                        flags: *flags,
                        dmac: *dmac,
                        smac: port.mac,
                        mtu: *mtu,
                        ..PopNexthop::default()
                    },
                )
            }
            Table::CustomerV4(prefix, id) => h.add_customer_v4(prefix, *id),
            Table::CustomerV6(prefix, id) => h.add_customer_v6(prefix, *id),
            Table::LocalV4(a) => h.add_local_v4(a.parse().unwrap()),
            Table::LocalV6(a) => h.add_local_v6(a.parse().unwrap()),
            Table::Config(flags) => h.set_config(*flags),
            Table::IcmpSrc(p, v4, v6) => h.set_icmp_sources(
                lab.port(*p).ifindex,
                v4.map(|a| a.parse().unwrap()),
                v6.map(|a| a.parse().unwrap()),
            ),
            Table::UpperMac(p, mac) => h.add_upper_mac(lab.port(*p).ifindex, *mac, UPPER_IFINDEX),
            Table::AclDropDstPort(proto, port) => {
                install_acl(
                    h,
                    &[pop::config::validate::ValidAcl {
                        proto: Some(*proto),
                        dst_port: Some((*port, *port)),
                        ..pop::config::validate::ValidAcl::match_all(
                            10,
                            pop::config::model::AclAction::Drop,
                        )
                    }],
                );
                Ok(())
            }
            Table::AntiSpoofing(customers) => {
                install_anti_spoofing(h, lab, customers);
                Ok(())
            }
        };
        r.unwrap_or_else(|e| panic!("loading {t:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------
// Expectations.
// ---------------------------------------------------------------------------

/// What the frame must look like when it leaves.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// Byte for byte what came in.
    Unchanged,
    /// Forwarded to this next hop: MACs rewritten (dst = the neighbour's, src =
    /// the egress port's), TTL / hop limit - 1, IPv4 checksum correct, all
    /// other bytes untouched.
    Forwarded { dmac: [u8; 6], egress: PortId },
    /// Answered with the ICMP error `kind` (carrying `mtu` where it has one)
    /// from `port`'s address, back to the sender: exactly the bytes of
    /// [`expected_icmp_error`], and checksums etherparse accepts.
    IcmpError {
        kind: IcmpType,
        mtu: u32,
        port: PortId,
    },
}

/// A counter of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    Iface(PortId, Action),
    Drop(DropReason),
    Pass(PassReason),
    Cust(u32, Direction),
    CustDrop(u32, DropReason),
    /// ICMP errors sent; its bytes are the error's, not the frame's.
    Icmp(IcmpType),
}

/// Every counter a case may touch; all not expected must stay at zero.
fn watched_counters() -> Vec<Counter> {
    let mut all = vec![];
    for port in [PortId::Upstream, PortId::Customer] {
        for a in Action::ALL {
            all.push(Counter::Iface(port, *a));
        }
    }
    all.extend(DropReason::ALL.iter().map(|r| Counter::Drop(*r)));
    all.extend(PassReason::ALL.iter().map(|r| Counter::Pass(*r)));
    for id in [CUST_ACME, CUST_BETA] {
        for d in Direction::ALL {
            all.push(Counter::Cust(id, *d));
        }
        all.extend(DropReason::ALL.iter().map(|r| Counter::CustDrop(id, *r)));
    }
    all.extend(IcmpType::ALL.iter().map(|k| Counter::Icmp(*k)));
    all
}

fn read_counter(h: &Harness, c: Counter) -> (u64, u64) {
    let v = match c {
        Counter::Iface(p, a) => h.iface_stats(Lab::slot(p), a),
        Counter::Drop(r) => h.drop_stats(r),
        Counter::Pass(r) => h.pass_stats(r),
        Counter::Cust(id, d) => h.cust_stats(id, d),
        Counter::CustDrop(id, r) => h.cust_drops(id, r),
        Counter::Icmp(k) => h.icmp_stats(k),
    }
    .unwrap_or_else(|e| panic!("reading {c:?}: {e}"));
    (v.packets, v.bytes)
}

/// One row of the packet table.
struct Case {
    name: &'static str,
    frame: Frame,
    ingress: PortId,
    /// Loaded after [`base_tables`].
    extra_tables: Vec<Table>,
    /// Start from an empty data plane instead of [`base_tables`].
    no_base: bool,
    action: u32,
    check: Check,
    /// Counters that go up by one packet of this frame's length.
    counters: Vec<Counter>,
}

impl Case {
    fn new(name: &'static str, frame: Frame, ingress: PortId, action: u32, check: Check) -> Case {
        Case {
            name,
            frame,
            ingress,
            extra_tables: vec![],
            no_base: false,
            action,
            check,
            counters: vec![],
        }
    }

    fn tables(mut self, tables: Vec<Table>) -> Case {
        self.extra_tables = tables;
        self
    }

    fn without_base(mut self) -> Case {
        self.no_base = true;
        self
    }

    fn counts(mut self, counters: &[Counter]) -> Case {
        self.counters = counters.to_vec();
        self
    }
}

const UP: PortId = PortId::Upstream;
const CU: PortId = PortId::Customer;

fn to_customer() -> Check {
    Check::Forwarded {
        dmac: CUSTOMER_NH_MAC,
        egress: CU,
    }
}

fn to_upstream() -> Check {
    Check::Forwarded {
        dmac: UPSTREAM_NH_MAC,
        egress: UP,
    }
}

/// The packet table: one row per case, kept one line per field by hand.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Check::Unchanged;
    use Counter::*;
    use IcmpType::{FragNeeded, PacketTooBig, TimeExceeded};
    use Table::{AclDropDstPort, Config, IcmpSrc, LocalV4, LocalV6, Nexthop, RouteV4, UpperMac};
    let icmp_error = |kind, mtu, port| Check::IcmpError { kind, mtu, port };
    let v4 = Frame::v4;
    let v6 = Frame::v6;
    // Counters, by what they mean for the packet.
    let redirected = |p| Iface(p, Action::Redirect);
    let txed = |p| Iface(p, Action::Tx);
    let passed = |r| [Iface(UP, Action::Pass), Pass(r)];
    let dropped = |r| [Iface(UP, Action::Drop), Drop(r)];
    let acme_in = Cust(CUST_ACME, Direction::In);
    let acme_out = Cust(CUST_ACME, Direction::Out);
    let beta_out = Cust(CUST_BETA, Direction::Out);
    vec![
        // Forwarding: name, frame, ingress, action, output check; then tables and counters.
        Case::new("ipv4 forward", v4("203.0.113.9", "198.51.100.10"), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv4 tcp forward", v4("203.0.113.9", "198.51.100.10").tcp(), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv4 from customer to upstream", v4("192.0.2.5", "203.0.113.9"), CU, XDP_REDIRECT, to_upstream())
            .counts(&[redirected(CU), beta_out]),
        Case::new("ipv4 customer to customer", v4("192.0.2.5", "198.51.100.10"), CU, XDP_TX, to_customer())
            .counts(&[txed(CU), beta_out, acme_in]),
        Case::new("ipv4 back out the ingress port is XDP_TX", v4("203.0.113.9", "203.0.113.77"), UP, XDP_TX, to_upstream())
            .counts(&[txed(UP)]),
        Case::new("ipv4 longest prefix wins", v4("203.0.113.9", "198.51.100.200"), UP, XDP_TX, to_upstream())
            .tables(vec![RouteV4("198.51.100.128/25", vec![NH_UPSTREAM], 0)])
            .counts(&[txed(UP), acme_in]),
        Case::new("ipv4 ttl 2 still forwarded", v4("203.0.113.9", "198.51.100.10").ttl(2), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("exactly the egress mtu forwarded", v4("203.0.113.9", "198.51.100.10").payload(576 - 28), UP, XDP_REDIRECT, to_customer())
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 576)])
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv6 forward", v6("2001:db8:f::9", "2001:db8:a::10"), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv6 tcp forward", v6("2001:db8:f::9", "2001:db8:a::10").tcp(), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv6 from customer to upstream", v6("2001:db8:a::10", "2001:db8:f::9"), CU, XDP_REDIRECT, to_upstream())
            .counts(&[redirected(CU), acme_out]),
        Case::new("ipv6 back out the ingress port is XDP_TX", v6("2001:db8:f::9", "2001:db8:f::77"), UP, XDP_TX, to_upstream())
            .counts(&[txed(UP)]),
        Case::new("ipv4 first fragment forwarded", v4("203.0.113.9", "198.51.100.10").fragment(true, 0, 7), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv4 last fragment forwarded", v4("203.0.113.9", "198.51.100.10").fragment(false, 185, 7), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv6 fragment forwarded", v6("2001:db8:f::9", "2001:db8:a::10").fragment(true, 0, 7), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        // TTL / hop limit: pop answers with ICMP Time Exceeded itself.
        Case::new("ipv4 ttl 1 gets time exceeded", v4("203.0.113.9", "198.51.100.10").ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 ttl 0 gets time exceeded", v4("203.0.113.9", "198.51.100.10").ttl(0), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 ttl 1 from a customer gets time exceeded from its port", v4("192.0.2.5", "203.0.113.9").ttl(1), CU, XDP_TX, icmp_error(TimeExceeded, 0, CU))
            .counts(&[txed(CU), Icmp(TimeExceeded)]),
        Case::new("ipv4 tcp ttl 1 gets time exceeded", v4("203.0.113.9", "198.51.100.10").tcp().ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 echo request ttl 1 gets time exceeded", v4("203.0.113.9", "198.51.100.10").icmp(8, 0).ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 ttl 1 with ethernet padding quotes only the packet", v4("203.0.113.9", "198.51.100.10").payload(0).ttl(1).mangle(Mangle::Pad(14)), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 ttl 1 quote cut at 576 bytes", v4("203.0.113.9", "198.51.100.10").payload(1200).ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv4 first fragment ttl 1 gets time exceeded", v4("203.0.113.9", "198.51.100.10").fragment(true, 0, 7).ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv6 hop limit 1 gets time exceeded", v6("2001:db8:f::9", "2001:db8:a::10").ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv6 hop limit 0 gets time exceeded", v6("2001:db8:f::9", "2001:db8:a::10").ttl(0), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv6 echo request hop limit 1 gets time exceeded", v6("2001:db8:f::9", "2001:db8:a::10").icmp(128, 0).ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        Case::new("ipv6 hop limit 1 quote cut at 1280 bytes", v6("2001:db8:f::9", "2001:db8:a::10").payload(1400).ttl(1), UP, XDP_TX, icmp_error(TimeExceeded, 0, UP))
            .counts(&[txed(UP), Icmp(TimeExceeded)]),
        // ... but never about an ICMP error or a non-first fragment, and not
        // without an address to answer from: the kernel gets those, as before.
        Case::new("ipv4 icmp error with ttl 1 to the kernel", v4("203.0.113.9", "198.51.100.10").icmp(3, 1).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv4 time exceeded with ttl 1 to the kernel", v4("203.0.113.9", "198.51.100.10").icmp(11, 0).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv4 unknown icmp type with ttl 1 to the kernel", v4("203.0.113.9", "198.51.100.10").icmp(42, 0).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv6 icmpv6 error with hop limit 1 to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").icmp(1, 4).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv4 non-first fragment ttl 1 to the kernel", v4("203.0.113.9", "198.51.100.10").fragment(false, 185, 7).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv6 non-first fragment hop limit 1 to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").fragment(false, 185, 7).ttl(1), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv4 ttl 1 without an ipv4 source to the kernel", v4("203.0.113.9", "198.51.100.10").ttl(1), UP, XDP_PASS, Unchanged)
            .tables(vec![IcmpSrc(UP, None, Some(UPSTREAM_SRC_V6))])
            .counts(&passed(PassReason::Ttl)),
        Case::new("ipv6 hop limit 1 without an ipv6 source to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").ttl(1), UP, XDP_PASS, Unchanged)
            .tables(vec![IcmpSrc(UP, Some(UPSTREAM_SRC_V4), None)])
            .counts(&passed(PassReason::Ttl)),
        // No route.
        Case::new("ipv4 no route to the kernel", v4("203.0.113.9", "100.64.0.1"), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::NoRoute)),
        Case::new("ipv6 no route to the kernel", v6("2001:db8:f::9", "2001:db8:99::1"), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::NoRoute)),
        Case::new("ipv4 no route dropped when configured", v4("203.0.113.9", "100.64.0.1"), UP, XDP_DROP, Unchanged)
            .tables(vec![Config(CFG_NO_ROUTE_DROP)])
            .counts(&dropped(DropReason::NoRoute)),
        Case::new("ipv6 no route dropped when configured", v6("2001:db8:f::9", "2001:db8:99::1"), UP, XDP_DROP, Unchanged)
            .tables(vec![Config(CFG_NO_ROUTE_DROP)])
            .counts(&dropped(DropReason::NoRoute)),
        Case::new("no route from a customer counts a customer drop", v4("192.0.2.5", "100.64.0.1"), CU, XDP_DROP, Unchanged)
            .tables(vec![Config(CFG_NO_ROUTE_DROP)])
            .counts(&[Iface(CU, Action::Drop), Drop(DropReason::NoRoute), CustDrop(CUST_BETA, DropReason::NoRoute)]),
        // Anti-spoofing on the customer port, where acme (10.0.0.0/8 besides
        // its own) attaches; acme sub-allocated 10.1.2.0/24 to beta, which
        // attaches at the upstream port.
        Case::new("anti-spoofing passes a block its port's customer sub-allocated elsewhere", v4("10.1.2.142", "203.0.113.9"), CU, XDP_REDIRECT, to_upstream())
            .tables(sub_allocated())
            .counts(&[redirected(CU), beta_out]),
        Case::new("anti-spoofing passes the port's customer's own source", v4("10.9.9.9", "203.0.113.9"), CU, XDP_REDIRECT, to_upstream())
            .tables(sub_allocated())
            .counts(&[redirected(CU), acme_out]),
        Case::new("anti-spoofing drops a source outside its port's customers' prefixes", v4("192.0.2.5", "203.0.113.9"), CU, XDP_DROP, Unchanged)
            .tables(sub_allocated())
            .counts(&[Iface(CU, Action::Drop), Drop(DropReason::Spoofed), CustDrop(CUST_ACME, DropReason::Spoofed)]),
        Case::new("anti-spoofing drops an ipv6 source outside its port's customers' prefixes", v6("2001:db8:f::9", "2001:db8:f::10"), CU, XDP_DROP, Unchanged)
            .tables(sub_allocated())
            .counts(&[Iface(CU, Action::Drop), Drop(DropReason::Spoofed), CustDrop(CUST_ACME, DropReason::Spoofed)]),
        Case::new("anti-spoofing passes the port's customer's own ipv6 source", v6("2001:db8:a::10", "2001:db8:f::9"), CU, XDP_REDIRECT, to_upstream())
            .tables(sub_allocated())
            .counts(&[redirected(CU), acme_out]),
        Case::new("blackhole route drops", v4("203.0.113.9", "100.64.0.1"), UP, XDP_DROP, Unchanged)
            .tables(vec![RouteV4("100.64.0.0/10", vec![NH_UPSTREAM], ROUTE_BLACKHOLE)])
            .counts(&dropped(DropReason::Blackhole)),
        Case::new("blackhole route drops whatever no_route says", v4("203.0.113.9", "100.64.0.1"), UP, XDP_DROP, Unchanged)
            .tables(vec![Config(CFG_NO_ROUTE_DROP), RouteV4("100.64.0.0/10", vec![], ROUTE_BLACKHOLE)])
            .counts(&dropped(DropReason::Blackhole)),
        Case::new("blackhole route from a customer counts a customer drop", v4("192.0.2.5", "100.64.0.1"), CU, XDP_DROP, Unchanged)
            .tables(vec![RouteV4("100.64.0.0/10", vec![], ROUTE_BLACKHOLE)])
            .counts(&[Iface(CU, Action::Drop), Drop(DropReason::Blackhole), CustDrop(CUST_BETA, DropReason::Blackhole)]),
        // Frames for other hosts (a shared segment): only the port's own MAC
        // and its macvlan (VRRP) devices' are routed.
        Case::new("ipv4 to the port's own mac forwarded", v4("203.0.113.9", "198.51.100.10"), UP, XDP_REDIRECT, to_customer())
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv4 to another host's mac dropped", v4("203.0.113.9", "198.51.100.10").dst_mac(OTHER_ROUTER_MAC), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::OtherHost)),
        Case::new("ipv6 to another host's mac dropped", v6("2001:db8:f::9", "2001:db8:a::10").dst_mac(OTHER_ROUTER_MAC), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::OtherHost)),
        Case::new("malformed ipv4 to another host's mac is another host's", v4("203.0.113.9", "198.51.100.10").dst_mac(OTHER_ROUTER_MAC).mangle(Mangle::Ipv4ChecksumWrong), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::OtherHost)),
        Case::new("ipv4 to a macvlan (vrrp) mac of the port forwarded", v4("192.0.2.5", "203.0.113.9").dst_mac(VRRP_MAC), CU, XDP_REDIRECT, to_upstream())
            .tables(vec![UpperMac(CU, VRRP_MAC)])
            .counts(&[redirected(CU), beta_out]),
        Case::new("ipv6 to a macvlan (vrrp) mac of the port forwarded", v6("2001:db8:a::10", "2001:db8:f::9").dst_mac(VRRP_MAC), CU, XDP_REDIRECT, to_upstream())
            .tables(vec![UpperMac(CU, VRRP_MAC)])
            .counts(&[redirected(CU), acme_out]),
        Case::new("a macvlan mac of another port is another host's", v4("203.0.113.9", "198.51.100.10").dst_mac(VRRP_MAC), UP, XDP_DROP, Unchanged)
            .tables(vec![UpperMac(CU, VRRP_MAC)])
            .counts(&dropped(DropReason::OtherHost)),
        Case::new("arp to another host's mac to the kernel", Frame::arp().dst_mac(OTHER_ROUTER_MAC), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::NonIp)),
        // Malformed.
        Case::new("ipv4 bad header checksum dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4ChecksumWrong), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 options with a bad header checksum dropped", v4("203.0.113.9", "198.51.100.10").options(&[1, 1, 1, 0]).mangle(Mangle::Ipv4ChecksumWrong), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 total length below the options dropped", v4("203.0.113.9", "198.51.100.10").options(&[1, 1, 1, 0]).mangle(Mangle::Ipv4TotalLen(22)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("udp ports in the padding after total length 20 are not read", v4("203.0.113.9", "198.51.100.10").ports(40000, 53).mangle(Mangle::Ipv4TotalLen(20)), UP, XDP_DROP, Unchanged)
            .tables(vec![AclDropDstPort(17, 53)])
            .counts(&dropped(DropReason::Malformed)),
        Case::new("tcp header cut by the total length dropped", v4("203.0.113.9", "198.51.100.10").tcp().mangle(Mangle::Ipv4TotalLen(20 + 8)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("acl port rule still matches a whole udp header", v4("203.0.113.9", "198.51.100.10").ports(40000, 53), UP, XDP_DROP, Unchanged)
            .tables(vec![AclDropDstPort(17, 53)])
            .counts(&[Iface(UP, Action::Drop), Drop(DropReason::Acl), CustDrop(CUST_ACME, DropReason::Acl)]),
        Case::new("ipv6 payload length 0 dropped", v6("2001:db8:f::9", "2001:db8:a::10").mangle(Mangle::Ipv6PayloadLen(0)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv6 payload length 0 with hop-by-hop (jumbo) to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").hop_by_hop().mangle(Mangle::Ipv6PayloadLen(0)), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::IpOptions)),
        Case::new("ipv6 udp ports in the padding are not read", v6("2001:db8:f::9", "2001:db8:a::10").ports(40000, 53).mangle(Mangle::Ipv6PayloadLen(4)), UP, XDP_DROP, Unchanged)
            .tables(vec![AclDropDstPort(17, 53)])
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv6 fragment header beyond the payload length dropped", v6("2001:db8:f::9", "2001:db8:a::10").fragment(true, 0, 7).mangle(Mangle::Ipv6PayloadLen(4)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("truncated ipv4 header dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Truncate(14 + 12)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 ihl 4 dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4Ihl(4)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 ihl 0 dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4Ihl(0)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 total length beyond the frame dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4TotalLen(47)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 total length below the header dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4TotalLen(19)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv4 version 6 in an ipv4 ethertype dropped", v4("203.0.113.9", "198.51.100.10").mangle(Mangle::Ipv4Version(6)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("truncated udp header dropped", v4("203.0.113.9", "198.51.100.10").payload(0).mangle(Mangle::Truncate(14 + 20 + 4)).mangle(Mangle::Ipv4TotalLen(24)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("truncated ipv6 header dropped", v6("2001:db8:f::9", "2001:db8:a::10").mangle(Mangle::Truncate(14 + 39)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        Case::new("ipv6 payload length beyond the frame dropped", v6("2001:db8:f::9", "2001:db8:a::10").mangle(Mangle::Ipv6PayloadLen(27)), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Malformed)),
        // To the kernel.
        Case::new("ipv4 options to the kernel", v4("203.0.113.9", "198.51.100.10").options(&[1, 1, 1, 0]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::IpOptions)),
        Case::new("ipv6 hop-by-hop to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").hop_by_hop(), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::IpOptions)),
        Case::new("arp to the kernel", Frame::arp(), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::NonIp)),
        Case::new("802.1Q tagged ipv4 to the kernel", v4("203.0.113.9", "198.51.100.10").vlan(&[100]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Vlan)),
        Case::new("double tagged ipv4 to the kernel", v4("203.0.113.9", "198.51.100.10").vlan(&[100, 200]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Vlan)),
        Case::new("802.1Q tagged ipv6 to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").vlan(&[100]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Vlan)),
        Case::new("ipv4 multicast to the kernel", v4("203.0.113.9", "224.0.0.5").dst_mac([0x01, 0x00, 0x5e, 0, 0, 5]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Multicast)),
        Case::new("ipv4 multicast to a unicast mac to the kernel", v4("203.0.113.9", "239.1.2.3"), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Multicast)),
        Case::new("ipv4 limited broadcast to the kernel", v4("203.0.113.9", "255.255.255.255").dst_mac([0xff; 6]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Multicast)),
        Case::new("ethernet broadcast to the kernel", v4("203.0.113.9", "198.51.100.10").dst_mac([0xff; 6]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Multicast)),
        Case::new("ipv6 multicast to the kernel", v6("2001:db8:f::9", "ff02::1").dst_mac([0x33, 0x33, 0, 0, 0, 1]), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::Multicast)),
        Case::new("ipv4 link-local to the kernel", v4("169.254.1.1", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::LinkLocal)),
        Case::new("ipv6 link-local to the kernel", v6("fe80::1", "2001:db8:a::10"), UP, XDP_PASS, Unchanged)
            .counts(&passed(PassReason::LinkLocal)),
        Case::new("ipv4 for this host to the kernel", v4("203.0.113.9", "198.51.100.1"), UP, XDP_PASS, Unchanged)
            .tables(vec![LocalV4("198.51.100.1")])
            .counts(&passed(PassReason::Local)),
        Case::new("ipv4 directed broadcast of a host subnet to the kernel", v4("203.0.113.9", "198.51.100.255"), UP, XDP_PASS, Unchanged)
            .tables(vec![LocalV4("198.51.100.255")])
            .counts(&passed(PassReason::Local)),
        Case::new("ipv6 for this host to the kernel", v6("2001:db8:f::9", "2001:db8:a::1"), UP, XDP_PASS, Unchanged)
            .tables(vec![LocalV6("2001:db8:a::1")])
            .counts(&passed(PassReason::Local)),
        Case::new("unresolved next hop to the kernel", v4("203.0.113.9", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, CU, [0; 6], NH_VALID, 1500)])
            .counts(&passed(PassReason::Unresolved)),
        Case::new("invalid next hop to the kernel", v4("203.0.113.9", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_RESOLVED, 1500)])
            .counts(&passed(PassReason::Unresolved)),
        Case::new("route without next hops to the kernel", v4("203.0.113.9", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .tables(vec![RouteV4("198.51.100.0/24", vec![], 0)])
            .counts(&passed(PassReason::Unresolved)),
        Case::new("next hop port missing from tx_ports to the kernel", v4("203.0.113.9", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, PortId::Unmanaged, CUSTOMER_NH_MAC, NH_OK, 1500)])
            .counts(&passed(PassReason::Unresolved)),
        // Larger than the egress MTU: Fragmentation Needed / Packet Too Big
        // with that MTU; IPv4 without DF cannot be fragmented here: the kernel's.
        Case::new("ipv4 df larger than the egress mtu gets frag needed", v4("203.0.113.9", "198.51.100.10").payload(600), UP, XDP_TX, icmp_error(FragNeeded, 576, UP))
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 576)])
            .counts(&[txed(UP), Icmp(FragNeeded)]),
        Case::new("ipv4 df 1 byte over a 1400 mtu gets frag needed", v4("192.0.2.5", "203.0.113.9").payload(1401 - 28), CU, XDP_TX, icmp_error(FragNeeded, 1400, CU))
            .tables(vec![Nexthop(NH_UPSTREAM, UP, UPSTREAM_NH_MAC, NH_OK, 1400)])
            .counts(&[txed(CU), Icmp(FragNeeded)]),
        Case::new("ipv4 without df larger than the egress mtu to the kernel", v4("203.0.113.9", "198.51.100.10").payload(600).df(false), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 576)])
            .counts(&passed(PassReason::Mtu)),
        Case::new("ipv6 larger than the egress mtu gets packet too big", v6("2001:db8:f::9", "2001:db8:a::10").payload(1300), UP, XDP_TX, icmp_error(PacketTooBig, 1280, UP))
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 1280)])
            .counts(&[txed(UP), Icmp(PacketTooBig)]),
        Case::new("ipv6 exactly the egress mtu forwarded", v6("2001:db8:f::9", "2001:db8:a::10").payload(1280 - 48), UP, XDP_REDIRECT, to_customer())
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 1280)])
            .counts(&[redirected(UP), acme_in]),
        Case::new("ipv4 icmp error larger than the mtu to the kernel", v4("203.0.113.9", "198.51.100.10").icmp(3, 4).payload(600), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 576)])
            .counts(&passed(PassReason::Mtu)),
        Case::new("ipv6 too big without an ipv6 source to the kernel", v6("2001:db8:f::9", "2001:db8:a::10").payload(1300), UP, XDP_PASS, Unchanged)
            .tables(vec![Nexthop(NH_CUSTOMER, CU, CUSTOMER_NH_MAC, NH_OK, 1280), IcmpSrc(UP, Some(UPSTREAM_SRC_V4), None)])
            .counts(&passed(PassReason::Mtu)),
        Case::new("unknown ingress interface to the kernel", v4("203.0.113.9", "198.51.100.10"), PortId::Unmanaged, XDP_PASS, Unchanged)
            .counts(&[Pass(PassReason::UnknownIface)]),
        Case::new("empty data plane passes everything", v4("203.0.113.9", "198.51.100.10"), UP, XDP_PASS, Unchanged)
            .without_base()
            .counts(&[Pass(PassReason::UnknownIface)]),
        // Martians.
        Case::new("martian source 127.0.0.1 dropped", v4("127.0.0.1", "198.51.100.10"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
        Case::new("martian source 0.0.0.0 dropped", v4("0.0.0.0", "198.51.100.10"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
        Case::new("martian source 240.0.0.1 dropped", v4("240.0.0.1", "198.51.100.10"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
        Case::new("martian destination 127.0.0.1 dropped", v4("203.0.113.9", "127.0.0.1"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
        Case::new("ipv6 loopback source dropped", v6("::1", "2001:db8:a::10"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
        Case::new("ipv6 unspecified source dropped", v6("::", "2001:db8:a::10"), UP, XDP_DROP, Unchanged)
            .counts(&dropped(DropReason::Martian)),
    ]
}

/// The ICMP error pop sends about `input` (a frame of `frame`'s shape), from
/// `src`: built here byte by byte from RFC 792 / RFC 4443 / RFC 1812, apart
/// from the data plane. MACs swapped, VLAN tags kept; IPv4: TOS 0xc0, id 0,
/// DF, TTL 64, at most 576 bytes; IPv6: hop limit 64, at most 1280 bytes; the
/// quote is the offending IP packet as it arrived, cut to fit.
fn expected_icmp_error(
    frame: &Frame,
    input: &[u8],
    kind: IcmpType,
    mtu: u32,
    src: std::net::IpAddr,
) -> Vec<u8> {
    let l2 = frame.l3_offset();
    let ip = &input[l2..];
    let mut out = Vec::new();
    out.extend_from_slice(&input[6..12]);
    out.extend_from_slice(&input[0..6]);
    out.extend_from_slice(&input[12..l2]);
    match src {
        std::net::IpAddr::V4(src) => {
            let l3_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let quote = &ip[..l3_len.min(576 - 28)];
            let total = (28 + quote.len()) as u16;
            let mut header = vec![0x45, 0xc0];
            header.extend_from_slice(&total.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
            header.extend_from_slice(&src.octets());
            header.extend_from_slice(&ip[12..16]);
            let sum = internet_checksum(&header);
            header[10..12].copy_from_slice(&sum.to_be_bytes());
            let (type_, code, word) = match kind {
                IcmpType::TimeExceeded => (11, 0, 0u32),
                IcmpType::FragNeeded => (3, 4, mtu & 0xffff),
                IcmpType::PacketTooBig => panic!("Packet Too Big is ICMPv6"),
            };
            let mut icmp = vec![type_, code, 0, 0];
            icmp.extend_from_slice(&word.to_be_bytes());
            icmp.extend_from_slice(quote);
            let sum = internet_checksum(&icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend(header);
            out.extend(icmp);
        }
        std::net::IpAddr::V6(src) => {
            let l3_len = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let quote = &ip[..l3_len.min(1280 - 48)];
            let payload_len = (8 + quote.len()) as u16;
            let (type_, word) = match kind {
                IcmpType::TimeExceeded => (3, 0u32),
                IcmpType::PacketTooBig => (2, mtu),
                IcmpType::FragNeeded => panic!("Fragmentation Needed is IPv4"),
            };
            let mut icmp = vec![type_, 0, 0, 0];
            icmp.extend_from_slice(&word.to_be_bytes());
            icmp.extend_from_slice(quote);
            // RFC 4443 2.3: the checksum covers the IPv6 pseudo-header.
            let mut pseudo = src.octets().to_vec();
            pseudo.extend_from_slice(&ip[8..24]);
            pseudo.extend_from_slice(&u32::from(payload_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&icmp);
            let sum = internet_checksum(&pseudo);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&payload_len.to_be_bytes());
            out.extend_from_slice(&[58, 64]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&ip[8..24]);
            out.extend(icmp);
        }
    }
    out
}

/// Parses an ICMP error with etherparse and checks its IP header and ICMP
/// checksums by etherparse's own computation; returns the ICMP type's text.
fn verify_icmp_checksums(case: &str, out: &[u8]) -> String {
    let p = SlicedPacket::from_ethernet(out)
        .unwrap_or_else(|e| panic!("{case}: the ICMP error does not parse: {e}"));
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(icmp))) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "{case}: IPv4 header checksum"
            );
            let want = Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
            assert_eq!(icmp.checksum(), want.checksum, "{case}: ICMP checksum");
            format!("{:?}", icmp.icmp_type())
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) => {
            let h = ip.header();
            let want = Icmpv6Header::with_checksum(
                icmp.icmp_type(),
                h.source(),
                h.destination(),
                icmp.payload(),
            )
            .unwrap();
            assert_eq!(icmp.checksum(), want.checksum, "{case}: ICMPv6 checksum");
            format!("{:?}", icmp.icmp_type())
        }
        other => panic!("{case}: not an ICMP error: {other:?}"),
    }
}

/// Checks `out` against `check`, given the frame `input` that went in.
fn check_frame(case: &str, lab: &Lab, frame: &Frame, input: &[u8], out: &[u8], check: Check) {
    match check {
        Check::IcmpError { kind, mtu, port } => {
            let v6 = matches!(frame.l3, L3::Ipv6 { .. });
            let want = expected_icmp_error(frame, input, kind, mtu, icmp_source(port, v6));
            assert_eq!(out, want.as_slice(), "{case}: the ICMP error's bytes");
            let _ = lab;
            verify_icmp_checksums(case, out);
        }
        Check::Unchanged => assert_eq!(out, input, "{case}: the frame must leave unchanged"),
        Check::Forwarded { dmac, egress } => {
            assert_eq!(out.len(), input.len(), "{case}: length changed");
            assert_eq!(out[0..6], dmac, "{case}: dst MAC must be the next hop's");
            assert_eq!(
                out[6..12],
                lab.port(egress).mac,
                "{case}: src MAC must be the egress port's"
            );
            let l3 = frame.l3_offset();
            assert_eq!(out[12..l3], input[12..l3], "{case}: ethertype changed");
            match frame.l3 {
                L3::Ipv4 { ttl, .. } => {
                    let ihl = usize::from(input[l3] & 0x0f) * 4;
                    assert_eq!(out[l3 + 8], ttl - 1, "{case}: TTL must drop by one");
                    let header = &out[l3..l3 + ihl];
                    assert_eq!(
                        u16::from_be_bytes([header[10], header[11]]),
                        ipv4_header_checksum(header),
                        "{case}: IPv4 header checksum after the rewrite"
                    );
                    for i in (0..ihl).filter(|i| ![8, 10, 11].contains(i)) {
                        assert_eq!(
                            out[l3 + i],
                            input[l3 + i],
                            "{case}: IPv4 header byte {i} changed"
                        );
                    }
                    assert_eq!(
                        out[l3 + ihl..],
                        input[l3 + ihl..],
                        "{case}: payload changed"
                    );
                }
                L3::Ipv6 { hop_limit, .. } => {
                    assert_eq!(
                        out[l3 + 7],
                        hop_limit - 1,
                        "{case}: hop limit must drop by one"
                    );
                    assert_eq!(
                        out[l3..l3 + 7],
                        input[l3..l3 + 7],
                        "{case}: IPv6 header changed"
                    );
                    assert_eq!(
                        out[l3 + 8..],
                        input[l3 + 8..],
                        "{case}: IPv6 header or payload changed"
                    );
                }
                L3::Arp => panic!("{case}: ARP is never forwarded"),
            }
        }
    }
}

/// Runs one case on emptied tables; panics with what went wrong.
fn run_case(h: &mut Harness, lab: &Lab, case: &Case) {
    h.reset_tables().expect("emptying the tables");
    if !case.no_base {
        load_tables(h, lab, &base_tables());
    }
    load_tables(h, lab, &case.extra_tables);
    let with_acl = case
        .extra_tables
        .iter()
        .any(|t| matches!(t, Table::AclDropDstPort(..)));
    let watched = watched_counters();
    let before: Vec<_> = watched.iter().map(|c| read_counter(h, *c)).collect();
    let input = case.frame.emit(lab.port(case.ingress).mac);
    let (action, out) = h
        .run(&input, lab.port(case.ingress).ifindex)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    if with_acl {
        install_acl(h, &[]);
    }
    if case
        .extra_tables
        .iter()
        .any(|t| matches!(t, Table::AntiSpoofing(..)))
    {
        pop::acl::AclMaps::open(h.pin_dir())
            .expect("opening the ACL maps")
            .prune_spoof(&Default::default())
            .expect("emptying the anti-spoofing tables");
    }
    assert_eq!(
        action,
        case.action,
        "{}: action {} instead of {}",
        case.name,
        action_name(action),
        action_name(case.action)
    );
    check_frame(case.name, lab, &case.frame, &input, &out, case.check);
    let len = input.len() as u64;
    for (c, (p0, b0)) in watched.iter().zip(before) {
        let (p1, b1) = read_counter(h, *c);
        let expected = u64::from(case.counters.contains(c));
        // ICMP errors count the error's bytes; everything else the frame's.
        let len = match c {
            Counter::Icmp(_) => out.len() as u64,
            _ => len,
        };
        assert_eq!(
            (p1 - p0, b1 - b0),
            (expected, expected * len),
            "{}: counter {c:?} (packets, bytes) delta",
            case.name
        );
    }
    for c in &case.counters {
        assert!(
            watched.contains(c),
            "{}: expected counter {c:?} is not watched",
            case.name
        );
    }
}

#[test]
fn packet_table() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        // One program for all rows (loading one takes seconds); the tables are
        // emptied before each row and counters compared before and after.
        let mut h = Harness::under_test();
        let cases = cases();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "case names must be unique");
        let mut failures = vec![];
        for case in &cases {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_case(&mut h, &lab, case)
            }));
            match result {
                Ok(()) => eprintln!("ok   {}", case.name),
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    eprintln!("FAIL {}: {msg}", case.name);
                    failures.push(case.name);
                }
            }
        }
        assert!(failures.is_empty(), "failed cases: {failures:?}");
        eprintln!("{} cases passed", cases.len());
    });
}

/// Nothing a test creates in its namespace shows up in the root namespace, and
/// commands spawned from the namespace thread run inside it.
#[test]
fn netns_is_private() {
    require_root();
    let root_before = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("running ip");
    let (a, b) = in_netns(|| {
        let (a, b) = veth_pair("pta", "ptb").expect("creating veth pta/ptb");
        // `port` cross-checks `ip`'s ifindex with if_nametoindex in this thread.
        let again = pop_tests::testrun::port("pta").expect("pta visible to this thread");
        assert_eq!(again, a);
        (a, b)
    });
    assert_ne!(a.ifindex, b.ifindex);
    assert_ne!(a.mac, b.mac);
    let root = std::process::Command::new("ip")
        .args(["link", "show", "dev", "pta"])
        .output()
        .expect("running ip");
    assert!(
        !root.status.success(),
        "veth pta leaked into the root namespace"
    );
    assert!(root_before.status.success());
}

/// Next hops 11..=14 on the customer port, each with its own MAC, behind
/// 10.0.0.0/8 and 2001:db8:e::/48. Returns the MACs in next-hop order.
fn load_ecmp_routes(h: &mut Harness, lab: &Lab) -> Vec<[u8; 6]> {
    load_tables(h, lab, &base_tables());
    let nh_ids = [11u32, 12, 13, 14];
    let macs: Vec<[u8; 6]> = nh_ids
        .iter()
        .map(|id| [0x02, 0, 0, 0, 0x0e, *id as u8])
        .collect();
    for (id, mac) in nh_ids.iter().zip(&macs) {
        load_tables(h, lab, &[Table::Nexthop(*id, CU, *mac, NH_OK, 1500)]);
    }
    load_tables(
        h,
        lab,
        &[
            Table::RouteV4("10.0.0.0/8", nh_ids.to_vec(), 0),
            Table::RouteV6("2001:db8:e::/48", nh_ids.to_vec(), 0),
        ],
    );
    macs
}

/// Forwards `frame` and returns the index of the next hop whose MAC it got.
fn ecmp_pick(h: &Harness, ingress: &Port, macs: &[[u8; 6]], frame: &Frame) -> usize {
    let (action, out) = h.run(&frame.emit(ingress.mac), ingress.ifindex).unwrap();
    assert_eq!(action, XDP_REDIRECT, "{frame:?}");
    let dmac: [u8; 6] = out[0..6].try_into().unwrap();
    macs.iter()
        .position(|m| *m == dmac)
        .unwrap_or_else(|| panic!("dst MAC {dmac:02x?} is no next hop: {frame:?}"))
}

fn ecmp_bases() -> [(&'static str, Frame); 2] {
    [
        ("ipv4", Frame::v4("203.0.113.9", "10.1.2.3")),
        ("ipv6", Frame::v6("2001:db8:f::9", "2001:db8:e::3")),
    ]
}

/// ECMP: 4 next hops, 2000 flows with random ports: every next hop is used,
/// each gets 15%..35% of the flows, and a flow always takes the same next hop.
#[test]
fn ecmp_spreads_flows_and_keeps_them_sticky() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        let macs = load_ecmp_routes(&mut h, &lab);
        for (family, base) in ecmp_bases() {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut per_nh = [0usize; 4];
            let flows = 2000;
            for _ in 0..flows {
                let frame = base
                    .clone()
                    .ports((rng.next() >> 48) as u16, (rng.next() >> 48) as u16);
                let first = ecmp_pick(&h, &lab.upstream, &macs, &frame);
                for _ in 0..3 {
                    assert_eq!(
                        ecmp_pick(&h, &lab.upstream, &macs, &frame),
                        first,
                        "{family}: flow {frame:?} changed next hop"
                    );
                }
                per_nh[first] += 1;
            }
            eprintln!("{family} ECMP flows per next hop: {per_nh:?}");
            for (i, n) in per_nh.iter().enumerate() {
                let share = *n as f64 / flows as f64;
                assert!(
                    (0.15..=0.35).contains(&share),
                    "{family}: next hop {i} got {:.1}% of the flows ({per_nh:?})",
                    share * 100.0
                );
            }
        }
    });
}

/// ECMP keeps the fragments of one datagram on one next hop: the first
/// fragment carries the ports, the later ones do not, so the hash of a
/// fragment must not use them (as the kernel's multipath hash does not).
#[test]
fn ecmp_keeps_fragments_together() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        let macs = load_ecmp_routes(&mut h, &lab);
        for (family, base) in ecmp_bases() {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            let mut used = [false; 4];
            for _ in 0..200 {
                let id = (rng.next() >> 48) as u16;
                let first = base
                    .clone()
                    .ports((rng.next() >> 48) as u16, (rng.next() >> 48) as u16)
                    .fragment(true, 0, id);
                // The bytes where ports would be are payload in a later fragment.
                let later = base
                    .clone()
                    .ports((rng.next() >> 48) as u16, (rng.next() >> 48) as u16)
                    .fragment(false, 185, id);
                let nh = ecmp_pick(&h, &lab.upstream, &macs, &first);
                assert_eq!(
                    ecmp_pick(&h, &lab.upstream, &macs, &later),
                    nh,
                    "{family}: fragments of datagram {id} took different next hops"
                );
                used[nh] = true;
            }
            // Fragments still hash on addresses: one pair of hosts, one next hop.
            assert_eq!(used.iter().filter(|u| **u).count(), 1, "{family}: {used:?}");
        }
    });
}

/// Customer counters: `out` by source prefix, `in` by destination prefix,
/// packets and bytes exactly what was sent; other customers see nothing.
#[test]
fn customer_counters_are_exact() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        load_tables(&mut h, &lab, &base_tables());
        let mut sent_in = (0u64, 0u64);
        let mut sent_out = (0u64, 0u64);
        let send = |frame: Frame, ingress: &Port, total: &mut (u64, u64)| {
            let bytes = frame.emit(ingress.mac);
            let (action, _) = h.run(&bytes, ingress.ifindex).unwrap();
            assert_eq!(action, XDP_REDIRECT, "{frame:?}");
            total.0 += 1;
            total.1 += bytes.len() as u64;
        };
        for (i, size) in [0usize, 1, 18, 100, 512, 1400].iter().enumerate() {
            let i = i as u16;
            send(
                Frame::v4("203.0.113.9", "198.51.100.10")
                    .payload(*size)
                    .ports(i, 80),
                &lab.upstream,
                &mut sent_in,
            );
            send(
                Frame::v6("2001:db8:f::9", "2001:db8:a::77").payload(*size),
                &lab.upstream,
                &mut sent_in,
            );
            send(
                Frame::v4("198.51.100.10", "203.0.113.9").payload(*size + 3),
                &lab.customer,
                &mut sent_out,
            );
            send(
                Frame::v6("2001:db8:a::77", "2001:db8:f::9").payload(*size + 5),
                &lab.customer,
                &mut sent_out,
            );
        }
        let get = |id, d| {
            let c = h.cust_stats(id, d).unwrap();
            (c.packets, c.bytes)
        };
        assert_eq!(get(CUST_ACME, Direction::In), sent_in, "acme in");
        assert_eq!(get(CUST_ACME, Direction::Out), sent_out, "acme out");
        assert_eq!(get(CUST_BETA, Direction::In), (0, 0), "beta in");
        assert_eq!(get(CUST_BETA, Direction::Out), (0, 0), "beta out");
        let redirected_up = h.iface_stats(0, Action::Redirect).unwrap();
        assert_eq!((redirected_up.packets, redirected_up.bytes), sent_in);
        let redirected_cust = h.iface_stats(1, Action::Redirect).unwrap();
        assert_eq!((redirected_cust.packets, redirected_cust.bytes), sent_out);
    });
}

/// The incremental IPv4 checksum update (RFC 1624) gives exactly what a fresh
/// computation gives, for every TTL 2..=255 and for header checksums on both
/// sides of the 0x0000/0xFFFF end-around-carry edge.
#[test]
fn ipv4_checksum_after_rewrite() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        load_tables(&mut h, &lab, &base_tables());
        let ingress = lab.upstream.clone();
        let l3 = 14;
        let forward = |frame: &Frame| -> (Vec<u8>, Vec<u8>) {
            let input = frame.emit(ingress.mac);
            let (action, out) = h.run(&input, ingress.ifindex).unwrap();
            assert_eq!(action, XDP_REDIRECT, "{frame:?}");
            (input, out)
        };
        let base = Frame::v4("203.0.113.9", "198.51.100.10");
        for ttl in 2..=255u8 {
            let frame = base.clone().ttl(ttl);
            let (input, out) = forward(&frame);
            check_frame(
                &format!("ttl {ttl}"),
                &lab,
                &frame,
                &input,
                &out,
                to_customer(),
            );
        }

        // Find identifications that put the incoming checksum near the edges.
        let checksum_with = |ttl: u8, id: u16| {
            let bytes = base.clone().ttl(ttl).identification(id).emit(ingress.mac);
            u16::from_be_bytes([bytes[l3 + 10], bytes[l3 + 11]])
        };
        let targets = [
            0x0000u16, 0x0001, 0x00fe, 0x00ff, 0x0100, 0x0101, 0xfefe, 0xfeff, 0xff00, 0xff01,
            0xfffe,
        ];
        let mut tested = 0;
        for ttl in [2u8, 64, 128, 255] {
            for target in targets {
                // The checksum is linear in the identification: search it.
                let id = (0..=u16::MAX)
                    .find(|id| checksum_with(ttl, *id) == target)
                    .unwrap_or_else(|| panic!("no identification gives checksum {target:#06x}"));
                let frame = base.clone().ttl(ttl).identification(id);
                let (input, out) = forward(&frame);
                assert_eq!(u16::from_be_bytes([input[l3 + 10], input[l3 + 11]]), target);
                check_frame(
                    &format!("ttl {ttl} checksum {target:#06x}"),
                    &lab,
                    &frame,
                    &input,
                    &out,
                    to_customer(),
                );
                tested += 1;
            }
        }
        assert_eq!(tested, 4 * targets.len());

        // 0xFFFF is the other encoding of zero (-0): a sender may put it where a
        // fresh computation gives 0x0000. The result must still verify.
        let id = (0..=u16::MAX)
            .find(|id| checksum_with(64, *id) == 0x0000)
            .unwrap();
        let frame = base
            .clone()
            .identification(id)
            .mangle(Mangle::Ipv4Checksum(0xffff));
        let (input, out) = forward(&frame);
        assert_eq!(internet_checksum(&input[l3..l3 + 20]), 0, "input verifies");
        assert_eq!(
            internet_checksum(&out[l3..l3 + 20]),
            0,
            "header with checksum -0 must verify after the rewrite"
        );
        assert_eq!(out[l3 + 8], 63);
    });
}

/// Cost of one BPF_PROG_TEST_RUN per path, next to the XDP_PASS reference.
/// Prints a table; asserts only the actions (timings are noisy here).
#[test]
fn testrun_cost() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        load_tables(&mut h, &lab, &base_tables());
        let up = lab.upstream.clone();
        // Repeated runs see the previous run's output: with the next hop's
        // MAC the ingress port's own, it stays a frame pop routes (another
        // MAC would be dropped as other_host after the first run).
        load_tables(
            &mut h,
            &lab,
            &[Table::Nexthop(NH_CUSTOMER, CU, up.mac, NH_OK, 1500)],
        );
        let v4 = Frame::v4("203.0.113.9", "198.51.100.10")
            .ttl(255)
            .emit(up.mac);
        let v6 = Frame::v6("2001:db8:f::9", "2001:db8:a::10")
            .ttl(255)
            .emit(up.mac);
        let arp = Frame::arp().emit(up.mac);
        let other_host = Frame::v4("203.0.113.9", "198.51.100.10")
            .dst_mac(OTHER_ROUTER_MAC)
            .emit(up.mac);
        let rows: [(&str, Program, &[u8], u32); 5] = [
            ("xdp_pass (reference)", Program::Pass, &v4, XDP_PASS),
            ("ipv4 forward", Program::Pop, &v4, XDP_REDIRECT),
            ("ipv6 forward", Program::Pop, &v6, XDP_REDIRECT),
            ("non-ip pass (arp)", Program::Pop, &arp, XDP_PASS),
            ("other host's mac drop", Program::Pop, &other_host, XDP_DROP),
        ];
        for (name, program, frame, expected) in rows {
            let (action, _) = h.run_program(program, frame, up.ifindex).unwrap();
            assert_eq!(action, expected, "{name}: {}", action_name(action));
        }
        // Interleave rounds so drift on the machine hits every row alike; keep
        // the median round per row.
        let rounds = 5;
        let runs_per_round = 20_000;
        let mut samples = vec![vec![]; rows.len()];
        for _ in 0..rounds {
            for (i, (name, program, frame, _)) in rows.iter().enumerate() {
                let ns = h
                    .ns_per_packet(*program, frame, up.ifindex, runs_per_round)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                samples[i].push(ns);
            }
        }
        let median: Vec<f64> = samples
            .iter_mut()
            .map(|s| {
                s.sort_by(f64::total_cmp);
                s[s.len() / 2]
            })
            .collect();
        eprintln!(
            "\nBPF_PROG_TEST_RUN cost, {}-byte frames, median of {rounds} rounds x {runs_per_round} runs",
            v4.len()
        );
        eprintln!("{:<22} {:>12} {:>16}", "path", "ns/packet", "x xdp_pass");
        for (i, (name, ..)) in rows.iter().enumerate() {
            eprintln!(
                "{:<22} {:>12.1} {:>16.2}",
                name,
                median[i],
                median[i] / median[0]
            );
        }
        // The counters prove the timed runs took the expected paths.
        let redirected = h.iface_stats(0, Action::Redirect).unwrap();
        assert!(redirected.packets >= 2 * u64::from(rounds * runs_per_round));
        let non_ip = h.pass_stats(PassReason::NonIp).unwrap();
        assert!(non_ip.packets >= u64::from(rounds * runs_per_round));
        let other_host = h.drop_stats(DropReason::OtherHost).unwrap();
        assert!(other_host.packets >= u64::from(rounds * runs_per_round));
    });
}

/// The verifier's limit on instructions processed per program load.
const VERIFIER_LIMIT_INSNS: u32 = 1_000_000;

/// pop_xdp stays far from the verifier's complexity limit (Cilium's
/// "complexity tests"): a change that costs the verifier half its budget fails
/// here, before one more branch makes the program impossible to load.
#[test]
fn verifier_complexity_budget() {
    require_root();
    let h = Harness::under_test();
    let insns = h
        .verified_instructions(Program::Pop)
        .expect("reading verified_insns");
    eprintln!(
        "pop_xdp: the verifier processed {insns} instructions ({:.1}% of its limit)",
        f64::from(insns) * 100.0 / f64::from(VERIFIER_LIMIT_INSNS)
    );
    assert!(
        insns < VERIFIER_LIMIT_INSNS / 2,
        "pop_xdp costs the verifier {insns} instructions, over half its limit of \
         {VERIFIER_LIMIT_INSNS}: split a stage or bound a loop before it stops loading"
    );
}

/// The ICMP errors for every quote length: IPv4 packets of 28..=620 bytes and
/// IPv6 packets of 48..=1340 bytes with TTL 1, across the cut at 576 / 1280
/// bytes and every length modulo 4 (the checksum's last, partial word),
/// untagged. Each must be exactly [`expected_icmp_error`], checksums included.
#[test]
fn icmp_errors_for_every_quote_length() {
    require_root();
    in_netns(|| {
        let lab = Lab::new();
        let mut h = Harness::under_test();
        load_tables(&mut h, &lab, &base_tables());
        let up = lab.upstream.clone();
        let mut sent = 0u64;
        for (v6, max_payload) in [(false, 592usize), (true, 1292)] {
            for payload in 0..=max_payload {
                let frame = if v6 {
                    Frame::v6("2001:db8:f::9", "2001:db8:a::10")
                } else {
                    Frame::v4("203.0.113.9", "198.51.100.10")
                }
                .payload(payload)
                .ttl(1);
                let input = frame.emit(up.mac);
                let (action, out) = h.run(&input, up.ifindex).unwrap();
                let case = format!("{} payload {payload}", if v6 { "ipv6" } else { "ipv4" });
                assert_eq!(action, XDP_TX, "{case}: {}", action_name(action));
                let want = expected_icmp_error(
                    &frame,
                    &input,
                    IcmpType::TimeExceeded,
                    0,
                    icmp_source(PortId::Upstream, v6),
                );
                assert_eq!(out, want, "{case}");
                verify_icmp_checksums(&case, &out);
                let cap = if v6 { 1280 } else { 576 };
                assert!(out.len() - 14 <= cap, "{case}: {} bytes", out.len() - 14);
                sent += 1;
            }
        }
        assert_eq!(
            h.icmp_stats(IcmpType::TimeExceeded).unwrap().packets,
            sent,
            "every error counted"
        );
    });
}

/// Pins the calling thread to one CPU: the ICMP rate limit is per CPU.
fn pin_to_one_cpu() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("CPU 0 in the set");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .expect("sched_setaffinity to CPU 0");
}

/// The ICMP error rate limit on its own: with 1 error per second and a burst
/// of 5, a quick series of TTL-1 packets gets exactly 5 errors, the rest are
/// dropped and counted as icmp_rate_limited; a second later one more token
/// has come. Packets that need no ICMP error are never limited by it.
#[test]
fn icmp_rate_limit_per_cpu() {
    require_root();
    in_netns(|| {
        pin_to_one_cpu();
        let lab = Lab::new();
        let mut h = Harness::under_test();
        load_tables(&mut h, &lab, &base_tables());
        h.set_icmp_limit(1, 5).unwrap();
        let up = lab.upstream.clone();
        let expired = Frame::v4("203.0.113.9", "198.51.100.10")
            .ttl(1)
            .emit(up.mac);
        let too_big = Frame::v6("2001:db8:f::9", "2001:db8:a::10")
            .payload(1500)
            .emit(up.mac);
        let forwarded = Frame::v4("203.0.113.9", "198.51.100.10").emit(up.mac);
        let run = |frame: &[u8]| h.run(frame, up.ifindex).unwrap().0;
        let started = std::time::Instant::now();
        let mut actions = vec![];
        for i in 0..10 {
            actions.push(run(if i % 2 == 0 { &expired } else { &too_big }));
            assert_eq!(run(&forwarded), XDP_REDIRECT, "forwarding is never limited");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(900),
            "the runs took {:?}: too slow to test a 1/s rate",
            started.elapsed()
        );
        assert_eq!(
            actions,
            [vec![XDP_TX; 5], vec![XDP_DROP; 5]].concat(),
            "burst 5, then over the rate"
        );
        let limited = h.drop_stats(DropReason::IcmpRateLimited).unwrap();
        assert_eq!(limited.packets, 5);
        let sent = h.icmp_stats(IcmpType::TimeExceeded).unwrap().packets
            + h.icmp_stats(IcmpType::PacketTooBig).unwrap().packets;
        assert_eq!(sent, 5);
        // One token per second: after 1.1 s one more error, then none.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(run(&expired), XDP_TX, "a token came back after 1 s");
        assert_eq!(run(&expired), XDP_DROP, "only one");
        assert_eq!(
            h.drop_stats(DropReason::IcmpRateLimited).unwrap().packets,
            6
        );
        // No limit (rate 0, the data plane before popd configures it).
        h.set_icmp_limit(0, 0).unwrap();
        for _ in 0..20 {
            assert_eq!(h.run(&expired, up.ifindex).unwrap().0, XDP_TX);
        }
    });
}
