//! What popd needs from the kernel's networking state, over rtnetlink: links
//! (ifindex, MAC, MTU, XDP attachment), the host's own addresses, and the
//! neighbour table. popd never makes users type MACs: next hops are resolved
//! here, missing ones are added as *managed* neighbours (NTF_EXT_MANAGED) so
//! that the kernel resolves them and keeps them fresh without traffic, and a
//! multicast subscription wakes popd on every change.
pub mod routes;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkXdp, XdpAttached,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState,
};
use rtnetlink::{Handle, MulticastGroup};

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Kernel ifindex.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU (L3 bytes).
    pub mtu: u32,
    /// XDP program id attached, if any, and whether in generic (skb) mode.
    pub xdp: Option<(u32, bool)>,
    /// For an 802.1Q VLAN device (`ip link add link eth1 name eth1.100 type
    /// vlan id 100`): the ifindex of the device it sits on and the VLAN id.
    pub vlan: Option<(u32, u16)>,
    /// For a macvlan or macvtap device that is up (`ip link add link eth1
    /// name vrrp1 address 00:00:5e:00:01:01 type macvlan`, as keepalived
    /// makes for VRRP): the ifindex of the device it sits on. The kernel
    /// accepts unicast frames to its MAC arriving there.
    pub macvlan_of: Option<u32>,
}

/// A neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC when the kernel knows one that can be used.
    pub mac: Option<[u8; 6]>,
}

/// A snapshot of the kernel's state that popd cares about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelView {
    /// By name.
    pub links: HashMap<String, Link>,
    /// Every address configured on the host.
    pub addrs: Vec<IpAddr>,
    /// ifindex → its addresses that can source packets to other hosts
    /// (global scope, not tentative), in the kernel's order: the sources of
    /// the ICMP errors pop sends.
    pub link_addrs: HashMap<u32, Vec<IpAddr>>,
    /// The directed broadcast addresses of the host's IPv4 subnets: of every
    /// address with a prefix length up to 30, and every explicit `brd`.
    pub directed_broadcasts: Vec<Ipv4Addr>,
    /// (ifindex, address) → entry.
    pub neighbours: HashMap<(u32, IpAddr), Neighbour>,
}

/// Netlink errors, as one line.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {0}")]
pub struct NetlinkError(pub String);

fn nl(e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError(e.to_string())
}

/// A connection for requests.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(nl)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A subscription to link, address and neighbour changes; each message on the
/// returned receiver means "something changed, re-read".
pub fn subscribe() -> Result<impl futures::Stream<Item = ()> + Unpin, NetlinkError> {
    use futures::StreamExt;
    let (conn, _handle, rx) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(nl)?;
    tokio::spawn(conn);
    Ok(rx.map(|_| ()))
}

