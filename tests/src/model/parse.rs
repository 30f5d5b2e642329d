//! The model's parsing: a frame's bytes to their meaning ([`Parsed`]), or the
//! verdict of a frame pop does not route (steps 1-3 of the packet path).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pop_common::{DropReason, PassReason};

use super::{Desired, IfaceSpec, Prefix};

/// The meaning of a frame that pop would route further.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// Bytes before the IP header (14 or 18).
    pub l2_len: usize,
    /// The 802.1Q TCI of a served VLAN tag.
    pub tci: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP header + payload, as the IP header says.
    pub l3_len: usize,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 Don't Fragment (IPv6: always true).
    pub df: bool,
    /// Not the first fragment of a datagram.
    pub non_first_fragment: bool,
    /// An ICMP error, an ICMP type unknown, or an ICMP header cut off.
    pub icmp_error: bool,
    /// Transport protocol.
    pub proto: u8,
    /// TCP or UDP ports, where the packet has them.
    pub ports: Option<(u16, u16)>,
}
pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// RFC 1071 Internet checksum of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(super) enum Step {
    Go(Parsed),
    Pass(PassReason),
    Drop(DropReason),
}

/// Whether an ICMP (v4) type is an error or unknown, i.e. never answered.
fn icmp4_not_answered(type_: u8) -> bool {
    // RFC 792/950/1256 informational messages: echo reply/request, router
    // advertisement/solicitation, timestamp, information, address mask.
    !matches!(type_, 0 | 8 | 9 | 10 | 13..=18)
}

/// IPv4: the header checks of a router (RFC 1812 5.2.2) and the transport
/// header, read only inside the packet.
fn parse_v4(ip: &[u8], l2_len: usize, tci: Option<u16>) -> Step {
    if ip.len() < 20 {
        return Step::Drop(DropReason::Malformed);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Step::Drop(DropReason::Malformed);
    }
    let total = usize::from(be16(ip, 2));
    if total < ihl || total > ip.len() {
        return Step::Drop(DropReason::Malformed);
    }
    if internet_checksum(&ip[..ihl]) != 0 {
        return Step::Drop(DropReason::Malformed);
    }
    if ihl > 20 {
        return Step::Pass(PassReason::IpOptions);
    }
    let frag = be16(ip, 6);
    let non_first = frag & 0x1fff != 0;
    let l4 = &ip[20..total];
    let mut icmp_error = false;
    let mut ports = None;
    if !non_first {
        match ip[9] {
            1 => icmp_error = l4.is_empty() || icmp4_not_answered(l4[0]),
            6 if l4.len() < 20 => return Step::Drop(DropReason::Malformed),
            17 if l4.len() < 8 => return Step::Drop(DropReason::Malformed),
            6 | 17 => ports = Some((be16(l4, 0), be16(l4, 2))),
            _ => {}
        }
    }
    Step::Go(Parsed {
        l2_len,
        tci,
        src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
        l3_len: total,
        ttl: ip[8],
        df: frag & 0x4000 != 0,
        non_first_fragment: non_first,
        icmp_error,
        proto: ip[9],
        ports,
    })
}

/// How many extension headers pop walks before leaving the rest to the kernel.
pub const IPV6_EXT_WALKED: usize = 6;

fn parse_v6(ip: &[u8], l2_len: usize, tci: Option<u16>) -> Step {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Step::Drop(DropReason::Malformed);
    }
    let payload = usize::from(be16(ip, 4));
    if 40 + payload > ip.len() {
        return Step::Drop(DropReason::Malformed);
    }
    // Payload length 0 is a jumbogram's, whose option is hop-by-hop.
    if payload == 0 && ip[6] != 0 {
        return Step::Drop(DropReason::Malformed);
    }
    let pkt = &ip[..40 + payload];
    let mut next = ip[6];
    let mut at = 40;
    let mut non_first = false;
    for _ in 0..IPV6_EXT_WALKED {
        match next {
            0 => return Step::Pass(PassReason::IpOptions),
            43 | 60 => {
                if at + 2 > pkt.len() {
                    return Step::Drop(DropReason::Malformed);
                }
                next = pkt[at];
                at += (usize::from(pkt[at + 1]) + 1) * 8;
            }
            44 => {
                if at + 8 > pkt.len() {
                    return Step::Drop(DropReason::Malformed);
                }
                next = pkt[at];
                non_first |= be16(pkt, at + 2) & 0xfff8 != 0;
                at += 8;
            }
            _ => break,
        }
    }
    if matches!(next, 0 | 43 | 44 | 60) {
        return Step::Pass(PassReason::IpOptions);
    }
    if at > pkt.len() {
        return Step::Drop(DropReason::Malformed);
    }
    let l4 = &pkt[at..];
    let mut icmp_error = false;
    let mut ports = None;
    if !non_first {
        match next {
            // RFC 4443 2.1: types below 128 are errors.
            58 => icmp_error = l4.is_empty() || l4[0] < 128,
            6 if l4.len() < 20 => return Step::Drop(DropReason::Malformed),
            17 if l4.len() < 8 => return Step::Drop(DropReason::Malformed),
            6 | 17 => ports = Some((be16(l4, 0), be16(l4, 2))),
            _ => {}
        }
    }
    let addr = |o: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[o..o + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    Step::Go(Parsed {
        l2_len,
        tci,
        src: addr(8),
        dst: addr(24),
        l3_len: 40 + payload,
        ttl: ip[7],
        df: true,
        non_first_fragment: non_first,
        icmp_error,
        proto: next,
        ports,
    })
}

