//! Differential fuzzing of pop's XDP program against the reference model
//! (`pop_tests::model`): random tables, random and mutated frames, and any
//! difference in action, output bytes or counters fails with a reproduction.
//!
//! `POP_FUZZ_FRAMES` (default 1,000,000) and `POP_FUZZ_SEED` (default fixed)
//! steer the run (`cargo xtask fuzz --frames N [--seed S]` sets them), and
//! `POP_TESTRUN_OBJECT` names another build of the data plane to fuzz (e.g. a
//! mutated one the fuzzer must reject). Every case in
//! `tests/fuzz-corpus/*.case` (each once a difference) runs first.
use std::collections::BTreeMap;

use pop_common::{DropReason, IcmpType, PassReason};
use pop_tests::{
    fuzz::{Case, Fuzzer},
    model::{Breakage, Verdict},
    testrun::{in_netns, mac_of_ifindex, require_root, veth_pair, Harness, Port},
};

/// Frames drawn per table set: tables are rewritten rarely, frames are cheap.
const FRAMES_PER_TABLE: u64 = 10_000;
/// Table sets a run needs before its verdict shares are checked: a verdict
/// may hinge on a table (an unresolved next hop, an ACL), so few sets vary.
const MIN_TABLE_SETS: u64 = 20;
/// A verdict the generator targets must get at least this share of frames.
const MIN_SHARE: f64 = 0.01;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// The verdicts the generator must reach. Not here: what the fuzzer's tables
/// leave unconfigured (the policer and the ICMP rate limit, which depend on
/// time: each is tested on its own) and `adjust_head` (the kernel leaves room
/// for a tag).
fn targeted() -> Vec<Verdict> {
    let mut v = vec![
        Verdict::Redirect,
        Verdict::Tx,
        Verdict::Icmp(IcmpType::TimeExceeded),
        Verdict::Icmp(IcmpType::FragNeeded),
        Verdict::Icmp(IcmpType::PacketTooBig),
    ];
    v.extend(
        [
            PassReason::NonIp,
            PassReason::Vlan,
            PassReason::Local,
            PassReason::Multicast,
            PassReason::LinkLocal,
            PassReason::Ttl,
            PassReason::NoRoute,
            PassReason::Unresolved,
            PassReason::Mtu,
            PassReason::IpOptions,
            PassReason::UnknownIface,
        ]
        .map(Verdict::Pass),
    );
    v.extend(
        [
            DropReason::Malformed,
            DropReason::Spoofed,
            DropReason::Acl,
            DropReason::NoRoute,
            DropReason::Martian,
            DropReason::OtherHost,
            DropReason::Blackhole,
        ]
        .map(Verdict::Drop),
    );
    v
}

/// A port with a fixed MAC, so that corpus frames stay addressed to it.
fn port(name: &str, peer: &str, mac: &str) -> Port {
    let (mut p, _) = veth_pair(name, peer).unwrap();
    let status = std::process::Command::new("ip")
        .args(["link", "set", "dev", name, "address", mac])
        .status()
        .unwrap();
    assert!(status.success(), "ip link set dev {name} address {mac}");
    p.mac = mac_of_ifindex(p.ifindex).unwrap();
    p
}

fn fuzzer() -> Fuzzer {
    fuzzer_of(None)
}

/// A fuzzer over pop's object, or `object` (an ELF build of the data plane),
/// or the one `POP_TESTRUN_OBJECT` names.
fn fuzzer_of(object: Option<&[u8]>) -> Fuzzer {
    // In a fresh namespace the ifindexes are fixed too (lo is 1).
    let a = port("fza", "fzpa", "02:00:00:00:fa:0a");
    let b = port("fzb", "fzpb", "02:00:00:00:fa:0b");
    let (unknown, _) = veth_pair("fzu", "fzpu").unwrap();
    let h = match object {
        Some(object) => Harness::load_object(object).expect("loading the mutated data plane"),
        None => Harness::under_test(),
    };
    Fuzzer::new(h, a, b, unknown.ifindex)
}

