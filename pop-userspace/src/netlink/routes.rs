//! Kernel routing tables over a raw rtnetlink socket: a streamed dump of one
//! table (IPv4 and IPv6) and the route notifications (`RTNLGRP_IPV4_ROUTE`,
//! `RTNLGRP_IPV6_ROUTE`). Messages are parsed into small stack values, one at a
//! time, so a million-route dump never sits in memory as netlink messages or
//! attribute lists.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
const RTM_F_CLONED: u32 = 0x200;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;

/// Most next hops kept per route (the data plane's ECMP width).
pub const MAX_HOPS: usize = pop_common::MAX_ECMP;

/// One next hop of a kernel route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hop {
    /// Output interface.
    pub ifindex: u32,
    /// Gateway; None for a device route (`ip route add P dev X`).
    pub via: Option<IpAddr>,
}

/// What a kernel route does with packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Forward to one of `hops[..count]` (several: ECMP).
    Unicast {
        /// How many of `hops` are used.
        count: u8,
        /// The next hops (beyond [`MAX_HOPS`] dropped; see `truncated`).
        hops: [Hop; MAX_HOPS],
        /// The kernel route had more next hops than pop's ECMP width.
        truncated: bool,
    },
    /// Blackhole, unreachable or prohibit: drop.
    Blackhole,
    /// Any other type (local, broadcast, throw, nat, ...): not a forwarding route.
    Other(u8),
}

/// A route notification or dump entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMsg {
    /// A route was added or replaced.
    New {
        /// Routing table number.
        table: u32,
        /// Destination.
        prefix: IpNet,
        /// What it does.
        kind: RouteKind,
    },
    /// A route was removed.
    Del {
        /// Routing table number.
        table: u32,
        /// Destination.
        prefix: IpNet,
    },
    /// Some next hops of an IPv6 multipath route were removed
    /// (`ip -6 route del P via A`): the route stays with the others.
    DelHops {
        /// Routing table number.
        table: u32,
        /// Destination.
        prefix: IpNet,
        /// How many of `hops` are used.
        count: u8,
        /// The next hops removed.
        hops: [Hop; MAX_HOPS],
    },
}

impl RouteMsg {
    /// The routing table the message is about.
    pub fn table(&self) -> u32 {
        match self {
            RouteMsg::New { table, .. }
            | RouteMsg::Del { table, .. }
            | RouteMsg::DelHops { table, .. } => *table,
        }
    }
}

/// What a receive on a subscription returned.
pub enum Received {
    /// Bytes of messages in the buffer.
    Data(usize),
    /// Nothing within the timeout.
    Timeout,
    /// The kernel dropped notifications because the socket's buffer was full:
    /// the table must be dumped again.
    Overflow,
}

/// A raw NETLINK_ROUTE socket.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl RouteSocket {
    fn new(groups: u32, rcvbuf: usize) -> io::Result<Self> {
        // SAFETY: plain syscalls on a descriptor this function owns.
        unsafe {
            let fd = cvt(libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            ))?;
            let fd = OwnedFd::from_raw_fd(fd);
            let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
            let setopt = |level, opt, v: libc::c_int| {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    opt,
                    &v as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            // FORCE (root) goes beyond net.core.rmem_max.
            if setopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size) < 0 {
                cvt(setopt(libc::SOL_SOCKET, libc::SO_RCVBUF, size))?;
            }
            // Lets a dump request filter by table (ignored by older kernels).
            let _ = setopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = groups;
            cvt(libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ))?;
            Ok(Self { fd, seq: 1 })
        }
    }

    /// A socket that receives every IPv4 and IPv6 route change, with a
    /// receive buffer of `rcvbuf` bytes (a larger one absorbs larger bursts
    /// before the kernel drops notifications).
    pub fn subscribe(rcvbuf: usize) -> io::Result<Self> {
        Self::new(RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE, rcvbuf)
    }

    /// A socket for dumps.
    pub fn dumper() -> io::Result<Self> {
        Self::new(0, 4 << 20)
    }

    /// Waits up to `timeout_ms` for messages and reads what is there into `buf`.
    pub fn recv(&self, buf: &mut [u8], timeout_ms: i32) -> io::Result<Received> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Received::Timeout)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(Received::Timeout);
        }
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOBUFS) => Ok(Received::Overflow),
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Received::Timeout),
                _ => Err(e),
            };
        }
        Ok(Received::Data(r as usize))
    }

    /// Dumps routing table `table` (IPv4, then IPv6), calling `each` for every
    /// route in it, one parsed message at a time.
    pub fn dump(&mut self, table: u32, mut each: impl FnMut(RouteMsg)) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut req = Vec::with_capacity(40);
            let len = (NLMSG_HDRLEN + RTMSG_LEN + 8) as u32;
            req.extend_from_slice(&len.to_ne_bytes());
            req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
            req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            req.extend_from_slice(&seq.to_ne_bytes());
            req.extend_from_slice(&0u32.to_ne_bytes());
            // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
            let table8 = if table < 256 { table as u8 } else { 0 };
            req.extend_from_slice(&[family, 0, 0, 0, table8, 0, 0, 0]);
            req.extend_from_slice(&0u32.to_ne_bytes());
            // RTA_TABLE: the strict-check dump filter.
            req.extend_from_slice(&8u16.to_ne_bytes());
            req.extend_from_slice(&RTA_TABLE.to_ne_bytes());
            req.extend_from_slice(&table.to_ne_bytes());
            // SAFETY: `req` is valid for reads of its length.
            cvt(unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    req.as_ptr() as *const libc::c_void,
                    req.len(),
                    0,
                )
            } as libc::c_int)?;
            'family: loop {
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                for (kind, seq_of, payload) in messages(&buf[..n as usize]) {
                    if seq_of != seq {
                        continue;
                    }
                    match kind {
                        NLMSG_DONE => break 'family,
                        NLMSG_ERROR => {
                            let code = payload
                                .get(..4)
                                .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                                .unwrap_or(0);
                            if code != 0 {
                                return Err(io::Error::from_raw_os_error(-code));
                            }
                            break 'family;
                        }
                        _ => {
                            if let Some(m) = parse(kind, payload) {
                                if m.table() == table {
                                    each(m);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The netlink messages in `buf`: (type, sequence number, payload).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let h = &buf[off..];
        let len = u32::from_ne_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(h[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes"));
        let payload = &h[NLMSG_HDRLEN..len];
        off += (len + 3) & !3;
        Some((kind, seq, payload))
    })
}

/// The attributes in `buf`: (type, value).
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes(buf[off..off + 2].try_into().expect("2 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[off + 2..off + 4].try_into().expect("2 bytes")) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let value = &buf[off + 4..off + len];
        off += (len + 3) & !3;
        Some((kind, value))
    })
}

fn addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (family as i32, b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b).expect("4 bytes"),
        ))),
        (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(b).expect("16 bytes"),
        ))),
        _ => None,
    }
}

