//! Parsers for the string-valued fields of the config: prefixes, ports, protocols.
use std::net::IpAddr;

use ipnet::IpNet;

use super::{PortError, PrefixError};

/// Parses `ADDRESS/LENGTH`, refusing lengths beyond the family's size, host bits
/// and bare addresses.
pub fn parse_prefix(text: &str) -> Result<IpNet, PrefixError> {
    let Some((addr, len)) = text.split_once('/') else {
        return match text.parse::<IpAddr>() {
            Ok(a) => Err(PrefixError::MissingLength(a, full_len(a))),
            Err(_) => Err(PrefixError::Syntax),
        };
    };
    let addr: IpAddr = addr.parse().map_err(|_| PrefixError::Syntax)?;
    if len.is_empty() || len.len() > 9 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PrefixError::BadLength(len.to_string()));
    }
    let len: u32 = len
        .parse()
        .map_err(|_| PrefixError::BadLength(len.to_string()))?;
    let max = full_len(addr);
    if len > u32::from(max) {
        return Err(PrefixError::LengthExceeds { len, max });
    }
    let net = IpNet::new(addr, len as u8).map_err(|_| PrefixError::Syntax)?;
    if net.network() != addr {
        return Err(PrefixError::HostBits(net.trunc()));
    }
    Ok(net)
}

fn full_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// Parses a port `N` or an inclusive range `A-B` (A <= B <= 65535).
pub fn parse_port_range(text: &str) -> Result<(u16, u16), PortError> {
    let (start, end) = text.split_once('-').unwrap_or((text, text));
    let (start, end) = (parse_port(start)?, parse_port(end)?);
    if start > end {
        return Err(PortError::Reversed(start, end));
    }
    Ok((start, end))
}

fn parse_port(text: &str) -> Result<u16, PortError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::Syntax);
    }
    match text.parse::<u64>() {
        Ok(n) => u16::try_from(n).map_err(|_| PortError::Exceeds),
        Err(_) => Err(PortError::Exceeds),
    }
}

/// IP protocol numbers of the names `proto` accepts.
pub const PROTO_NAMES: &[(&str, u8)] = &[("icmp", 1), ("tcp", 6), ("udp", 17), ("icmpv6", 58)];

/// Parses `tcp`, `udp`, `icmp`, `icmpv6` (any case) or a number 0-255.
pub fn parse_proto(text: &str) -> Option<u8> {
    PROTO_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, n)| n)
        .or_else(|| {
            if text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse().ok()
            } else {
                None
            }
        })
}

/// The name of a protocol number if it has one (`6` → `tcp`).
pub fn proto_name(proto: u8) -> Option<&'static str> {
    PROTO_NAMES
        .iter()
        .find(|&&(_, n)| n == proto)
        .map(|&(name, _)| name)
}