/// The cases in `dir` (under `tests/`), sorted by file name.
fn corpus_in(dir: &str) -> Vec<(String, Case)> {
    let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut cases = vec![];
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "case") {
            let text = std::fs::read_to_string(&path).unwrap();
            let case = Case::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cases.push((path.display().to_string(), case));
        }
    }
    cases.sort_by(|x, y| x.0.cmp(&y.0));
    cases
}

fn print_histogram(histogram: &BTreeMap<Verdict, u64>, total: u64) {
    eprintln!("verdicts over {total} frames:");
    for (v, n) in histogram {
        eprintln!(
            "  {:<24} {n:>9} {:>6.2}%",
            v.to_string(),
            100.0 * *n as f64 / total as f64
        );
    }
}

#[test]
fn program_and_model_agree() {
    require_root();
    let frames = env_u64("POP_FUZZ_FRAMES", 1_000_000);
    let seed = env_u64("POP_FUZZ_SEED", 0x0b0b_f022);
    in_netns(move || {
        let mut f = fuzzer();
        let corpus = corpus_in("fuzz-corpus");
        for (path, case) in &corpus {
            if let Err(d) = f.run_batch(std::slice::from_ref(case)) {
                panic!("corpus case {path}:\n{d}");
            }
        }
        eprintln!(
            "{} corpus cases agree; fuzzing {frames} frames, seed {seed}",
            corpus.len()
        );
        f.histogram.clear();
        f.frames = 0;
        let started = std::time::Instant::now();
        if let Err(d) = f.run_random(seed, frames, FRAMES_PER_TABLE) {
            panic!("after {} frames (seed {seed}):\n{d}", f.frames);
        }
        let elapsed = started.elapsed();
        print_histogram(&f.histogram, f.frames);
        eprintln!(
            "{} frames in {:.1} s ({:.1} us per frame)",
            f.frames,
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / f.frames as f64
        );
        if f.frames < MIN_TABLE_SETS * FRAMES_PER_TABLE {
            eprintln!(
                "coverage not checked: fewer than {MIN_TABLE_SETS} table sets of \
                 {FRAMES_PER_TABLE} frames"
            );
            return;
        }
        let rare: Vec<String> = targeted()
            .into_iter()
            .filter(|v| {
                (f.histogram.get(v).copied().unwrap_or(0) as f64) < MIN_SHARE * f.frames as f64
            })
            .map(|v| v.to_string())
            .collect();
        assert!(
            rare.is_empty(),
            "verdicts under {}% of {} frames (the mutations do not reach their stage): {rare:?}",
            MIN_SHARE * 100.0,
            f.frames
        );
    });
}

/// A test of the test: a model that forgets the TTL decrement must be caught.
#[test]
fn a_broken_model_is_caught() {
    require_root();
    in_netns(|| {
        let mut f = fuzzer();
        f.model.breakage = Some(Breakage::TtlNotDecremented);
        let d = f
            .run_random(7, 20_000, 20_000)
            .expect_err("a model that keeps the TTL must differ from the program");
        let text = d.to_string();
        assert!(text.contains("output bytes"), "{text}");
        assert!(
            text.contains("table_seed ") && text.contains("frame "),
            "{text}"
        );
        // The reproduction replays: the broken model differs on it again,
        // the true one agrees.
        let case = Case::parse(&d.case.to_text()).unwrap();
        assert!(f.run_batch(std::slice::from_ref(&case)).is_err());
        f.model.breakage = None;
        f.run_batch(std::slice::from_ref(&case))
            .unwrap_or_else(|d| panic!("the true model differs too:\n{d}"));
    });
}

