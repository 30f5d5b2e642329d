//! The two-port VLAN setup shared by the 802.1Q tests and the
//! `ifaces_by_index` tests: a customer port carrying VLAN 100 (on a made-up
//! VLAN device, since the kernel here cannot create one) and an upstream port
//! with the default route.
use pop_common::{maps, PopNexthop, PopVlanKey, Role, NH_RESOLVED, NH_VALID};

use super::{veth_pair, Harness, Port};

/// The VLAN id the customer port carries.
pub const VID: u16 = 100;
/// The MAC of next hop [`NH_UP`], upstream.
pub const UPSTREAM_MAC: [u8; 6] = [2, 0, 0, 0, 0x0e, 1];
/// The MAC of next hop [`NH_TAGGED`], on VLAN [`VID`] of the customer port.
pub const TAGGED_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];
/// The next hop of the default route, untagged on the upstream port.
pub const NH_UP: u32 = 1;
/// The next hop of 10.100.0.0/24, tagged [`VID`] on the customer port.
pub const NH_TAGGED: u32 = 2;
/// The customer that 10.100.0.0/24 belongs to.
pub const TAGGED_CUSTOMER: u32 = 7;

/// pop loaded on a fresh veth pair named `customer` and `upstream`: the
/// customer port (slot 0) with VLAN [`VID`] on the made-up device
/// `vlan_dev` (slot 2, with the port's MAC, as a VLAN device has unless given
/// its own), where 10.100.0.0/24 of customer [`TAGGED_CUSTOMER`] lives behind
/// next hop [`NH_TAGGED`]; the upstream port (slot 1) with the default route
/// 0.0.0.0/0 through next hop [`NH_UP`]. Both ports are in the device map.
/// Records are in the hash `ifaces` only. Run it in a private namespace
/// ([`super::in_netns`]).
pub fn vlan_lab(customer: &str, upstream: &str, vlan_dev: u32) -> (Harness, Port, Port) {
    let (customer, upstream) = veth_pair(customer, upstream).unwrap();
    let mut h = Harness::load().unwrap();
    h.set_iface(customer.ifindex, 0, Role::Customer, 1500)
        .unwrap();
    h.set_iface(upstream.ifindex, 1, Role::Upstream, 1500)
        .unwrap();
    h.set_iface_with_mac(vlan_dev, 2, Role::Customer, 1500, customer.mac)
        .unwrap();
    {
        let mut vlans: aya::maps::HashMap<_, PopVlanKey, u32> =
            aya::maps::HashMap::try_from(h.map_mut(maps::VLAN_IFACES).unwrap()).unwrap();
        let key = PopVlanKey {
            ifindex: customer.ifindex,
            vid: u32::from(VID),
        };
        vlans.insert(key, vlan_dev, 0).unwrap();
    }
    h.add_tx_port(customer.ifindex).unwrap();
    h.add_tx_port(upstream.ifindex).unwrap();
    h.set_nexthop(NH_UP, nexthop(&upstream, UPSTREAM_MAC, 0))
        .unwrap();
    h.set_nexthop(NH_TAGGED, nexthop(&customer, TAGGED_MAC, VID))
        .unwrap();
    h.add_route_v4("0.0.0.0/0", &[NH_UP], 0).unwrap();
    h.add_route_v4("10.100.0.0/24", &[NH_TAGGED], 0).unwrap();
    h.add_customer_v4("10.100.0.0/24", TAGGED_CUSTOMER).unwrap();
    (h, customer, upstream)
}

/// A resolved next hop out of `port` to `dmac`, MTU 1500, tagged `vlan`
/// (0: untagged).
pub fn nexthop(port: &Port, dmac: [u8; 6], vlan: u16) -> PopNexthop {
    PopNexthop {
        ifindex: port.ifindex,
        flags: NH_VALID | NH_RESOLVED,
        dmac,
        smac: port.mac,
        mtu: 1500,
        vlan,
        ..PopNexthop::default()
    }
}