/// RTA_VIA: a gateway of another family (IPv4 routes over IPv6 next hops).
fn via(b: &[u8]) -> Option<IpAddr> {
    let family = u16::from_ne_bytes(b.get(..2)?.try_into().ok()?);
    addr(family as u8, &b[2..])
}

/// Parses one RTM_NEWROUTE / RTM_DELROUTE payload. Cloned (cache) entries and
/// other message types give None.
pub fn parse(kind: u16, payload: &[u8]) -> Option<RouteMsg> {
    if kind != RTM_NEWROUTE && kind != RTM_DELROUTE {
        return None;
    }
    let h = payload.get(..RTMSG_LEN)?;
    let (family, dst_len, table8, rtype) = (h[0], h[1], h[4], h[7]);
    let flags = u32::from_ne_bytes(h[8..12].try_into().ok()?);
    if flags & RTM_F_CLONED != 0 {
        return None;
    }
    let mut table = u32::from(table8);
    let mut dst = None;
    let mut first = Hop::default();
    let mut hops = [Hop::default(); MAX_HOPS];
    let mut count = 0u8;
    let mut truncated = false;
    for (t, v) in attributes(&payload[RTMSG_LEN..]) {
        match t {
            RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes(v.try_into().ok()?),
            RTA_DST => dst = addr(family, v),
            RTA_OIF if v.len() == 4 => first.ifindex = u32::from_ne_bytes(v.try_into().ok()?),
            RTA_GATEWAY => first.via = addr(family, v),
            RTA_VIA => first.via = via(v),
            RTA_MULTIPATH => {
                // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } + attributes.
                let mut off = 0usize;
                while off + 8 <= v.len() {
                    let len = u16::from_ne_bytes(v[off..off + 2].try_into().ok()?) as usize;
                    if len < 8 || off + len > v.len() {
                        break;
                    }
                    let mut hop = Hop {
                        ifindex: i32::from_ne_bytes(v[off + 4..off + 8].try_into().ok()?) as u32,
                        via: None,
                    };
                    for (t2, v2) in attributes(&v[off + 8..off + len]) {
                        match t2 {
                            RTA_GATEWAY => hop.via = addr(family, v2),
                            RTA_VIA => hop.via = via(v2),
                            _ => {}
                        }
                    }
                    if (count as usize) < MAX_HOPS {
                        hops[count as usize] = hop;
                        count += 1;
                    } else {
                        truncated = true;
                    }
                    off += (len + 3) & !3;
                }
            }
            _ => {}
        }
    }
    let prefix = match (family as i32, dst) {
        (libc::AF_INET, Some(IpAddr::V4(a))) => IpNet::V4(Ipv4Net::new(a, dst_len).ok()?),
        (libc::AF_INET6, Some(IpAddr::V6(a))) => IpNet::V6(Ipv6Net::new(a, dst_len).ok()?),
        (libc::AF_INET, None) => IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, dst_len).ok()?),
        (libc::AF_INET6, None) => IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, dst_len).ok()?),
        _ => return None,
    };
    if kind == RTM_DELROUTE {
        // IPv6 keeps one kernel route per next hop of a multipath route and
        // notifies the removal of each: only those next hops go.
        if count == 0 && first.via.is_some() {
            hops[0] = first;
            count = 1;
        }
        if family as i32 == libc::AF_INET6 && count > 0 && hops.iter().any(|h| h.via.is_some()) {
            return Some(RouteMsg::DelHops {
                table,
                prefix,
                count,
                hops,
            });
        }
        return Some(RouteMsg::Del { table, prefix });
    }
    let kind = match rtype {
        RTN_UNICAST => {
            if count == 0 {
                hops[0] = first;
                count = 1;
            }
            RouteKind::Unicast {
                count,
                hops,
                truncated,
            }
        }
        RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT => RouteKind::Blackhole,
        other => RouteKind::Other(other),
    };
    Some(RouteMsg::New {
        table,
        prefix,
        kind,
    })
}