/// Cases where the data plane and the model still disagree, each explained
/// in its file under `tests/fuzz-corpus/known/` (none today); the random
/// tables avoid them (see `pop_tests::fuzz::tables`). A case added there is
/// marked here with `#[ignore]` until the data plane is fixed, and then it
/// moves up to `tests/fuzz-corpus/`, which `program_and_model_agree` replays.
#[test]
fn known_disagreements() {
    require_root();
    in_netns(|| {
        let mut f = fuzzer();
        let mut failed = vec![];
        for (path, case) in corpus_in("fuzz-corpus/known") {
            if let Err(d) = f.run_batch(std::slice::from_ref(&case)) {
                eprintln!("{path}:\n{d}");
                failed.push(path);
            }
        }
        assert!(failed.is_empty(), "still differ: {failed:?}");
    });
}

/// A test of the test for the counters: a model that forgets to count
/// forwarded packets for the receiving customer must be caught, and the
/// difference pinned on one frame and one counter.
#[test]
fn a_miscounting_model_is_caught() {
    require_root();
    in_netns(|| {
        let mut f = fuzzer();
        f.model.breakage = Some(Breakage::CustomerInNotCounted);
        let d = f
            .run_random(11, 20_000, 20_000)
            .expect_err("a model that misses customer counters must differ from the program");
        let text = d.to_string();
        assert!(
            text.contains("counter Cust(") && text.contains("In)"),
            "{text}"
        );
    });
}

/// What is wrong with the interface records pinned in `h`'s maps after
/// `frames` frames with these verdicts: every frame must leave exactly one
/// action count in exactly one record, a dropped or passed frame one reason
/// count in the same record, and the totals by reason that popd's metrics
/// report (its reader, summing every record) must be the frames seen with
/// that verdict.
fn record_errors(h: &Harness, frames: u64, histogram: &BTreeMap<Verdict, u64>) -> Vec<String> {
    use aya::maps::{Map, MapData, PerCpuArray};
    use pop::dataplane::counters::{iface_record, reason_totals};
    use pop_common::{maps, Action, PopCounter, PopIfaceCounters, NO_IFACE_SLOT};

    let path = h.pin_dir().join(maps::IFACE_COUNTERS);
    let map = Map::from_map_data(MapData::from_pin(&path).unwrap()).unwrap();
    let map: PerCpuArray<MapData, PopIfaceCounters> = PerCpuArray::try_from(map).unwrap();
    let mut errors = vec![];
    let mut actions = 0;
    for slot in 0..=NO_IFACE_SLOT {
        let r = iface_record(&map, slot);
        actions += PopCounter::sum(r.action.iter()).packets;
        for (action, reasons) in [(Action::Drop, &r.drop[..]), (Action::Pass, &r.pass[..])] {
            let by_reason = PopCounter::sum(reasons.iter());
            if by_reason != r.action[action as usize] {
                errors.push(format!(
                    "slot {slot}: {} counts {:?}, its reasons {by_reason:?}",
                    action.label(),
                    r.action[action as usize]
                ));
            }
        }
    }
    if actions != frames {
        errors.push(format!("{frames} frames left {actions} action counts"));
    }
    let totals = reason_totals(&map);
    let seen = |v: Verdict| histogram.get(&v).copied().unwrap_or(0);
    for r in DropReason::ALL {
        let (got, want) = (totals.drop[*r as usize].packets, seen(Verdict::Drop(*r)));
        if got != want {
            errors.push(format!("drops {}: metrics {got}, frames {want}", r.label()));
        }
    }
    for r in PassReason::ALL {
        let (got, want) = (totals.pass[*r as usize].packets, seen(Verdict::Pass(*r)));
        if got != want {
            errors.push(format!(
                "passes {}: metrics {got}, frames {want}",
                r.label()
            ));
        }
    }
    errors
}

