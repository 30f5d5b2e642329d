//! Sampling and capture in the data plane, through BPF_PROG_TEST_RUN: what
//! lands in `sample_ring` and `capture_ring` for forwarded and dropped
//! packets (verdict, ports, bytes), the capture filters, the random skip's
//! rate and the sample pool, and that nothing is recorded when nothing is
//! armed.
use aya::maps::{Array, MapData, RingBuf};
use etherparse::PacketBuilder;
use pop_common::{
    maps, Action, DropReason, PopCapture, PopObserveConfig, PopSample, CAPTURE_BYTES,
    CAPTURE_DROPS, CAPTURE_DROP_REASON, CAPTURE_IFACE, CAPTURE_ON,
};
use pop_tests::testrun::{customer_and_upstream, in_netns, require_root, Harness, Port};

const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;

struct Lab {
    h: Harness,
    customer: Port,
    upstream: Port,
}

fn lab() -> Lab {
    let (mut h, customer, upstream) = customer_and_upstream("obcu", "obup");
    h.add_route_v4("0.0.0.0/0", &[1], 0).unwrap();
    Lab {
        h,
        customer,
        upstream,
    }
}

fn udp(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], dst_mac)
        .ipv4(src, dst, 64)
        .udp(1234, 53);
    let payload = [7u8; 200];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn set(h: &mut Harness, c: PopObserveConfig) {
    let mut map: Array<&mut MapData, PopObserveConfig> =
        Array::try_from(h.map_mut(maps::OBSERVE_CONFIG).unwrap()).unwrap();
    map.set(0, c, 0).unwrap();
}

fn samples(h: &mut Harness) -> Vec<PopSample> {
    let mut ring = RingBuf::try_from(h.map_mut(maps::SAMPLE_RING).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<PopSample>());
        // SAFETY: a struct pop_sample (checked length).
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

fn captures(h: &mut Harness) -> Vec<PopCapture> {
    let mut ring = RingBuf::try_from(h.map_mut(maps::CAPTURE_RING).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<PopCapture>());
        // SAFETY: a struct pop_capture (checked length).
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

fn capture_all(snaplen: u32) -> PopObserveConfig {
    PopObserveConfig {
        capture: CAPTURE_ON,
        capture_snaplen: snaplen,
        capture_interval_ns: 1,
        capture_burst_ns: 1_000_000_000,
        ..Default::default()
    }
}

#[test]
fn samples_and_captures_carry_the_verdict() {
    require_root();
    in_netns(|| {
        let Lab {
            mut h,
            customer,
            upstream,
        } = lab();
        let forwarded = udp(customer.mac, [198, 51, 100, 10], [100, 64, 0, 1]);
        let martian = udp(customer.mac, [127, 0, 0, 1], [100, 64, 0, 1]);

        // Nothing armed: nothing recorded.
        assert_eq!(h.run(&forwarded, customer.ifindex).unwrap().0, XDP_REDIRECT);
        assert!(samples(&mut h).is_empty() && captures(&mut h).is_empty());

        // Every packet sampled and captured.
        set(
            &mut h,
            PopObserveConfig {
                sampling_rate: 1,
                ..capture_all(64)
            },
        );
        let (action, out) = h.run(&forwarded, customer.ifindex).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(h.run(&martian, customer.ifindex).unwrap().0, XDP_DROP);
        let s = samples(&mut h);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].action, s[0].ingress_ifindex, s[0].egress_ifindex),
            (Action::Redirect as u32, customer.ifindex, upstream.ifindex)
        );
        assert_eq!(s[0].frame_len as usize, forwarded.len());
        assert_eq!(s[0].header_len, 128);
        assert_eq!(
            &s[0].header[..],
            &forwarded[..128],
            "the frame as it arrived"
        );
        assert_eq!((s[0].sampling_rate, s[0].skipped), (1, 1));
        assert_eq!(
            (s[1].action, s[1].reason, s[1].egress_ifindex),
            (Action::Drop as u32, DropReason::Martian as u32, 0)
        );
        let c = captures(&mut h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].capture_len, 64, "snaplen");
        assert_eq!(c[0].frame_len as usize, forwarded.len());
        assert_eq!(&c[0].data[..64], &out[..64], "the frame as it left");
        assert_eq!(
            (c[1].action, c[1].reason, c[1].ingress_ifindex),
            (
                Action::Drop as u32,
                DropReason::Martian as u32,
                customer.ifindex
            )
        );
        assert!(c[1].timestamp_ns >= c[0].timestamp_ns && c[0].timestamp_ns > 0);

        // Filters: drops only, a drop reason, an interface.
        let filters: [(u32, u32, u32, usize); 4] = [
            (CAPTURE_DROPS, 0, 0, 1),
            (
                CAPTURE_DROPS | CAPTURE_DROP_REASON,
                DropReason::Acl as u32,
                0,
                0,
            ),
            (
                CAPTURE_DROPS | CAPTURE_DROP_REASON,
                DropReason::Martian as u32,
                0,
                1,
            ),
            (CAPTURE_IFACE, 0, upstream.ifindex, 1),
        ];
        for (flags, reason, ifindex, want) in filters {
            set(
                &mut h,
                PopObserveConfig {
                    capture: CAPTURE_ON | flags,
                    capture_reason: reason,
                    capture_ifindex: ifindex,
                    ..capture_all(CAPTURE_BYTES as u32)
                },
            );
            h.run(&forwarded, customer.ifindex).unwrap();
            h.run(&martian, customer.ifindex).unwrap();
            let c = captures(&mut h);
            assert_eq!(c.len(), want, "filter {flags:#x} reason {reason}: {c:?}");
            if flags == CAPTURE_IFACE {
                assert_eq!(c[0].egress_ifindex, upstream.ifindex, "out by the port");
                assert_eq!(c[0].capture_len as usize, forwarded.len(), "whole frame");
            }
        }
        assert!(
            samples(&mut h).is_empty(),
            "sampling off with capture alone"
        );

        // The rate bound: a burst of 3 packets, then one per second. The
        // bucket is per CPU: stay on one.
        let mut one = nix::sched::CpuSet::new();
        one.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
        set(
            &mut h,
            PopObserveConfig {
                capture_interval_ns: 1_000_000_000,
                capture_burst_ns: 2_500_000_000,
                ..capture_all(64)
            },
        );
        for _ in 0..10 {
            h.run(&martian, customer.ifindex).unwrap();
        }
        assert_eq!(captures(&mut h).len(), 3);
    });
}

