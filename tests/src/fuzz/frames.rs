//! Random frames for the fuzzer: a well-formed frame of a random kind,
//! addressed from pools drawn from the tables, then mutated at the byte level.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Rng, UPPER_MAC, VLAN_ID};
use crate::{
    model::{internet_checksum, Desired},
    testrun::Port,
};

fn addr_v4(r: &mut Rng, d: &Desired) -> Ipv4Addr {
    let host = r.next_u64() as u32;
    match r.below(20) {
        // Inside a route prefix (or a customer's).
        0..=6 => {
            let routes: Vec<_> = d
                .routes
                .iter()
                .filter(|x| x.prefix.addr.is_ipv4())
                .collect();
            if routes.is_empty() {
                return Ipv4Addr::from(0x0a00_0000 | (host & 0xffffff));
            }
            let p = r.pick(&routes).prefix;
            let IpAddr::V4(a) = p.addr else {
                unreachable!()
            };
            let mask = if p.len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p.len))
            };
            Ipv4Addr::from((u32::from(a) & mask) | (host & !mask))
        }
        7 => Ipv4Addr::from(0x6440_0000 | (host & 0x3fffff)),
        8..=9 => Ipv4Addr::from(0x0a01_0200 | (host & 0xff)),
        10 => *r.pick(&[
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(10, 1, 2, 1),
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(192, 0, 2, 255),
            Ipv4Addr::new(10, 1, 2, 255),
            Ipv4Addr::new(198, 51, 100, 255),
            Ipv4Addr::new(198, 51, 100, 0),
            Ipv4Addr::new(10, 1, 2, 0),
        ]),
        11 => *r.pick(&[
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(0, 1, 2, 3),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(240, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 254),
            Ipv4Addr::new(224, 0, 0, 5),
            Ipv4Addr::new(239, 1, 2, 3),
            Ipv4Addr::new(255, 255, 255, 255),
        ]),
        12 => Ipv4Addr::new(169, 254, (host >> 8) as u8, host as u8),
        _ => Ipv4Addr::from(host),
    }
}

fn addr_v6(r: &mut Rng, d: &Desired) -> Ipv6Addr {
    let host = u128::from(r.next_u64());
    match r.below(20) {
        0..=5 => {
            let routes: Vec<_> = d
                .routes
                .iter()
                .filter(|x| x.prefix.addr.is_ipv6())
                .collect();
            if routes.is_empty() {
                return Ipv6Addr::from((0x2001_0db8u128 << 96) | host);
            }
            let p = r.pick(&routes).prefix;
            let IpAddr::V6(a) = p.addr else {
                unreachable!()
            };
            let mask = if p.len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(p.len))
            };
            Ipv6Addr::from((u128::from(a) & mask) | (host & !mask))
        }
        6..=8 => Ipv6Addr::from((0x2001_0db8_000au128 << 80) | host),
        9 => *r.pick(&[
            "2001:db8:ffff::1".parse().unwrap(),
            "2001:db8:ffff::2".parse().unwrap(),
        ]),
        10 => *r.pick(&[
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            "ff02::1".parse().unwrap(),
            "ff0e::1:2".parse().unwrap(),
        ]),
        11 => Ipv6Addr::from((0xfe80u128 << 112) | host),
        _ => Ipv6Addr::from((0x2a00u128 << 112) | (host << 32) | host),
    }
}

/// Transport header and payload: (protocol, bytes).
fn l4(r: &mut Rng, v6: bool, size: usize) -> (u8, Vec<u8>) {
    let mut b = vec![0u8; size];
    for x in b.iter_mut() {
        *x = r.next_u64() as u8;
    }
    let proto = match r.below(20) {
        0..=7 => 17,
        8..=11 => 6,
        12..=17 => {
            if v6 {
                58
            } else {
                1
            }
        }
        _ => *r.pick(&[47, 50, 132, 255]),
    };
    if proto == 1 || proto == 58 {
        if let Some(t) = b.first_mut() {
            *t = if v6 {
                *r.pick(&[1, 2, 3, 4, 127, 128, 129, 135, 200])
            } else {
                *r.pick(&[0, 3, 4, 5, 8, 9, 11, 12, 13, 17, 18, 19, 40])
            };
        }
    }
    if proto == 6 && size >= 20 {
        b[12] = 0x50;
    }
    if proto == 17 && size >= 8 {
        b[4..6].copy_from_slice(&(size as u16).to_be_bytes());
    }
    (proto, b)
}

fn payload_size(r: &mut Rng) -> usize {
    match r.below(10) {
        0..=4 => r.below(64),
        5 => r.below(8),
        _ => 60 + r.below(1600),
    }
}