/// The per-interface counter records add up: no frame's count is lost,
/// doubled or put in a record beside its interface's, and the global drop
/// and pass counters (sums over the records) are what the frames did. The
/// check itself catches one count too many.
#[test]
fn counter_records_add_up() {
    require_root();
    in_netns(|| {
        let mut f = fuzzer();
        f.run_random(5, 20_000, 5_000)
            .unwrap_or_else(|d| panic!("program and model differ: {d}"));
        let errors = record_errors(&f.harness, f.frames, &f.histogram);
        assert!(errors.is_empty(), "{errors:#?}");

        // One ACL drop counted twice on port A's slot: the check must fail.
        use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
        use pop_common::{maps, PopIfaceCounters};
        let path = f.harness.pin_dir().join(maps::IFACE_COUNTERS);
        let map = Map::from_map_data(MapData::from_pin(&path).unwrap()).unwrap();
        let mut map: PerCpuArray<MapData, PopIfaceCounters> = PerCpuArray::try_from(map).unwrap();
        let slot = f.model.desired.ifaces[0].slot;
        let mut values: Vec<PopIfaceCounters> =
            map.get(&slot, 0).unwrap().iter().copied().collect();
        values[0].drop[DropReason::Acl as usize].packets += 1;
        map.set(slot, PerCpuValues::try_from(values).unwrap(), 0)
            .unwrap();
        let errors = record_errors(&f.harness, f.frames, &f.histogram);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("slot {slot}: drop")))
                && errors.iter().any(|e| e.contains("drops acl")),
            "a doubled count went unnoticed: {errors:#?}"
        );
    });
}

/// Mutations of the C data plane, each a bug the issue named or a rule of
/// RFC 1812 / RFC 4443: (file, text, replacement).
const MUTANTS: &[(&str, &str, &str)] = &[
    // A drop's reason counted twice in its interface's record.
    (
        "counters.h",
        "if (reason < POP_DROP_MAX)\n\t\t\tcounter_bump(&c->drop[reason], bytes);",
        "if (reason < POP_DROP_MAX)\n\t\t\tc->drop[reason].packets += 2;",
    ),
    // The receiving customer's traffic counted in the sender's record.
    (
        "counters.h",
        "counter_bump(&n->in->dir[POP_DIR_IN], bytes);",
        "counter_bump(&n->out->dir[POP_DIR_IN], bytes);",
    ),
    // IPv4 header checksums no longer checked.
    ("parse.h", "if (!ipv4_checksum_ok(iph))", "if (0)"),
    // UDP ports read from the frame's padding, beyond the IP packet.
    ("parse.h", "if ((void *)(udp + 1) > l3_end || ", "if ("),
    // ICMP errors sent about non-first fragments.
    (
        "icmp.h",
        "return !pkt->non_first_fragment && !pkt->icmp_error;",
        "return !pkt->icmp_error;",
    ),
    // Directed broadcasts forwarded as if they were not local.
    (
        "addr4.h",
        "(a->dst_flags & (POP_FIB4_LOCAL | POP_FIB4_BROADCAST)) != 0",
        "(a->dst_flags & POP_FIB4_LOCAL) != 0",
    ),
];

/// A test of the test against the real C: each mutant of the data plane,
/// built here with the same compiler and flags as `pop-ebpf/build.rs`, must
/// differ from the model within a few thousand frames.
#[test]
fn mutated_data_planes_are_caught() {
    require_root();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../pop-ebpf/src");
    let clang = std::env::var("POP_CLANG").unwrap_or_else(|_| "clang-16".into());
    let mut objects = vec![];
    for (file, from, to) in MUTANTS {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let target = dir.path().join(file);
        let text = std::fs::read_to_string(&target).unwrap();
        assert!(
            text.contains(from),
            "{file} no longer holds {from:?}: update MUTANTS"
        );
        std::fs::write(&target, text.replacen(from, to, 1)).unwrap();
        let object = dir.path().join("pop.o");
        let status = std::process::Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("pop.bpf.c"))
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed on the mutant of {file}");
        objects.push((
            format!("{file}: {from:?} -> {to:?}"),
            std::fs::read(&object).unwrap(),
        ));
    }
    for (mutant, object) in objects {
        // A namespace each: the fuzzer's veths have fixed names.
        in_netns(move || {
            let mut f = fuzzer_of(Some(&object));
            assert!(
                f.run_random(3, 20_000, 10_000).is_err(),
                "20000 frames did not tell the mutant {mutant} from the model"
            );
        });
    }
}
