//! 802.1Q through BPF_PROG_TEST_RUN (steps 1 and 8 of the packet path): a tagged
//! frame whose (port, VLAN id) popd serves is handled as arriving on that VLAN
//! device, and a packet leaves with its next hop's tag: kept with a new id,
//! pushed, or popped. Unknown ids and double tags go to the kernel.
//!
//! The kernel here has no 802.1Q support (CONFIG_VLAN_8021Q unset), so no
//! VLAN device exists: the tests give the maps a made-up device ifindex, which
//! is all the data plane sees of one.
use etherparse::{EtherType, Ethernet2Header, PacketBuilder, SlicedPacket};
use pop_common::{Action, Direction, DropReason, PassReason, Role};
use pop_tests::testrun::vlan_lab::{
    nexthop, vlan_lab, NH_UP, TAGGED_CUSTOMER, TAGGED_MAC, UPSTREAM_MAC,
};
use pop_tests::testrun::{in_netns, require_root, Harness, Port};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// The made-up VLAN device for id 100 on the customer port.
const VLAN_DEV: u32 = 100_100;
const OTHER_VLAN_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 2];
const NH_OTHER_VLAN: u32 = 3;

struct Lab {
    h: Harness,
    customer: Port,
    upstream: Port,
}

/// The VLAN lab ([`vlan_lab`]: customer port with VLAN 100, its device
/// VLAN_DEV in slot 2, where 10.100.0.0/24 lives; upstream port with the
/// default route), plus a VLAN 200 next hop for 10.200.0.0/24 on the same
/// port and an IPv6 default route upstream.
fn lab() -> Lab {
    let (mut h, customer, upstream) = vlan_lab("vlcu", "vlup", VLAN_DEV);
    h.set_nexthop(NH_OTHER_VLAN, nexthop(&customer, OTHER_VLAN_MAC, 200))
        .unwrap();
    h.add_route_v4("10.200.0.0/24", &[NH_OTHER_VLAN], 0)
        .unwrap();
    h.add_route_v6("::/0", &[NH_UP], 0).unwrap();
    Lab {
        h,
        customer,
        upstream,
    }
}

/// A UDP frame to `dst_mac`, tagged with `tags` (outermost first; the PCP
/// bits of each tag are 5).
fn udp4(dst_mac: [u8; 6], tags: &[u16], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0xaa, 1], dst_mac)
        .ipv4(src, dst, 64)
        .udp(1234, 53)
        .write(&mut frame, &[0u8; 18])
        .unwrap();
    for vid in tags.iter().rev() {
        let tci = (5u16 << 13) | vid;
        let [hi, lo] = tci.to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, hi, lo]);
    }
    frame
}

/// The VLAN ids of a frame, outermost first, and its inner EtherType.
fn tags(frame: &[u8]) -> (Vec<(u16, u8)>, u16) {
    let mut at = 12;
    let mut out = Vec::new();
    loop {
        let ether_type = u16::from_be_bytes([frame[at], frame[at + 1]]);
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            return (out, ether_type);
        }
        let tci = u16::from_be_bytes([frame[at + 2], frame[at + 3]]);
        out.push((tci & 0x0fff, (tci >> 13) as u8));
        at += 4;
    }
}

/// The IPv4 header and payload of a frame with any tags.
fn l3(frame: &[u8]) -> &[u8] {
    let (t, _) = tags(frame);
    &frame[14 + 4 * t.len()..]
}

fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    let (eth, _) = Ethernet2Header::from_slice(frame).unwrap();
    (eth.destination, eth.source)
}

/// TTL - 1 and a correct checksum, everything else as sent.
fn assert_forwarded_l3(case: &str, sent: &[u8], out: &[u8]) {
    let (a, b) = (l3(sent), l3(out));
    assert_eq!(a.len(), b.len(), "{case}: IP length");
    assert_eq!(b[8], a[8] - 1, "{case}: TTL");
    let ip = etherparse::Ipv4HeaderSlice::from_slice(b).unwrap();
    assert_eq!(
        ip.header_checksum(),
        ip.to_header().calc_header_checksum(),
        "{case}: IPv4 checksum"
    );
    assert_eq!(&a[20..], &b[20..], "{case}: payload");
}

