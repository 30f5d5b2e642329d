//! `ifaces_by_index`, the per-CPU array that holds the interface records of
//! ifindexes below `IFACES_BY_INDEX` beside the hash `ifaces`, through
//! BPF_PROG_TEST_RUN: an interface found by index behaves exactly like one
//! found in the hash (an ifindex at or above the bound, or one popd has not
//! indexed), and popd's adoption of pinned maps makes the array agree with
//! the hash.
use etherparse::PacketBuilder;
use pop::dataplane::maps::Maps;
use pop_common::{
    maps, PopCustomerCounters, PopIface, PopIfaceCounters, IFACES_BY_INDEX, IFACE_PRESENT,
};
use pop_tests::testrun::vlan_lab::{vlan_lab, TAGGED_CUSTOMER};
use pop_tests::testrun::{in_netns, require_root, Harness, Port};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// The VLAN lab ([`vlan_lab`]) with the VLAN device at `vlan_dev` (slot 2).
/// `indexed`: the records are also written to ifaces_by_index, as popd does.
fn lab(names: (&str, &str), vlan_dev: u32, indexed: bool) -> (Harness, Port, Port) {
    let (mut h, customer, upstream) = vlan_lab(names.0, names.1, vlan_dev);
    if indexed {
        // The two ports, and the VLAN device when its ifindex is below the bound.
        let expected = if vlan_dev < IFACES_BY_INDEX { 3 } else { 2 };
        assert_eq!(h.index_ifaces().unwrap(), expected, "records indexed");
    }
    (h, customer, upstream)
}

fn udp4(dst_mac: [u8; 6], vlan: Option<u16>, src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0xaa, 1], dst_mac)
        .ipv4(src, dst, 64)
        .udp(1234, 53)
        .write(&mut frame, &vec![0u8; len])
        .unwrap();
    if let Some(vid) = vlan {
        let [hi, lo] = vid.to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, hi, lo]);
    }
    frame
}

/// What a user sees of a run of frames: each verdict and output frame, then
/// the counters of the three interface slots and of the customer.
#[derive(Debug, PartialEq)]
struct Seen {
    runs: Vec<(u32, Vec<u8>)>,
    slots: Vec<PopIfaceCounters>,
    customer: PopCustomerCounters,
}

fn run_frames(h: &Harness, customer: &Port, upstream: &Port) -> Seen {
    let frames = [
        // Tagged from the VLAN customer to the Internet: through the VLAN device.
        (
            customer.ifindex,
            udp4(
                customer.mac,
                Some(100),
                [10, 100, 0, 5],
                [100, 64, 0, 1],
                18,
            ),
        ),
        // From the Internet to the VLAN customer: tag pushed.
        (
            upstream.ifindex,
            udp4(upstream.mac, None, [100, 64, 0, 1], [10, 100, 0, 5], 300),
        ),
        // Untagged on the customer port: forwarded upstream.
        (
            customer.ifindex,
            udp4(customer.mac, None, [192, 0, 2, 1], [100, 64, 0, 2], 40),
        ),
        // An ARP frame: the kernel's.
        (customer.ifindex, {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&[2, 0, 0, 0, 0xaa, 1, 0x08, 0x06]);
            f.extend_from_slice(&[0u8; 28]);
            f
        }),
    ];
    let runs: Vec<_> = frames
        .iter()
        .map(|(ifindex, frame)| h.run(frame, *ifindex).unwrap())
        .collect();
    let expected = [XDP_REDIRECT, XDP_REDIRECT, XDP_REDIRECT, XDP_PASS];
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        expected,
        "verdicts"
    );
    Seen {
        runs,
        slots: (0..3).map(|s| h.iface_record(s).unwrap()).collect(),
        customer: h.customer_record(TAGGED_CUSTOMER).unwrap(),
    }
}

/// A port and a VLAN device found by index give the same verdicts, the same
/// output bytes and the same counters as when the data plane finds them in
/// the hash (VLAN device at ifindex 100100, above the bound; ports not
/// indexed).
#[test]
fn an_interface_found_by_index_behaves_like_one_found_in_the_hash() {
    require_root();
    let in_hash = in_netns(|| {
        let (h, cu, up) = lab(("ihcu", "ihup"), 100_100, false);
        run_frames(&h, &cu, &up)
    });
    let by_index = in_netns(|| {
        let (h, cu, up) = lab(("iicu", "iiup"), 4000, true);
        run_frames(&h, &cu, &up)
    });
    // The port MACs differ between the two namespaces' veths: compare with
    // the MACs masked out of the output frames.
    let mask = |mut s: Seen| {
        for (_, out) in &mut s.runs {
            out[..12].fill(0);
        }
        s
    };
    // Every slot counted frames: the interfaces were found.
    for (slot, record) in in_hash.slots.iter().enumerate() {
        assert_ne!(*record, PopIfaceCounters::default(), "slot {slot}");
    }
    assert_eq!(mask(in_hash), mask(by_index));
}

/// The test above can fail: with the records indexed, the data plane no
/// longer needs the hash entry of a port below the bound, and without them it
/// does.
#[test]
fn an_indexed_port_is_found_without_its_hash_entry() {
    require_root();
    in_netns(|| {
        for indexed in [false, true] {
            let names = if indexed {
                ("nxcu", "nxup")
            } else {
                ("hxcu", "hxup")
            };
            let (mut h, cu, _) = lab(names, 4000, indexed);
            let mut hash: aya::maps::HashMap<_, u32, PopIface> =
                aya::maps::HashMap::try_from(h.map_mut(maps::IFACES).unwrap()).unwrap();
            hash.remove(&cu.ifindex).unwrap();
            let sent = udp4(cu.mac, None, [192, 0, 2, 1], [100, 64, 0, 2], 40);
            let (action, _) = h.run(&sent, cu.ifindex).unwrap();
            let want = if indexed { XDP_REDIRECT } else { XDP_PASS };
            assert_eq!(action, want, "indexed {indexed}");
        }
    });
}

