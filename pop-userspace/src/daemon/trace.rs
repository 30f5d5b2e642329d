//! `popctl trace`: build the packet the operator describes and run it through
//! the trace program (`pop_trace` in pop.bpf.c: the live pipeline on the live
//! maps, counting nothing and taking no policer tokens).
use std::net::IpAddr;

use etherparse::{IpNumber, PacketBuilder};

use crate::api::protocol::TraceRequest;
use crate::config::validate::parse_proto;

/// Source port when none is given.
pub const DEFAULT_SPORT: u16 = 40000;
/// Hop limit of the traced packet: high enough to be forwarded.
const TTL: u8 = 64;
/// Payload bytes of the traced packet without `--size`.
const DEFAULT_PAYLOAD: usize = 18;
/// Largest `--size`: a jumbo frame.
pub const MAX_SIZE: usize = 9000;
/// Source MAC of the traced frame (locally administered).
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The frame for `req`, addressed to the ingress port's MAC `dst_mac`, and a
/// one-line description such as `tcp 198.51.100.10:40000 > 100.64.0.1:443`.
pub fn frame(req: &TraceRequest, dst_mac: [u8; 6]) -> Result<(Vec<u8>, String), String> {
    let src: IpAddr = req
        .src
        .parse()
        .map_err(|_| format!("trace: --src \"{}\": not an IP address", req.src))?;
    let dst: IpAddr = req
        .dst
        .parse()
        .map_err(|_| format!("trace: --dst \"{}\": not an IP address", req.dst))?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(format!(
            "trace: --src {src} and --dst {dst} differ in address family"
        ));
    }
    let has_ports = req.sport.is_some() || req.dport.is_some();
    let proto = match &req.proto {
        Some(p) => parse_proto(p).ok_or_else(|| {
            format!("trace: --proto \"{p}\": expected tcp, udp, icmp, icmpv6 or a number 0-255")
        })?,
        None if has_ports => 6,
        None if src.is_ipv4() => 1,
        None => 58,
    };
    if has_ports && proto != 6 && proto != 17 {
        return Err(format!(
            "trace: ports need --proto tcp or udp, not {}",
            req.proto.as_deref().unwrap_or("")
        ));
    }
    if let Some(v) = req.vlan {
        if !(1..=4094).contains(&v) {
            return Err(format!("trace: --vlan {v} out of range 1-4094"));
        }
    }
    let (sport, dport) = (req.sport.unwrap_or(DEFAULT_SPORT), req.dport.unwrap_or(0));
    let ttl = req.ttl.unwrap_or(TTL);
    let eth = PacketBuilder::ethernet2(SRC_MAC, dst_mac);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => unreachable!("families checked above"),
    };
    let headers = if src.is_ipv4() { 20 } else { 40 }
        + match proto {
            6 => 20,
            17 | 1 | 58 => 8,
            _ => 0,
        };
    let payload_len = match req.size {
        None => DEFAULT_PAYLOAD,
        Some(size) if usize::from(size) < headers => {
            return Err(format!(
                "trace: --size {size}: smaller than the {headers} bytes of the headers"
            ))
        }
        Some(size) if usize::from(size) > MAX_SIZE => {
            return Err(format!("trace: --size {size}: exceeds {MAX_SIZE}"))
        }
        Some(size) => usize::from(size) - headers,
    };
    let payload = vec![0u8; payload_len];
    let mut out = Vec::new();
    let written = match proto {
        6 => ip
            .tcp(sport, dport, 1, 64240)
            .syn()
            .write(&mut out, &payload),
        17 => ip.udp(sport, dport).write(&mut out, &payload),
        1 if src.is_ipv4() => ip.icmpv4_echo_request(1, 1).write(&mut out, &payload),
        58 if src.is_ipv6() => ip.icmpv6_echo_request(1, 1).write(&mut out, &payload),
        n => ip.write(&mut out, IpNumber(n), &payload),
    };
    written.map_err(|e| format!("trace: building the packet: {e}"))?;
    if let Some(v) = req.vlan {
        // An 802.1Q tag between the MACs and the EtherType.
        let tag = [0x81, 0x00, (v >> 8) as u8, v as u8];
        out.splice(12..12, tag);
    }
    let name = crate::config::validate::proto_name(proto)
        .map_or_else(|| format!("proto {proto}"), str::to_string);
    let describe = |a: IpAddr, port: u16| match (a, proto) {
        (IpAddr::V4(a), 6 | 17) => format!("{a}:{port}"),
        (IpAddr::V6(a), 6 | 17) => format!("[{a}]:{port}"),
        (a, _) => a.to_string(),
    };
    let mut text = format!("{name} {} > {}", describe(src, sport), describe(dst, dport));
    if let Some(v) = req.vlan {
        text.push_str(&format!(" vlan {v}"));
    }
    if let Some(t) = req.ttl {
        text.push_str(&format!(" ttl {t}"));
    }
    if let Some(s) = req.size {
        text.push_str(&format!(" size {s}"));
    }
    Ok((out, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(src: &str, dst: &str) -> TraceRequest {
        TraceRequest {
            in_iface: "eth1".into(),
            src: src.into(),
            dst: dst.into(),
            ..TraceRequest::default()
        }
    }

    #[test]
    fn builds_what_was_asked() {
        let mut r = req("198.51.100.10", "100.64.0.1");
        r.dport = Some(443);
        let (f, text) = frame(&r, [2, 0, 0, 0, 0, 9]).unwrap();
        assert_eq!(text, "tcp 198.51.100.10:40000 > 100.64.0.1:443");
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                assert_eq!((t.source_port(), t.destination_port()), (40000, 443));
                assert!(t.syn());
            }
            other => panic!("{other:?}"),
        }
        let (_, text) = frame(&req("2001:db8:a::10", "2001:db8:ffff:1::1"), [0; 6]).unwrap();
        assert_eq!(text, "icmpv6 2001:db8:a::10 > 2001:db8:ffff:1::1");
        let mut r = req("198.51.100.10", "100.64.0.1");
        r.proto = Some("47".into());
        r.vlan = Some(100);
        let (f, text) = frame(&r, [0; 6]).unwrap();
        assert_eq!(text, "proto 47 198.51.100.10 > 100.64.0.1 vlan 100");
        assert_eq!(&f[12..14], &[0x81, 0x00]);
    }

    #[test]
    fn ttl_and_size() {
        let mut r = req("198.51.100.10", "100.64.0.1");
        r.ttl = Some(1);
        r.size = Some(1400);
        r.dport = Some(80);
        let (f, text) = frame(&r, [0; 6]).unwrap();
        assert_eq!(
            text,
            "tcp 198.51.100.10:40000 > 100.64.0.1:80 ttl 1 size 1400"
        );
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        match p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                assert_eq!(ip.header().ttl(), 1);
                assert_eq!(ip.header().total_len(), 1400);
                assert!(ip.header().dont_fragment());
            }
            other => panic!("{other:?}"),
        }
        let mut r = req("2001:db8:a::10", "2001:db8:ffff:1::1");
        r.size = Some(47);
        assert_eq!(
            frame(&r, [0; 6]).unwrap_err(),
            "trace: --size 47: smaller than the 48 bytes of the headers"
        );
        r.size = Some(48);
        assert_eq!(frame(&r, [0; 6]).unwrap().0.len(), 14 + 48);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let err = |r: TraceRequest| frame(&r, [0; 6]).unwrap_err();
        assert!(err(req("10.0.0.1", "2001:db8::1")).contains("differ in address family"));
        assert!(err(req("10.0.0.x", "10.0.0.1")).starts_with("trace: --src"));
        let mut r = req("10.0.0.1", "10.0.0.2");
        r.proto = Some("icmp".into());
        r.dport = Some(1);
        assert!(err(r).contains("ports need --proto tcp or udp"));
    }
}