#[test]
fn tags_are_kept_pushed_popped_and_rewritten_for_the_next_hop() {
    require_root();
    in_netns(|| {
        let lab = lab();
        let (cu, up) = (&lab.customer, &lab.upstream);

        // Tagged 100 in, untagged out upstream: the tag is popped.
        let sent = udp4(cu.mac, &[100], [10, 100, 0, 5], [100, 64, 0, 1]);
        let (action, out) = lab.h.run(&sent, cu.ifindex).unwrap();
        assert_eq!(action, XDP_REDIRECT, "tagged → upstream");
        assert_eq!(out.len(), sent.len() - 4, "tag popped");
        assert_eq!(tags(&out), (vec![], 0x0800));
        assert_eq!(macs(&out), (UPSTREAM_MAC, up.mac));
        assert_forwarded_l3("pop", &sent, &out);
        assert!(SlicedPacket::from_ethernet(&out).is_ok());

        // Untagged from upstream to the VLAN customer: tag 100 pushed.
        let sent = udp4(up.mac, &[], [100, 64, 0, 1], [10, 100, 0, 5]);
        let (action, out) = lab.h.run(&sent, up.ifindex).unwrap();
        assert_eq!(action, XDP_REDIRECT, "upstream → tagged");
        assert_eq!(out.len(), sent.len() + 4, "tag pushed");
        assert_eq!(tags(&out), (vec![(100, 0)], 0x0800));
        assert_eq!(macs(&out), (TAGGED_MAC, cu.mac));
        assert_forwarded_l3("push", &sent, &out);

        // Tagged 100 in, VLAN 200 next hop on the same port: XDP_TX with the
        // id rewritten and the priority bits kept.
        let sent = udp4(cu.mac, &[100], [10, 100, 0, 5], [10, 200, 0, 9]);
        let (action, out) = lab.h.run(&sent, cu.ifindex).unwrap();
        assert_eq!(action, XDP_TX, "VLAN 100 → VLAN 200 on the same port");
        assert_eq!(out.len(), sent.len());
        assert_eq!(tags(&out), (vec![(200, 5)], 0x0800));
        assert_eq!(macs(&out), (OTHER_VLAN_MAC, cu.mac));
        assert_forwarded_l3("rewrite", &sent, &out);

        // Tagged traffic is counted on the VLAN device's slot and to the
        // customer of its source.
        let before = lab.h.iface_stats(2, Action::Redirect).unwrap().packets;
        let out_before = lab.h.cust_stats(TAGGED_CUSTOMER, Direction::Out).unwrap();
        let sent = udp4(cu.mac, &[100], [10, 100, 0, 5], [100, 64, 0, 1]);
        assert_eq!(lab.h.run(&sent, cu.ifindex).unwrap().0, XDP_REDIRECT);
        assert_eq!(
            lab.h.iface_stats(2, Action::Redirect).unwrap().packets,
            before + 1
        );
        let out_after = lab.h.cust_stats(TAGGED_CUSTOMER, Direction::Out).unwrap();
        assert_eq!(out_after.packets, out_before.packets + 1);
        assert_eq!(out_after.bytes, out_before.bytes + sent.len() as u64);
    });
}

#[test]
fn unknown_ids_double_tags_and_broken_tags_are_not_forwarded() {
    require_root();
    in_netns(|| {
        let lab = lab();
        let cu = &lab.customer;
        let vlan_passes = || lab.h.pass_stats(PassReason::Vlan).unwrap().packets;
        for (case, sent) in [
            (
                "unknown id 300",
                udp4(cu.mac, &[300], [10, 100, 0, 5], [100, 64, 0, 1]),
            ),
            (
                "double tag (QinQ)",
                udp4(cu.mac, &[100, 100], [10, 100, 0, 5], [100, 64, 0, 1]),
            ),
        ] {
            let before = vlan_passes();
            let (action, out) = lab.h.run(&sent, cu.ifindex).unwrap();
            assert_eq!(action, XDP_PASS, "{case}");
            assert_eq!(out, sent, "{case}: unchanged for the kernel");
            assert_eq!(vlan_passes(), before + 1, "{case}: counted as vlan pass");
        }
        // A tag on the upstream port, where no id is served: the kernel's.
        let sent = udp4(lab.upstream.mac, &[100], [100, 64, 0, 1], [10, 100, 0, 5]);
        assert_eq!(lab.h.run(&sent, lab.upstream.ifindex).unwrap().0, XDP_PASS);
        // The frame ends inside the tag: malformed.
        let mut cut = udp4(cu.mac, &[], [10, 100, 0, 5], [100, 64, 0, 1]);
        cut.truncate(14);
        cut[12..14].copy_from_slice(&[0x81, 0x00]);
        cut.extend_from_slice(&[0x00]);
        let before = lab.h.drop_stats(DropReason::Malformed).unwrap().packets;
        assert_eq!(lab.h.run(&cut, cu.ifindex).unwrap().0, XDP_DROP);
        assert_eq!(
            lab.h.drop_stats(DropReason::Malformed).unwrap().packets,
            before + 1
        );
    });
}

