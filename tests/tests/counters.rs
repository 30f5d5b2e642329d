//! Counters over a data-plane upgrade (`pop::dataplane::counters`): the
//! counters of the old build are added to the new build's records, from the
//! same layout and from the layout before the per-interface and per-customer
//! records (five arrays of one counter each).
use std::ffi::CString;
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use aya::Pod;
use pop::dataplane::counters::{carry_over_into, iface_record, legacy, reason_totals, CounterMaps};
use pop_common::{
    maps, Action, Direction, DropReason, IcmpType, PassReason, PopCounter, PopCustomerCounters,
    PopIfaceCounters, NO_IFACE_SLOT,
};
use pop_tests::testrun::{require_root, Harness};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: attr is a zeroed bpf_attr of the size passed, filled for cmd.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// Creates a per-CPU array of [`PopCounter`] and pins it as `dir/name`, as
/// the data plane before the counter records did.
fn create_legacy_array(dir: &Path, name: &str, entries: u32) {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_MAP_TYPE_PERCPU_ARRAY.to_ne_bytes());
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&(std::mem::size_of::<PopCounter>() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&entries.to_ne_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE {name}: {}",
        std::io::Error::last_os_error()
    );
    let path = CString::new(dir.join(name).to_str().unwrap()).unwrap();
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    let rc = bpf(BPF_OBJ_PIN, &mut attr);
    assert!(
        rc == 0,
        "BPF_OBJ_PIN {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

fn array<V: Pod>(dir: &Path, name: &str) -> PerCpuArray<MapData, V> {
    let map = Map::from_map_data(MapData::from_pin(dir.join(name)).unwrap()).unwrap();
    PerCpuArray::try_from(map).unwrap()
}

/// Sets CPU 0's and CPU 1's values (the others stay zero) at `index`.
fn set_two_cpus(map: &mut PerCpuArray<MapData, PopCounter>, index: u32, cpu0: u64, cpu1: u64) {
    let cpus = aya::util::nr_cpus().unwrap();
    let mut values = vec![PopCounter::default(); cpus];
    values[0] = PopCounter {
        packets: cpu0,
        bytes: cpu0 * 100,
    };
    if cpus > 1 {
        values[1] = PopCounter {
            packets: cpu1,
            bytes: cpu1 * 100,
        };
    }
    map.set(index, PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();
}

/// What CPUs 0 and 1 hold together, as set by [`set_two_cpus`].
fn two_cpus(cpu0: u64, cpu1: u64) -> PopCounter {
    let n = if aya::util::nr_cpus().unwrap() > 1 {
        cpu0 + cpu1
    } else {
        cpu0
    };
    PopCounter {
        packets: n,
        bytes: n * 100,
    }
}

/// A directory under bpffs, removed with its pins when dropped.
struct BpffsDir(PathBuf);

impl BpffsDir {
    fn create(tag: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/pop-counters-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        BpffsDir(dir)
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn carry(h: &Harness, old_dir: &Path) {
    let dir = h.pin_dir();
    let mut iface = array::<PopIfaceCounters>(dir, maps::IFACE_COUNTERS);
    let mut customer = array::<PopCustomerCounters>(dir, maps::CUSTOMER_COUNTERS);
    let mut icmp = array::<PopCounter>(dir, maps::ICMP_STATS);
    carry_over_into(
        CounterMaps {
            iface: &mut iface,
            customer: &mut customer,
            icmp: &mut icmp,
        },
        old_dir,
    );
}

fn customer(h: &Harness, id: u32) -> PopCustomerCounters {
    let map = array::<PopCustomerCounters>(h.pin_dir(), maps::CUSTOMER_COUNTERS);
    PopCustomerCounters::sum(map.get(&id, 0).unwrap().iter())
}

/// An upgrade from the five-array layout keeps every count: interface
/// actions in their slot's record, the global drop and pass counters in the
/// record of unknown interfaces (so the totals the metrics report go on),
/// customer traffic and drops in the customer's record, ICMP errors as they
/// were. An upgrade from the records to the records adds them up as well.
#[test]
fn upgrades_carry_every_counter_over() {
    require_root();
    let old = BpffsDir::create("legacy");
    let legacy_maps = [
        (legacy::IFACE_STATS, pop_common::MAX_IFACES * Action::SLOTS),
        (legacy::DROP_STATS, DropReason::SLOTS),
        (legacy::PASS_STATS, PassReason::SLOTS),
        (
            legacy::CUST_STATS,
            pop_common::MAX_CUSTOMERS * Direction::SLOTS,
        ),
        (
            legacy::CUST_DROPS,
            pop_common::MAX_CUSTOMERS * DropReason::SLOTS,
        ),
        (maps::ICMP_STATS, IcmpType::SLOTS),
    ];
    for (name, entries) in legacy_maps {
        create_legacy_array(&old.0, name, entries);
    }
    let slot = 2;
    let (id, reasons) = (9, DropReason::SLOTS);
    set_two_cpus(
        &mut array(&old.0, legacy::IFACE_STATS),
        slot * Action::SLOTS + Action::Drop as u32,
        3,
        1,
    );
    set_two_cpus(
        &mut array(&old.0, legacy::DROP_STATS),
        DropReason::Acl as u32,
        5,
        2,
    );
    set_two_cpus(
        &mut array(&old.0, legacy::PASS_STATS),
        PassReason::Local as u32,
        7,
        0,
    );
    set_two_cpus(
        &mut array(&old.0, legacy::CUST_STATS),
        id * Direction::SLOTS + Direction::Out as u32,
        11,
        4,
    );
    set_two_cpus(
        &mut array(&old.0, legacy::CUST_DROPS),
        id * reasons + DropReason::Policed as u32,
        13,
        6,
    );
    set_two_cpus(
        &mut array(&old.0, maps::ICMP_STATS),
        IcmpType::TimeExceeded as u32,
        17,
        8,
    );

    let new = Harness::load().expect("loading the data plane");
    carry(&new, &old.0);
    let ifaces = array::<PopIfaceCounters>(new.pin_dir(), maps::IFACE_COUNTERS);
    let r = iface_record(&ifaces, slot);
    assert_eq!(r.action[Action::Drop as usize], two_cpus(3, 1));
    assert_eq!(
        PopCounter::sum(r.drop.iter()),
        PopCounter::default(),
        "the old counters say nothing of the interface's drop reasons"
    );
    let totals = reason_totals(&ifaces);
    assert_eq!(totals.drop[DropReason::Acl as usize], two_cpus(5, 2));
    assert_eq!(totals.pass[PassReason::Local as usize], two_cpus(7, 0));
    let unknown = iface_record(&ifaces, NO_IFACE_SLOT);
    assert_eq!(unknown.drop[DropReason::Acl as usize], two_cpus(5, 2));
    let c = customer(&new, id);
    assert_eq!(c.dir[Direction::Out as usize], two_cpus(11, 4));
    assert_eq!(c.dir[Direction::In as usize], PopCounter::default());
    assert_eq!(c.drop[DropReason::Policed as usize], two_cpus(13, 6));
    assert_eq!(
        new.icmp_stats(IcmpType::TimeExceeded).unwrap(),
        two_cpus(17, 8)
    );

    // The next upgrade, records to records: the same counts, added up.
    let newer = Harness::load().expect("loading the data plane again");
    carry(&newer, new.pin_dir());
    carry(&newer, new.pin_dir());
    let ifaces = array::<PopIfaceCounters>(newer.pin_dir(), maps::IFACE_COUNTERS);
    let twice = |c: PopCounter| PopCounter {
        packets: 2 * c.packets,
        bytes: 2 * c.bytes,
    };
    assert_eq!(
        iface_record(&ifaces, slot).action[Action::Drop as usize],
        twice(two_cpus(3, 1))
    );
    assert_eq!(
        reason_totals(&ifaces).drop[DropReason::Acl as usize],
        twice(two_cpus(5, 2))
    );
    assert_eq!(
        customer(&newer, id).drop[DropReason::Policed as usize],
        twice(two_cpus(13, 6))
    );
    assert_eq!(
        newer.icmp_stats(IcmpType::TimeExceeded).unwrap(),
        twice(two_cpus(17, 8))
    );
}

/// The trace program (`pop_trace`) runs the same counting helpers with its
/// trace record and never looks a counter record up: it must still pass the
/// verifier (popd loads it beside `pop_xdp`).
#[test]
fn the_trace_program_loads() {
    require_root();
    let pins = BpffsDir::create("trace");
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(&pins.0)
        .load(pop_ebpf::pop_object())
        .expect("loading the object");
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(pop_ebpf::TRACE_PROGRAM_NAME)
        .expect("pop_trace in the object")
        .try_into()
        .unwrap();
    prog.load()
        .unwrap_or_else(|e| panic!("the verifier refused pop_trace: {e:?}"));
}