/// What step 3 makes of the addresses: `None` to go on.
pub(super) fn classify(p: &Parsed, local: &[Prefix]) -> Option<Result<PassReason, DropReason>> {
    let is_local = |d: IpAddr| {
        local.iter().any(|l| {
            l.addr == d
                || matches!((l.addr, d), (IpAddr::V4(_), IpAddr::V4(d))
                    if l.len < 31 && l.contains(IpAddr::V4(d))
                    && u32::from(d) | (u32::MAX >> l.len) == u32::from(d))
        })
    };
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if d.is_multicast() || d.is_broadcast() {
                return Some(Ok(PassReason::Multicast));
            }
            let (so, dof) = (s.octets()[0], d.octets()[0]);
            // Never valid on the wire: "this network", loopback, class E (and
            // a multicast source).
            if so == 0 || so == 127 || so >= 224 || dof == 0 || dof == 127 || dof >= 240 {
                return Some(Err(DropReason::Martian));
            }
            if s.is_link_local() || d.is_link_local() {
                return Some(Ok(PassReason::LinkLocal));
            }
            if is_local(p.dst) {
                return Some(Ok(PassReason::Local));
            }
            None
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if d.is_multicast() {
                return Some(Ok(PassReason::Multicast));
            }
            if s.is_multicast() || s.is_unspecified() || s.is_loopback() {
                return Some(Err(DropReason::Martian));
            }
            if d.is_unspecified() || d.is_loopback() {
                return Some(Err(DropReason::Martian));
            }
            let ll = |a: Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
            if ll(s) || ll(d) {
                return Some(Ok(PassReason::LinkLocal));
            }
            if is_local(p.dst) {
                return Some(Ok(PassReason::Local));
            }
            None
        }
        _ => unreachable!("one family per packet"),
    }
}

/// Parses Ethernet, VLAN and IP; `Err` is a verdict with the interface it is
/// counted on.
pub(super) fn parse<'a>(
    desired: &'a Desired,
    frame: &[u8],
    mut iface: &'a IfaceSpec,
) -> (Step, &'a IfaceSpec) {
    if frame.len() < 14 {
        return (Step::Drop(DropReason::Malformed), iface);
    }
    let mut ethertype = be16(frame, 12);
    let mut l2 = 14;
    let mut tci = None;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < 18 {
            return (Step::Drop(DropReason::Malformed), iface);
        }
        let t = be16(frame, 14);
        ethertype = be16(frame, 16);
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            return (Step::Pass(PassReason::Vlan), iface);
        }
        let port = iface.ifindex;
        match desired
            .ifaces
            .iter()
            .find(|i| i.vlan_of == Some((port, t & 0x0fff)))
        {
            Some(dev) => iface = dev,
            None => return (Step::Pass(PassReason::Vlan), iface),
        }
        l2 = 18;
        tci = Some(t);
    }
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return (Step::Pass(PassReason::NonIp), iface);
    }
    let dmac: [u8; 6] = frame[0..6].try_into().unwrap();
    if dmac[0] & 1 != 0 {
        return (Step::Pass(PassReason::Multicast), iface);
    }
    if dmac != iface.mac && !iface.upper_macs.contains(&dmac) {
        return (Step::Drop(DropReason::OtherHost), iface);
    }
    let ip = &frame[l2..];
    let step = if ethertype == 0x0800 {
        parse_v4(ip, l2, tci)
    } else {
        parse_v6(ip, l2, tci)
    };
    (step, iface)
}
