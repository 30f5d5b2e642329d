//! The IPv6 FIB (`pop-ebpf/src/fib6.h`, written by `pop::dataplane::fib6`)
//! in the kernel: the test object's `fib6_get` program looks up destinations
//! in maps filled through mmap by the writer, and must agree with a
//! reference longest-prefix match on 20,000 random addresses of an
//! Internet-shaped table (200k routes in a release build, 30k in debug),
//! before and after incremental changes; a full node map refuses a route
//! and changes nothing. Also (ignored by default, run with `--release --
//! --ignored --nocapture`) the cost of a lookup against the kernel's LPM
//! trie at 200k routes.
use std::collections::HashMap;
use std::net::Ipv6Addr;

use aya::maps::{lpm_trie::Key, Array, LpmTrie};
use pop::dataplane::fib6::{Fib6, Fib6Error, MmapBackend, Prefix6};
use pop_common::fib6::{maps as names, FIB6_MAX_NODES};
use pop_tests::rng::Rng;
use pop_tests::testrun::{time_ms, TestObject};

/// The obvious longest-prefix match: one hash map per length.
struct Reference(Vec<HashMap<u128, u32>>);

impl Reference {
    fn answer(&self, addr: u128) -> u32 {
        (0..=128u8)
            .rev()
            .find_map(|l| self.0[l as usize].get(&(addr & Prefix6::mask(l))).copied())
            .unwrap_or(0)
    }
}

struct Table {
    routes: Vec<(Prefix6, u32)>,
    reference: Reference,
}

fn prefix(bits: u128, len: u8) -> Prefix6 {
    Prefix6::new((bits & Prefix6::mask(len)).into(), len).unwrap()
}

/// `n` routes shaped like the IPv6 Internet table: allocations (/29-/32,
/// 22% of the table) at random in the RIRs' blocks (2001::/16, 2400::/12,
/// 2600::/12, 2800::/12, 2a00::/12, 2c00::/12), and more-specifics inside
/// them: 21% /33-/47, 48% /48 (most of an allocation's /48s in a few /40s),
/// 4% /56, 3% /64, 1% /128 (blackholes). Record ids 1..=64.
fn table(seed: u64, n: usize) -> Table {
    let mut rng = Rng(seed);
    let pools: [(u128, u8); 6] = [
        (0x2001, 16),
        (0x240, 12),
        (0x260, 12),
        (0x280, 12),
        (0x2a0, 12),
        (0x2c0, 12),
    ];
    let mut allocations = vec![];
    for _ in 0..n * 22 / 100 {
        let (top, l) = pools[rng.below(6) as usize];
        let len = [32, 32, 32, 32, 32, 32, 32, 32, 32, 29, 30, 31][rng.below(12) as usize];
        allocations.push(prefix(top << (128 - l) | (rng.bits() >> l), len));
    }
    let mut routes: Vec<(Prefix6, u32)> = allocations
        .iter()
        .map(|p| (*p, 1 + rng.below(64) as u32))
        .collect();
    while routes.len() < n {
        // Some allocations hold many more-specifics.
        let a = if rng.below(2) == 0 {
            allocations[rng.below(allocations.len() as u64) as usize]
        } else {
            let skew = 1 + rng.below(allocations.len() as u64);
            allocations[rng.below(skew) as usize]
        };
        let len = match rng.below(100) {
            0..=20 => [
                33, 34, 35, 36, 36, 36, 38, 40, 40, 40, 42, 44, 44, 44, 46, 47,
            ][rng.below(16) as usize],
            21..=68 => 48,
            69..=72 => 56,
            73..=75 => 64,
            76 => 128,
            _ => continue,
        };
        let host = !Prefix6::mask(a.prefix_len());
        let mut low = rng.bits();
        if len == 48 && rng.below(10) < 7 {
            // One of 8 /40s of the allocation.
            low = (u128::from(rng.below(8)) << 88) | (u128::from(rng.below(256)) << 80);
        }
        let p = prefix(a.bits() | (low & host), len);
        routes.push((p, 1 + rng.below(64) as u32));
    }
    let mut reference = Reference(vec![HashMap::new(); 129]);
    for (p, id) in &routes {
        reference.0[usize::from(p.prefix_len())].insert(p.bits(), *id);
    }
    Table { routes, reference }
}