/// Reads links, addresses and neighbours.
pub async fn dump(handle: &Handle) -> Result<KernelView, NetlinkError> {
    let mut view = KernelView::default();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(nl)? {
        let mut link = Link {
            ifindex: msg.header.index,
            ..Default::default()
        };
        let mut name = None;
        let (mut lower, mut vid, mut macvlan) = (None, None, false);
        let up = msg.header.flags.contains(LinkFlags::Up);
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n),
                LinkAttribute::Link(l) => lower = Some(l),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Data(InfoData::Vlan(v)) => {
                                vid = v.iter().find_map(|a| match a {
                                    InfoVlan::Id(id) => Some(*id),
                                    _ => None,
                                });
                            }
                            LinkInfo::Kind(InfoKind::MacVlan | InfoKind::MacVtap) => macvlan = true,
                            _ => {}
                        }
                    }
                }
                LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(&a),
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Xdp(xdp) => {
                    let mut id = None;
                    let mut generic = false;
                    for x in xdp {
                        match x {
                            LinkXdp::ProgId(p) if p != 0 => id = Some(p),
                            LinkXdp::Attached(XdpAttached::SocketBuffer) => generic = true,
                            _ => {}
                        }
                    }
                    link.xdp = id.map(|i| (i, generic));
                }
                _ => {}
            }
        }
        link.vlan = lower.zip(vid);
        // A macvlan that is down takes no frames (the kernel hashes its MAC
        // on open).
        link.macvlan_of = lower.filter(|_| macvlan && up);
        if let Some(n) = name {
            view.links.insert(n, link);
        }
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.map_err(nl)? {
        let usable = msg.header.scope == AddressScope::Universe
            && !msg
                .header
                .flags
                .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
        // IFA_LOCAL when present (point-to-point links), else IFA_ADDRESS.
        let own = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(a) => Some(*a),
                _ => None,
            })
            .or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(a) => Some(*a),
                    _ => None,
                })
            });
        if let Some(a) = own.filter(|_| usable) {
            let list = view.link_addrs.entry(msg.header.index).or_default();
            if !list.contains(&a) {
                list.push(a);
            }
        }
        let prefix_len = msg.header.prefix_len;
        for attr in msg.attributes {
            // IFA_LOCAL is the host's address on point-to-point links; IFA_ADDRESS otherwise.
            if let AddressAttribute::Address(a) | AddressAttribute::Local(a) = attr {
                if !view.addrs.contains(&a) {
                    view.addrs.push(a);
                }
            }
            let broadcast = match attr {
                // The kernel's rule (fib_add_ifaddr): the subnet of IFA_ADDRESS.
                AddressAttribute::Address(IpAddr::V4(a)) => subnet_broadcast(a, prefix_len),
                AddressAttribute::Broadcast(b) if b != Ipv4Addr::BROADCAST => Some(b),
                _ => None,
            };
            if let Some(b) = broadcast.filter(|b| !view.directed_broadcasts.contains(b)) {
                view.directed_broadcasts.push(b);
            }
        }
    }
    let mut neigh = handle.neighbours().get().execute();
    while let Some(msg) = neigh.try_next().await.map_err(nl)? {
        let usable = matches!(
            msg.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        );
        let mut dst = None;
        let mut mac = None;
        for attr in msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(a))
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let Some(d) = dst {
            // A NOARP/broadcast entry (e.g. no address on the link) or a
            // zero MAC is not a next hop we can send to.
            let unicast = |m: &[u8; 6]| m[0] & 1 == 0 && *m != [0; 6];
            let mac = if usable { mac.filter(unicast) } else { None };
            view.neighbours
                .insert((msg.header.ifindex, d), Neighbour { mac });
        }
    }
    Ok(view)
}

/// The broadcast address of the subnet `addr/prefix_len`, which the kernel
/// receives as its own: none for /31 and /32 (RFC 3021) or in 0.0.0.0/8.
pub fn subnet_broadcast(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len > 30 || addr.octets()[0] == 0 {
        return None;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Some(Ipv4Addr::from(u32::from(addr) | host_bits))
}

/// Asks the kernel to resolve `ip` on `ifindex` and keep it resolved
/// (`ip neigh add IP dev IF managed`). An existing entry is left alone.
pub async fn add_managed_neighbour(
    handle: &Handle,
    ifindex: u32,
    ip: IpAddr,
) -> Result<(), NetlinkError> {
    let mut req = handle
        .neighbours()
        .add(ifindex, ip)
        .state(NeighbourState::None);
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(nl(format!(
            "adding managed neighbour {ip} on ifindex {ifindex}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::subnet_broadcast;

    #[test]
    fn subnet_broadcasts_as_the_kernel_adds_them() {
        let b = |a: &str, len| subnet_broadcast(a.parse().unwrap(), len).map(|b| b.to_string());
        assert_eq!(b("198.51.100.1", 24).as_deref(), Some("198.51.100.255"));
        assert_eq!(b("10.1.2.3", 8).as_deref(), Some("10.255.255.255"));
        assert_eq!(b("192.0.2.5", 30).as_deref(), Some("192.0.2.7"));
        assert_eq!(b("192.0.2.4", 31), None, "RFC 3021: a /31 has no broadcast");
        assert_eq!(b("192.0.2.4", 32), None);
        assert_eq!(b("0.1.2.3", 24), None);
    }
}