#[test]
fn ipv6_over_a_vlan() {
    require_root();
    in_netns(|| {
        let lab = lab();
        let cu = &lab.customer;
        let mut sent = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0xaa, 1], cu.mac)
            .ipv6(
                "2001:db8:a::10"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                "2001:db8:ffff:1::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                64,
            )
            .udp(1234, 53)
            .write(&mut sent, &[0u8; 18])
            .unwrap();
        sent.splice(12..12, [0x81, 0x00, 0x00, 100]);
        let (action, out) = lab.h.run(&sent, cu.ifindex).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(tags(&out), (vec![], EtherType::IPV6.0));
        assert_eq!(out[14 + 7], 63, "hop limit - 1");
        assert_eq!(&out[14 + 8..], &sent[18 + 8..], "addresses and payload");
    });
}

/// An ICMP error about a tagged packet leaves with the packet's tag (id and
/// priority bits), MACs swapped, from the VLAN device's own address, not the
/// port's.
#[test]
fn icmp_errors_keep_the_tag_and_come_from_the_vlan_device() {
    require_root();
    in_netns(|| {
        let mut lab = lab();
        let cu = lab.customer.clone();
        let port_src: std::net::Ipv4Addr = "198.51.100.1".parse().unwrap();
        let vlan_src: std::net::Ipv4Addr = "10.100.0.1".parse().unwrap();
        lab.h
            .set_icmp_sources(cu.ifindex, Some(port_src), None)
            .unwrap();
        lab.h
            .set_icmp_sources(VLAN_DEV, Some(vlan_src), None)
            .unwrap();
        let mut sent = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0xaa, 1], cu.mac)
            .ipv4([10, 100, 0, 5], [100, 64, 0, 1], 1)
            .udp(1234, 53)
            .write(&mut sent, &[0u8; 18])
            .unwrap();
        let tci = (5u16 << 13) | 100;
        let [hi, lo] = tci.to_be_bytes();
        sent.splice(12..12, [0x81, 0x00, hi, lo]);

        let (action, out) = lab.h.run(&sent, cu.ifindex).unwrap();
        assert_eq!(action, XDP_TX, "answered out of the port it came in on");
        assert_eq!(tags(&out), (vec![(100, 5)], 0x0800), "tag kept");
        assert_eq!(macs(&out), ([2, 0, 0, 0, 0xaa, 1], cu.mac), "MACs swapped");
        let p = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {p:?}")
        };
        assert_eq!(
            ip.header().source_addr(),
            vlan_src,
            "the VLAN device's address"
        );
        assert_eq!(ip.header().destination_addr().octets(), [10, 100, 0, 5]);
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP: {p:?}")
        };
        assert_eq!(icmp.type_u8(), 11, "time exceeded");
        let want = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(icmp.checksum(), want.checksum, "ICMP checksum");
        assert_eq!(icmp.payload(), l3(&sent), "the whole packet quoted");
        assert_eq!(
            lab.h.iface_stats(2, Action::Tx).unwrap().packets,
            1,
            "counted as tx on the VLAN device's slot"
        );
    });
}

/// On a VLAN device the host accepts its own MAC and, like the kernel, its
/// port's (popd puts the port's in `upper_macs` when the two differ); a
/// tagged frame to any other MAC is another host's.
#[test]
fn a_vlan_device_accepts_its_own_mac_and_its_ports() {
    require_root();
    in_netns(|| {
        let mut lab = lab();
        let cu = lab.customer.clone();
        let vlan_mac = [2, 0, 0, 0, 0x10, 0x64];
        lab.h
            .set_iface_with_mac(VLAN_DEV, 2, Role::Customer, 1500, vlan_mac)
            .unwrap();
        let other_host = |h: &Harness| h.drop_stats(DropReason::OtherHost).unwrap().packets;
        let to = |mac| udp4(mac, &[100], [10, 100, 0, 5], [100, 64, 0, 1]);

        let before = other_host(&lab.h);
        assert_eq!(
            lab.h.run(&to(vlan_mac), cu.ifindex).unwrap().0,
            XDP_REDIRECT
        );
        assert_eq!(lab.h.run(&to(cu.mac), cu.ifindex).unwrap().0, XDP_DROP);
        assert_eq!(
            other_host(&lab.h),
            before + 1,
            "port's MAC not yet accepted"
        );
        lab.h.add_upper_mac(VLAN_DEV, cu.mac, cu.ifindex).unwrap();
        assert_eq!(lab.h.run(&to(cu.mac), cu.ifindex).unwrap().0, XDP_REDIRECT);
        let (action, out) = lab.h.run(&to([2, 0, 0, 0, 0x99, 1]), cu.ifindex).unwrap();
        assert_eq!((action, out), (XDP_DROP, to([2, 0, 0, 0, 0x99, 1])));
        assert_eq!(other_host(&lab.h), before + 2);
        // Untagged on the port, the VLAN device's MAC is another host's.
        let untagged = udp4(vlan_mac, &[], [10, 100, 0, 5], [100, 64, 0, 1]);
        assert_eq!(lab.h.run(&untagged, cu.ifindex).unwrap().0, XDP_DROP);
        assert_eq!(other_host(&lab.h), before + 3);
    });
}