/// A random address inside a random route (or anywhere, 1 in 8).
/// An address at random (1 in 8), in a route of the table, or (1 in 4) in
/// a route but for one bit of its prefix below /20: the neighbours where a
/// walk that skipped or expanded a level wrongly would answer wrong.
fn random_address(rng: &mut Rng, t: &Table) -> u128 {
    if rng.below(8) == 0 {
        return rng.bits();
    }
    let p = t.routes[rng.below(t.routes.len() as u64) as usize].0;
    let a = p.bits() | (rng.bits() & !Prefix6::mask(p.prefix_len()));
    let len = u64::from(p.prefix_len());
    if len > 20 && rng.below(3) == 0 {
        return a ^ (1u128 << (127 - (20 + rng.below(len - 20))));
    }
    a
}

/// The test object loaded, maps pinned in a private bpffs directory.
fn load() -> TestObject {
    TestObject::load(
        "fib6",
        pop_ebpf::fib6_test_object(),
        &["fib6_get", "fib6_bench", "lpm6_bench", "base6_bench"],
    )
}

fn fib(loaded: &TestObject) -> Fib6<MmapBackend> {
    Fib6::new(
        MmapBackend::new(
            loaded.array(names::FIB6_ROOT),
            loaded.array(names::FIB6_NODES),
        )
        .expect("mapping the fib6 maps"),
    )
}

/// What the kernel program answers for `addr`: the route record id.
fn kernel_lookup(loaded: &TestObject, addr: u128) -> u32 {
    let mut frame = [0u8; 14 + 40 + 4];
    frame[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    frame[14] = 0x60;
    frame[38..54].copy_from_slice(&addr.to_be_bytes());
    let mut out = [0u8; 64];
    let action = loaded.run_once("fib6_get", &frame, &mut out);
    assert_eq!(action, 3, "fib6_get: not XDP_TX");
    u32::from_ne_bytes(out[54..58].try_into().unwrap())
}

fn check_kernel_agrees(loaded: &TestObject, t: &Table, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        let addr = random_address(rng, t);
        assert_eq!(
            kernel_lookup(loaded, addr),
            t.reference.answer(addr),
            "{}",
            Ipv6Addr::from(addr)
        );
    }
}

fn load_table(fib: &mut Fib6<MmapBackend>, t: &Table) {
    for (p, id) in &t.routes {
        fib.set_route(*p, *id).unwrap();
    }
}

fn kernel_agrees(n: usize) {
    let mut t = table(11, n);
    let loaded = load();
    let mut fib = fib(&loaded);
    load_table(&mut fib, &t);
    let mut rng = Rng(99);
    check_kernel_agrees(&loaded, &t, &mut rng, 20_000);
    // A restarted writer adopts the filled maps with the same routes.
    let routes: Vec<_> = fib.routes().collect();
    let mut fib = Fib6::adopt(fib.into_backend(), routes).unwrap();
    // Incremental changes through the same mapping: the kernel sees them.
    for i in 0..2_000 {
        let (p, _) = t.routes[rng.below(t.routes.len() as u64) as usize];
        if i % 2 == 0 {
            fib.del_route(p).unwrap();
            t.reference.0[usize::from(p.prefix_len())].remove(&p.bits());
        } else {
            let extra = table(rng.next(), 10);
            let (q, id) = extra.routes[rng.below(10) as usize];
            fib.set_route(q, id).unwrap();
            t.reference.0[usize::from(q.prefix_len())].insert(q.bits(), id);
            t.routes.push((q, id));
        }
    }
    fib.set_route(prefix(0, 0), 77).unwrap();
    t.reference.0[0].insert(0, 77);
    check_kernel_agrees(&loaded, &t, &mut rng, 20_000);
}

#[test]
fn kernel_lookups_agree_with_the_reference() {
    kernel_agrees(if cfg!(debug_assertions) {
        30_000
    } else {
        200_000
    });
}