#[test]
fn one_in_n_with_random_skips_and_a_sample_pool() {
    require_root();
    in_netns(|| {
        let Lab {
            mut h, customer, ..
        } = lab();
        // A dropped frame stays the same across repeats.
        let martian = udp(customer.mac, [127, 0, 0, 1], [100, 64, 0, 1]);
        const RATE: u32 = 20;
        const RUNS: u32 = 20_000;
        set(
            &mut h,
            PopObserveConfig {
                sampling_rate: RATE,
                ..Default::default()
            },
        );
        h.ns_per_packet(
            pop_tests::testrun::Program::Pop,
            &martian,
            customer.ifindex,
            RUNS,
        )
        .unwrap();
        let s = samples(&mut h);
        // ns_per_packet runs the frame once more to learn its action.
        let runs = RUNS + 1;
        let expected = runs / RATE;
        assert!(
            (s.len() as f64 - expected as f64).abs() < expected as f64 * 0.15,
            "{} samples of {runs} packets at 1 in {RATE}, expected about {expected}",
            s.len()
        );
        // Skips are random: not all the same.
        let skips: std::collections::BTreeSet<u32> = s.iter().map(|x| x.skipped).collect();
        assert!(skips.len() > 10, "skips {skips:?}");
        assert!(skips.iter().all(|k| (1..2 * RATE).contains(k)), "{skips:?}");
        // The pool: every packet up to the last sample, counted once.
        let pool: u32 = s.iter().map(|x| x.skipped).sum();
        assert!(
            pool <= runs && pool + 2 * RATE > runs,
            "pool {pool} for {runs} packets"
        );
    });
}