fn element(h: &Harness, ifindex: u32) -> Vec<PopIface> {
    let array: aya::maps::PerCpuArray<_, PopIface> =
        aya::maps::PerCpuArray::try_from(h.map(maps::IFACES_BY_INDEX).unwrap()).unwrap();
    array.get(&ifindex, 0).unwrap().to_vec()
}

fn set_element(h: &mut Harness, ifindex: u32, value: PopIface) {
    let cpus = aya::util::nr_cpus().unwrap();
    let mut array: aya::maps::PerCpuArray<_, PopIface> =
        aya::maps::PerCpuArray::try_from(h.map_mut(maps::IFACES_BY_INDEX).unwrap()).unwrap();
    let values = aya::maps::PerCpuValues::try_from(vec![value; cpus]).unwrap();
    array.set(ifindex, values, 0).unwrap();
}

/// popd adopting pinned maps (a restart) rewrites the array where it does
/// not say what the hash says: an element with the flag but no hash entry
/// (left behind by a build that did not write the array) is cleared, one
/// that differs is rewritten, a missing one is written; correct ones are
/// left alone. A frame on a stale element's port is then the kernel's, as
/// the hash says.
#[test]
fn adoption_makes_the_array_agree_with_the_hash() {
    require_root();
    in_netns(|| {
        let (mut h, cu, up) = lab(("adcu", "adup"), 4000, true);
        let cpus = aya::util::nr_cpus().unwrap();
        let hash_entry = |h: &Harness, ifindex: u32| {
            let hash: aya::maps::HashMap<_, u32, PopIface> =
                aya::maps::HashMap::try_from(h.map(maps::IFACES).unwrap()).unwrap();
            hash.get(&ifindex, 0).unwrap()
        };
        let present = |mut v: PopIface| {
            v.flags |= IFACE_PRESENT;
            v
        };
        // The customer port: removed from the hash, its element left.
        let stale = present(hash_entry(&h, cu.ifindex));
        {
            let mut hash: aya::maps::HashMap<_, u32, PopIface> =
                aya::maps::HashMap::try_from(h.map_mut(maps::IFACES).unwrap()).unwrap();
            hash.remove(&cu.ifindex).unwrap();
        }
        let sent = udp4(cu.mac, None, [192, 0, 2, 1], [100, 64, 0, 2], 40);
        assert_eq!(h.run(&sent, cu.ifindex).unwrap().0, XDP_REDIRECT);
        // The upstream port: its element differs from its hash entry.
        let up_record = hash_entry(&h, up.ifindex);
        set_element(
            &mut h,
            up.ifindex,
            present(PopIface {
                mtu: 9000,
                ..up_record
            }),
        );
        // The VLAN device: its element cleared (as after an upgrade from a
        // layout without the array).
        set_element(&mut h, 4000, PopIface::default());
        // A made-up ifindex with only an element.
        set_element(&mut h, 77, stale);

        let mut maps = Maps::open(h.pin_dir(), false).unwrap();
        // Opening synced: a second pass finds nothing to do.
        assert_eq!(maps.sync_ifaces_by_index().unwrap(), 0);
        drop(maps);

        assert_eq!(element(&h, cu.ifindex), vec![PopIface::default(); cpus]);
        assert_eq!(element(&h, 77), vec![PopIface::default(); cpus]);
        assert_eq!(element(&h, up.ifindex), vec![present(up_record); cpus]);
        let vlan_record = hash_entry(&h, 4000);
        assert_eq!(element(&h, 4000), vec![present(vlan_record); cpus]);
        // The customer port is gone for the data plane too.
        assert_eq!(h.run(&sent, cu.ifindex).unwrap().0, XDP_PASS);
    });
}

/// popd's writer: a record below the bound goes to both maps, one above only
/// to the hash; a removal clears the element and the hash entry.
#[test]
fn set_and_remove_write_both_maps() {
    require_root();
    in_netns(|| {
        let (h, _, _) = lab(("swcu", "swup"), 100_100, false);
        let cpus = aya::util::nr_cpus().unwrap();
        let mut maps = Maps::open(h.pin_dir(), true).unwrap();
        let record = PopIface {
            slot: 9,
            mtu: 1400,
            ..PopIface::default()
        };
        maps.set_iface(300, record).unwrap();
        maps.set_iface(IFACES_BY_INDEX, record).unwrap();
        assert_eq!(maps.ifaces.get(&300, 0).unwrap(), record);
        assert_eq!(maps.ifaces.get(&IFACES_BY_INDEX, 0).unwrap(), record);
        let present = PopIface {
            flags: IFACE_PRESENT,
            ..record
        };
        assert_eq!(element(&h, 300), vec![present; cpus]);
        maps.remove_iface(300).unwrap();
        maps.remove_iface(IFACES_BY_INDEX).unwrap();
        assert!(maps.ifaces.get(&300, 0).is_err());
        assert!(maps.ifaces.get(&IFACES_BY_INDEX, 0).is_err());
        assert_eq!(element(&h, 300), vec![PopIface::default(); cpus]);
    });
}