#[test]
#[ignore = "the full size in a debug build: cargo test -p pop-tests --test fib6 -- --ignored"]
fn kernel_lookups_agree_with_the_reference_at_200k_routes() {
    kernel_agrees(200_000);
}

/// The real node map fills up: the route that does not fit is refused with
/// the map and its size, and every lookup answers as before.
#[test]
fn a_full_node_map_refuses_the_route_and_changes_nothing() {
    let loaded = load();
    let mut fib = fib(&loaded);
    fib.set_route(prefix(0x2000 << 112, 3), 1).unwrap();
    // A /128 in a /20 of its own takes 27 nodes.
    let host = |i: u128| (0x2000u128 << 112) | (i << 108) | 1;
    let fit = FIB6_MAX_NODES / 27;
    for i in 0..u128::from(fit) {
        fib.set_route(prefix(host(i), 128), 2).unwrap();
    }
    let last = prefix(host(u128::from(fit)), 128);
    let err = fib.set_route(last, 3).unwrap_err();
    assert_eq!(
        err,
        Fib6Error::NodesFull {
            what: "route",
            prefix: last,
            needed: 27,
            free: FIB6_MAX_NODES - fit * 27,
            limit: FIB6_MAX_NODES
        }
    );
    assert!(err.to_string().ends_with("(map fib6_nodes)"), "{err}");
    assert_eq!(kernel_lookup(&loaded, last.bits()), 1);
    assert_eq!(kernel_lookup(&loaded, host(5)), 2);
    assert_eq!(fib.stats().nodes_used, fit * 27);
    // A route that needs no node still fits.
    fib.set_route(prefix(0x3000 << 112, 4), 4).unwrap();
    assert_eq!(kernel_lookup(&loaded, 0x3000 << 112), 4);
}