fn ipv4(r: &mut Rng, d: &Desired) -> Vec<u8> {
    let src = addr_v4(r, d);
    let dst = addr_v4(r, d);
    // More oversize IPv4 than IPv6: only DF ones are answered.
    let size = if r.chance(3, 5) {
        600 + r.below(1000)
    } else {
        payload_size(r)
    };
    let (proto, body) = l4(r, false, size);
    let options = if r.chance(1, 25) {
        4 * (1 + r.below(10))
    } else {
        0
    };
    let ihl = 20 + options;
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[1] = r.next_u64() as u8;
    h[2..4].copy_from_slice(&((ihl + body.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&(r.next_u64() as u16).to_be_bytes());
    let mut frag: u16 = if r.chance(4, 5) { 0x4000 } else { 0 };
    if r.chance(1, 10) {
        frag = if r.chance(1, 2) {
            0x2000
        } else {
            (r.next_u64() as u16 & 0x3fff) | 1
        };
    }
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = *r.pick(&[0, 1, 1, 2, 2, 64, 64, 64, 64, 255, 255]);
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    for (i, x) in h[20..].iter_mut().enumerate() {
        *x = if i == 0 { 1 } else { 0 };
    }
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(body);
    h
}

fn ipv6(r: &mut Rng, d: &Desired) -> Vec<u8> {
    let src = addr_v6(r, d);
    let dst = addr_v6(r, d);
    let size = if r.chance(1, 4) {
        600 + r.below(1000)
    } else {
        payload_size(r)
    };
    let (proto, body) = l4(r, true, size);
    // An extension-header chain, innermost last.
    let mut chain: Vec<u8> = vec![];
    if r.chance(1, 5) {
        let n = 1 + r.below(8);
        for _ in 0..n {
            chain.push(*r.pick(&[0, 43, 60, 60, 44, 44, 43]));
        }
        if r.chance(3, 4) {
            chain.retain(|x| *x != 0);
        }
    }
    let mut payload = vec![];
    for (i, kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(proto);
        if *kind == 44 {
            let off: u16 = if r.chance(1, 2) {
                1
            } else {
                (r.next_u64() as u16) & 0xfff9
            };
            payload.extend_from_slice(&[next, 0]);
            payload.extend_from_slice(&off.to_be_bytes());
            payload.extend_from_slice(&(r.next_u64() as u32).to_be_bytes());
        } else {
            let len = r.below(3);
            payload.extend_from_slice(&[next, len as u8]);
            payload.extend(std::iter::repeat_n(0u8, 6 + 8 * len));
        }
    }
    payload.extend(body);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = chain.first().copied().unwrap_or(proto);
    h[7] = *r.pick(&[0, 1, 1, 2, 2, 64, 64, 64, 64, 255, 255]);
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend(payload);
    h
}

/// The shortest frame the kernel runs XDP on.
const ETH_HLEN: usize = 14;

/// Byte-level damage to the IP packet at `ip` in `f`.
fn mutate(r: &mut Rng, f: &mut Vec<u8>, ip: usize, v6: bool) {
    let n = 1 + r.below(2);
    for _ in 0..n {
        match r.below(9) {
            0 | 1 => {
                // Every length from the Ethernet header's (BPF_PROG_TEST_RUN
                // refuses shorter frames, as no NIC delivers them) to the whole.
                let at = ETH_HLEN + r.below(f.len() + 1 - ETH_HLEN);
                f.truncate(at);
            }
            2 if !v6 && f.len() >= ip + 4 => {
                let v = if r.chance(1, 2) {
                    r.next_u64() as u16
                } else {
                    ((f.len() - ip) as u16)
                        .wrapping_add(r.below(9) as u16)
                        .wrapping_sub(4)
                };
                f[ip + 2..ip + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if !v6 && f.len() > ip => f[ip] = (f[ip] & 0xf0) | (r.below(16) as u8),
            4 if !v6 && f.len() >= ip + 12 => f[ip + 11] = f[ip + 11].wrapping_add(1),
            5 if v6 && f.len() >= ip + 6 => {
                let v = if r.chance(1, 2) {
                    r.next_u64() as u16
                } else {
                    (f.len().saturating_sub(ip + 40) as u16)
                        .wrapping_add(r.below(9) as u16)
                        .wrapping_sub(4)
                };
                f[ip + 4..ip + 6].copy_from_slice(&v.to_be_bytes());
            }
            6 if f.len() > ip => f[ip] = (r.below(16) as u8) << 4 | (f[ip] & 0x0f),
            7 => f.extend(std::iter::repeat_n(0u8, 1 + r.below(40))),
            _ => {
                if !f.is_empty() {
                    let at = r.below(f.len());
                    f[at] = r.next_u64() as u8;
                }
            }
        }
    }
}

/// A random frame for the tables `d` over `ports`: (ingress 0 = A, 1 = B,
/// 2 = an interface pop does not serve; the bytes).
pub fn random_frame(r: &mut Rng, d: &Desired, ports: &[Port; 2]) -> (u8, Vec<u8>) {
    let ingress = match r.below(100) {
        0..=59 => 0,
        60..=97 => 1,
        _ => 2,
    };
    let own = ports[usize::from(ingress.min(1))].mac;
    let dmac = match r.below(100) {
        0..=84 => own,
        85..=88 => UPPER_MAC,
        89..=92 => [0x02, 0x99, 0x99, 0x99, 0x99, r.next_u64() as u8],
        93..=96 => [0x01, 0x00, 0x5e, 0x00, 0x00, 0x05],
        _ => [0xff; 6],
    };
    let mut f = dmac.to_vec();
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0xaa, 0x01]);
    let tags = match r.below(100) {
        0..=89 => 0,
        90..=97 => 1,
        _ => 2,
    };
    for _ in 0..tags {
        let tpid: u16 = if r.chance(3, 4) { 0x8100 } else { 0x88a8 };
        let vid = if r.chance(3, 4) {
            VLAN_ID
        } else {
            r.below(4096) as u16
        };
        let pcp = (r.below(16) as u16) << 12;
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(pcp | vid).to_be_bytes());
    }
    let ip = f.len() + 2;
    let kind = r.below(100);
    let v6 = (47..94).contains(&kind);
    if kind < 47 {
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(ipv4(r, d));
    } else if v6 {
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend(ipv6(r, d));
    } else {
        let t: [u8; 2] = *r.pick(&[[0x08, 0x06], [0x88, 0xcc], [0x88, 0x47]]);
        f.extend_from_slice(&t);
        f.extend(std::iter::repeat_n(0u8, 28 + r.below(20)));
    }
    if r.chance(1, 8) {
        // Ethernet padding after the IP packet.
        f.extend(std::iter::repeat_n(0u8, 1 + r.below(30)));
    }
    if r.chance(1, 4) {
        mutate(r, &mut f, ip, v6);
    }
    (ingress, f)
}