/// Lookup cost at 200k routes, fib6 against the kernel LPM trie, over 64k
/// random destinations drawn from the table; load and change times and the
/// node count. Prints the figures docs/fib.md quotes.
#[test]
#[ignore = "a measurement: cargo test --release -p pop-tests --test fib6 -- --ignored --nocapture"]
fn measure_200k_routes() {
    let n = 200_000;
    let t = table(5, n);
    let mut lens = [0usize; 129];
    for (p, _) in &t.routes {
        lens[usize::from(p.prefix_len())] += 1;
    }
    let shape: Vec<String> = (0..=128)
        .filter(|l| lens[*l] * 100 >= n)
        .map(|l| format!("/{l} {:.0}%", lens[l] as f64 * 100.0 / n as f64))
        .collect();
    println!("table: {}", shape.join(", "));
    let mut loaded = load();
    let mut fib = fib(&loaded);
    let ms = time_ms(|| load_table(&mut fib, &t));
    // The same routes in address order (as a kernel dump lists them): a
    // route's nodes land next to its neighbours', fewer pages per lookup.
    let mut sorted = Table {
        routes: t.routes.clone(),
        reference: Reference(vec![]),
    };
    sorted.routes.sort();
    let loaded_sorted = load();
    let mut fib_sorted = self::fib(&loaded_sorted);
    load_table(&mut fib_sorted, &sorted);
    let s = fib.stats();
    println!(
        "loaded {} routes one set_route at a time in {ms:.0} ms ({:.2} us each); {} nodes \
         = {:.1} MB of {} ({:.0} MB)",
        s.routes,
        ms * 1e3 / n as f64,
        s.nodes_used,
        s.nodes_used as f64 * 64.0 / 1048576.0,
        s.node_limit,
        s.node_limit as f64 * 64.0 / 1048576.0
    );
    let mut rng = Rng(17);
    check_kernel_agrees(&loaded, &t, &mut rng, 20_000);
    println!("20000 random lookups in the kernel agree with the reference LPM");
    let routes: Vec<_> = fib.routes().collect();
    let mut adopted = None;
    let ms = time_ms(|| adopted = Some(Fib6::adopt(fib.into_backend(), routes).unwrap()));
    let mut fib = adopted.unwrap();
    println!("adopting the filled maps with the same routes: {ms:.0} ms");
    for (text, len) in [
        ("2001:db8::", 32),
        ("2001:db8:1::", 48),
        ("2001:db8:1:2::", 64),
        ("2001:db8:1:2::9", 128),
        ("3000::", 4),
    ] {
        let p = Prefix6::new(text.parse().unwrap(), len).unwrap();
        let add = time_ms(|| fib.set_route(p, 999).unwrap());
        let change = time_ms(|| fib.set_route(p, 998).unwrap());
        let del = time_ms(|| assert!(fib.del_route(p).unwrap()));
        println!("{p} on top of 200k: add {add:.3} ms, change {change:.3} ms, delete {del:.3} ms");
    }
    let ms = time_ms(|| fib.set_route(prefix(0, 0), 5).unwrap());
    println!("::/0 on top of 200k: add {ms:.1} ms");
    fib.del_route(prefix(0, 0)).unwrap();

    // The kernel LPM trie with the same routes; and both with 1 route.
    let mut trie: LpmTrie<_, [u8; 16], u32> =
        LpmTrie::try_from(loaded.ebpf.take_map("lpm6_routes").unwrap()).unwrap();
    let ms = time_ms(|| {
        for (p, id) in &t.routes {
            trie.insert(
                &Key::new(u32::from(p.prefix_len()), p.addr().octets()),
                *id,
                0,
            )
            .unwrap();
        }
    });
    println!("LPM trie: {n} inserts (one syscall each) in {ms:.0} ms");
    let mut loaded_1 = load();
    let mut fib_1 = self::fib(&loaded_1);
    fib_1.set_route(prefix(0, 0), 1).unwrap();
    let mut trie_1: LpmTrie<_, [u8; 16], u32> =
        LpmTrie::try_from(loaded_1.ebpf.take_map("lpm6_routes").unwrap()).unwrap();
    trie_1.insert(&Key::new(0, [0; 16]), 1, 0).unwrap();
    let mut loaded_sorted = loaded_sorted;
    for l in [&mut loaded, &mut loaded_1, &mut loaded_sorted] {
        let mut rng = Rng(3);
        let mut addrs: Array<_, [u8; 16]> =
            Array::try_from(l.ebpf.take_map("bench_addrs6").unwrap()).unwrap();
        for i in 0..65_536u32 {
            addrs
                .set(i, random_address(&mut rng, &t).to_be_bytes(), 0)
                .unwrap();
        }
    }
    // Alternate the cases, best of 9 rounds each, so that load from other
    // processes hits them alike.
    let cases = [
        (&loaded, "base6_bench"),
        (&loaded, "fib6_bench"),
        (&loaded, "lpm6_bench"),
        (&loaded_1, "fib6_bench"),
        (&loaded_1, "lpm6_bench"),
        (&loaded_sorted, "fib6_bench"),
    ];
    let mut best = [f64::MAX; 6];
    for _ in 0..9 {
        for (i, (l, program)) in cases.iter().enumerate() {
            best[i] = best[i].min(l.bench_ns(program, 1 << 20));
        }
    }
    let [base, fib_ns, lpm_ns, fib_1_ns, lpm_1_ns, sorted_ns] = best;
    println!(
        "fib6 loaded in address order: {sorted_ns:.1} ns per run, lookup alone {:.1} ns",
        sorted_ns - base
    );
    println!(
        "per run over 64k random destinations, 200k routes: base {base:.1} ns, fib6 {fib_ns:.1} \
         ns, LPM trie {lpm_ns:.1} ns; lookup alone: fib6 {:.1} ns, LPM trie {:.1} ns ({:.1}x)",
        fib_ns - base,
        lpm_ns - base,
        (lpm_ns - base) / (fib_ns - base)
    );
    println!(
        "with 1 route: fib6 {fib_1_ns:.1} ns, LPM trie {lpm_1_ns:.1} ns per run; \
         200k / 1 route: fib6 {:.2}, LPM trie {:.2}",
        fib_ns / fib_1_ns,
        lpm_ns / lpm_1_ns
    );
}
