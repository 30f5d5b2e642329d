//! BPF_PROG_TEST_RUN harness: load pop's XDP object, fill its maps, and run
//! packets through the real kernel program.
//!
//! BPF_PROG_TEST_RUN resolves the context's `ingress_ifindex`, and the devmap
//! resolves its ifindexes, in the network namespace of the *calling thread*.
//! So a test body runs in a private namespace with real veth interfaces:
//!
//! ```no_run
//! use pop_tests::testrun::{in_netns, veth_pair, Harness};
//! in_netns(|| {
//!     let (a, b) = veth_pair("pta", "ptb").unwrap();
//!     let mut h = Harness::load().unwrap();
//!     h.add_tx_port(b.ifindex).unwrap();
//!     // ... fill tables, then h.run(&frame, a.ifindex)
//! });
//! ```
//!
//! Every [`Harness`] pins its maps in its own directory under `/sys/fs/bpf`
//! (the C maps are `LIBBPF_PIN_BY_NAME`), and removes it on drop.
//!
//! [`vlan_lab`] sets up the two ports and VLAN device of the 802.1Q tests.
use std::{
    error::Error,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    maps::{lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use pop::dataplane::fib4::{LocalKind, Prefix4};
use pop::dataplane::fib6::Prefix6;
use pop::dataplane::route4::Routes4;
use pop::dataplane::route6::Routes6;
use pop_common::{
    maps, Action, Direction, DropReason, IcmpType, PassReason, PopConfig, PopCounter,
    PopCustomerCounters, PopCustomerRef, PopIface, PopIfaceCounters, PopLocalV6, PopNexthop,
    PopRoute, PopUpperMacKey, Role, MAX_ECMP, NH_RESOLVED, NH_VALID, NO_IFACE_SLOT,
};

pub mod vlan_lab;

/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Repeats per BPF_PROG_TEST_RUN call in [`Harness::ns_per_packet`]: the kernel
/// does not reset the packet between repeats, so a TTL-255 frame stays
/// forwardable for at most this many runs.
pub const MAX_REPEAT_PER_BATCH: u32 = 200;
/// Repeats per call in [`Harness::ns_per_packet`] for a frame the program
/// leaves unchanged (nothing drifts between repeats).
pub const MAX_REPEAT_FIXED_FRAME: u32 = 1_000_000;

/// Errors of the harness; each names what failed and with which value.
#[derive(Debug)]
pub enum TestRunError {
    /// The process is not root (BPF_PROG_TEST_RUN and namespaces need it).
    NotRoot,
    /// bpffs could not be mounted or the pin directory not managed.
    Bpffs {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Loading an object or program failed (verifier errors land here).
    Load {
        /// Program name.
        program: &'static str,
        /// aya's error, with the verifier log if any.
        source: Box<dyn Error + Send + Sync>,
    },
    /// A map is missing or an update/lookup failed.
    Map {
        /// Map name.
        map: &'static str,
        /// What was attempted, with the key.
        operation: String,
        /// aya's error.
        source: Box<dyn Error + Send + Sync>,
    },
    /// A prefix argument did not parse.
    Prefix {
        /// The text given.
        prefix: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A route was given more next hops than `MAX_ECMP`.
    NextHopCount {
        /// The route's prefix.
        prefix: String,
        /// How many ids were given.
        count: usize,
    },
    /// An external command (`ip`) failed.
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// BPF_PROG_TEST_RUN failed.
    Run {
        /// Program name.
        program: &'static str,
        /// The ingress ifindex in the context.
        ingress_ifindex: u32,
        /// aya's error.
        source: Box<dyn Error + Send + Sync>,
    },
    /// Repeated runs of one frame did not all return the same action.
    UnstableAction {
        /// Program name.
        program: &'static str,
        /// The action of the first batch.
        first: u32,
        /// The differing action of a later batch.
        later: u32,
    },
}

impl fmt::Display for TestRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestRunError::NotRoot => write!(
                f,
                "pop packet tests need root (BPF_PROG_TEST_RUN, bpffs, network namespaces): \
                 run them with sudo"
            ),
            TestRunError::Bpffs { path, source } => {
                write!(f, "bpffs path {}: {source}", path.display())
            }
            TestRunError::Load { program, source } => {
                write!(f, "loading program {program}: {}", chain(source.as_ref()))
            }
            TestRunError::Map {
                map,
                operation,
                source,
            } => write!(f, "map {map}: {operation}: {}", chain(source.as_ref())),
            TestRunError::Prefix { prefix, reason } => write!(f, "prefix {prefix:?}: {reason}"),
            TestRunError::NextHopCount { prefix, count } => write!(
                f,
                "route {prefix}: {count} next hops exceed the ECMP width {MAX_ECMP}"
            ),
            TestRunError::Command { command, detail } => write!(f, "`{command}`: {detail}"),
            TestRunError::Run {
                program,
                ingress_ifindex,
                source,
            } => write!(
                f,
                "BPF_PROG_TEST_RUN of {program} with ingress_ifindex {ingress_ifindex}: {}",
                chain(source.as_ref())
            ),
            TestRunError::UnstableAction {
                program,
                first,
                later,
            } => write!(
                f,
                "program {program}: repeated runs returned action {later} after {first}"
            ),
        }
    }
}

impl Error for TestRunError {}

/// The error and its sources on one line (verifier logs are in the sources).
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Result type of this module.
pub type Result<T, E = TestRunError> = std::result::Result<T, E>;

/// Fails with [`TestRunError::NotRoot`] unless the effective uid is 0.
pub fn check_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(TestRunError::NotRoot)
    }
}

/// Panics with one clear message unless running as root; call first in every test.
pub fn require_root() {
    if let Err(e) = check_root() {
        panic!("{e}");
    }
}

/// Runs `body` on a new thread that has its own, empty network namespace.
///
/// Commands spawned from `body` (e.g. `ip link add`) inherit that thread's
/// namespace. Everything created in it (veths, addresses) disappears when the
/// thread ends, also when `body` panics; the panic is re-raised here.
pub fn in_netns<T, F>(body: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("pop-netns".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) failed: network namespaces need root");
            body()
        })
        .expect("spawning the namespace thread failed");
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A network interface in the current thread's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
}

fn run_command(program: &str, args: &[&str]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| TestRunError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestRunError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Looks up an interface by name in the current thread's namespace.
///
/// The ifindex comes from `if_nametoindex` (an ioctl on a socket of this
/// thread's namespace) and must agree with what `ip` reports, which proves that
/// `ip` ran in the same namespace.
pub fn port(name: &str) -> Result<Port> {
    let json = run_command("ip", &["-j", "link", "show", "dev", name])?;
    let bad = |detail: String| TestRunError::Command {
        command: format!("ip -j link show dev {name}"),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let link = value
        .get(0)
        .ok_or_else(|| bad("no such interface".into()))?;
    let ifindex = link["ifindex"]
        .as_u64()
        .ok_or_else(|| bad("no ifindex".into()))? as u32;
    let mac = link["address"]
        .as_str()
        .and_then(parse_mac)
        .ok_or_else(|| bad(format!("bad address {}", link["address"])))?;
    let own = if_nametoindex(name).map_err(|e| {
        bad(format!(
            "interface not visible in this thread's namespace ({e}): \
             was it created in another one?"
        ))
    })?;
    if own != ifindex {
        return Err(bad(format!(
            "ip reports ifindex {ifindex}, this thread's namespace {own}"
        )));
    }
    Ok(Port {
        name: name.to_string(),
        ifindex,
        mac,
    })
}

/// The MAC of the interface with `ifindex` in the current thread's namespace.
pub fn mac_of_ifindex(ifindex: u32) -> Result<[u8; 6]> {
    let json = run_command("ip", &["-j", "link", "show"])?;
    let bad = |detail: String| TestRunError::Command {
        command: "ip -j link show".into(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    value
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(u64::from(ifindex)))
        .and_then(|l| l["address"].as_str().and_then(parse_mac))
        .ok_or_else(|| bad(format!("no interface with ifindex {ifindex} and a MAC")))
}

/// `if_nametoindex(3)`: an ioctl on a socket of the calling thread's namespace.
fn if_nametoindex(name: &str) -> std::io::Result<u32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c_name is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Creates a veth pair `a`/`b` in the current thread's namespace, sets both up
/// and returns them. Call it inside [`in_netns`].
pub fn veth_pair(a: &str, b: &str) -> Result<(Port, Port)> {
    run_command("ip", &["link", "add", a, "type", "veth", "peer", "name", b])?;
    run_command("ip", &["link", "set", a, "up"])?;
    run_command("ip", &["link", "set", b, "up"])?;
    Ok((port(a)?, port(b)?))
}

/// Mounts bpffs at [`BPFFS`] unless it is already mounted there.
pub fn ensure_bpffs() -> Result<()> {
    // popd's own check-and-mount, so tests and popd agree on what "mounted" is.
    pop::dataplane::ensure_bpffs().map_err(|e| TestRunError::Bpffs {
        path: Path::new(BPFFS).to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Which loaded program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// pop's data plane, [`pop_ebpf::PROGRAM_NAME`].
    Pop,
    /// The reference `XDP_PASS` program, [`pop_ebpf::PASS_PROGRAM_NAME`].
    Pass,
}

impl Program {
    /// The program's name in its object.
    pub fn name(self) -> &'static str {
        match self {
            Program::Pop => pop_ebpf::PROGRAM_NAME,
            Program::Pass => pop_ebpf::PASS_PROGRAM_NAME,
        }
    }
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it in `ctx_in`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl XdpMd {
    fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        let fields = [
            self.data,
            self.data_end,
            self.data_meta,
            self.ingress_ifindex,
            self.rx_queue_index,
            self.egress_ifindex,
        ];
        for (chunk, v) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        out
    }
}

/// An Ethernet frame carrying a UDP datagram from port 1234 to port 9 with
/// `payload` zero bytes, from `src` to `dst` (both IPv4 or both IPv6) with
/// TTL / hop limit `ttl`.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    ttl: u8,
    payload: usize,
) -> Vec<u8> {
    use std::net::IpAddr;
    let eth = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("udp_frame: {src} and {dst} are of different families"),
    }
    .udp(1234, 9);
    let payload = vec![0u8; payload];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

/// pop loaded on a fresh veth pair: `customer` a customer port (slot 0),
/// `upstream` an upstream port (slot 1, in the device map) behind next hop 1
/// (to MAC 02:00:00:00:00:01, resolved, MTU 1500). No routes yet. Run it in
/// a private namespace ([`in_netns`]).
pub fn customer_and_upstream(customer: &str, upstream: &str) -> (Harness, Port, Port) {
    let (a, b) = veth_pair(customer, upstream).unwrap();
    let mut h = Harness::load().unwrap();
    h.set_iface(a.ifindex, 0, Role::Customer, 1500).unwrap();
    h.set_iface(b.ifindex, 1, Role::Upstream, 1500).unwrap();
    h.add_tx_port(b.ifindex).unwrap();
    h.set_nexthop(
        1,
        PopNexthop {
            ifindex: b.ifindex,
            flags: NH_VALID | NH_RESOLVED,
            dmac: [2, 0, 0, 0, 0, 1],
            smac: b.mac,
            mtu: 1500,
            ..PopNexthop::default()
        },
    )
    .unwrap();
    (h, a, b)
}

/// Parses `"a.b.c.d/len"`.
pub fn parse_prefix_v4(prefix: &str) -> Result<(Ipv4Addr, u32)> {
    let (addr, len) = split_prefix(prefix, 32)?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| TestRunError::Prefix {
        prefix: prefix.into(),
        reason: format!("address: {e}"),
    })?;
    Ok((addr, len))
}

/// Parses `"x::y/len"`.
pub fn parse_prefix_v6(prefix: &str) -> Result<(Ipv6Addr, u32)> {
    let (addr, len) = split_prefix(prefix, 128)?;
    let addr: Ipv6Addr = addr.parse().map_err(|e| TestRunError::Prefix {
        prefix: prefix.into(),
        reason: format!("address: {e}"),
    })?;
    Ok((addr, len))
}

fn split_prefix(prefix: &str, max_len: u32) -> Result<(&str, u32)> {
    let bad = |reason: String| TestRunError::Prefix {
        prefix: prefix.into(),
        reason,
    };
    let (addr, len) = prefix
        .split_once('/')
        .ok_or_else(|| bad("missing /length".into()))?;
    let len: u32 = len
        .parse()
        .map_err(|e| bad(format!("prefix length: {e}")))?;
    if len > max_len {
        return Err(bad(format!("prefix length {len} exceeds {max_len}")));
    }
    Ok((addr, len))
}

static NEXT_PIN_DIR: AtomicU32 = AtomicU32::new(0);

/// A private directory under bpffs; removes its pins and itself on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn create() -> Result<Self> {
        Self::named("pt")
    }

    /// `BPFFS/<prefix>-<pid>-<n>`.
    fn named(prefix: &str) -> Result<Self> {
        ensure_bpffs()?;
        let n = NEXT_PIN_DIR.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(BPFFS).join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| TestRunError::Bpffs {
            path: path.clone(),
            source,
        })?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A test object other than pop's (e.g. [`pop_ebpf::fib4_test_object`]) with
/// its XDP programs loaded (not attached) and its maps pinned in a private
/// bpffs directory `pt-<name>-<pid>-<n>`, removed on drop. Needs root.
pub struct TestObject {
    /// The object.
    pub ebpf: Ebpf,
    _pins: PinDir,
}

impl TestObject {
    /// Loads `object` and its XDP programs `programs`; panics (it is for tests)
    /// naming what failed.
    pub fn load(name: &str, object: &[u8], programs: &[&str]) -> TestObject {
        require_root();
        let pins = PinDir::named(&format!("pt-{name}")).expect("a pin dir under bpffs");
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(object)
            .unwrap_or_else(|e| panic!("loading the {name} test object: {e:?}"));
        for program in programs {
            let prog: &mut Xdp = ebpf.program_mut(program).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("loading {program}: {e:?}"));
        }
        TestObject { ebpf, _pins: pins }
    }

    /// The array map `name` of the object, for mapping it.
    pub fn array(&self, name: &str) -> &aya::maps::MapData {
        match self.ebpf.map(name) {
            Some(aya::maps::Map::Array(d)) => d,
            _ => panic!("map {name}: not an array in the object"),
        }
    }

    /// Runs `program` once on `frame`, the frame it leaves in `out`; its XDP
    /// action.
    pub fn run_once(&self, program: &str, frame: &[u8], out: &mut [u8]) -> u32 {
        let prog: &Xdp = self.ebpf.program(program).unwrap().try_into().unwrap();
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .unwrap()
        .return_value
    }

    /// Mean ns of one run of `program` over `runs` runs; the program must
    /// drop the zeroed 64-byte frame it is given (XDP_DROP).
    pub fn bench_ns(&self, program: &str, runs: u32) -> f64 {
        let frame = [0u8; 64];
        let prog: &Xdp = self.ebpf.program(program).unwrap().try_into().unwrap();
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: runs,
                ..TestRunOptions::default()
            })
            .unwrap();
        assert_eq!(r.return_value, 1, "{program}: not XDP_DROP");
        r.duration.as_nanos() as f64
    }
}

/// Milliseconds `f` takes.
pub fn time_ms(f: impl FnOnce()) -> f64 {
    let t = std::time::Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// pop's program and the reference `XDP_PASS` program, loaded (not attached),
/// with maps pinned in a private bpffs directory that is removed on drop.
pub struct Harness {
    // Field order is drop order: the objects close their fds before the pins go.
    /// IPv4 routes (fib4 and its route records), opened on first use.
    routes4: Option<Routes4>,
    /// IPv6 routes (fib6 and its route records), opened on first use.
    routes6: Option<Routes6>,
    pop: Ebpf,
    pass: Ebpf,
    pin_dir: PinDir,
    written: Written,
}

/// Every table entry a [`Harness`] wrote, so [`Harness::reset_tables`] can undo it.
#[derive(Default)]
struct Written {
    ifaces: Vec<u32>,
    tx_ports: Vec<u32>,
    routes_v4: Vec<(u32, [u8; 4])>,
    routes_v6: Vec<(u32, [u8; 16])>,
    nexthops: Vec<u32>,
    cust_v4: Vec<(u32, [u8; 4])>,
    cust_v6: Vec<(u32, [u8; 16])>,
    local_v4: Vec<u32>,
    local_v6: Vec<[u8; 16]>,
    upper_macs: Vec<PopUpperMacKey>,
    config: bool,
}

impl Harness {
    /// Loads pop's object (`pop_ebpf::pop_object()`) and the reference.
    /// Must run as root; mounts bpffs if needed.
    pub fn load() -> Result<Self> {
        Self::load_object(pop_ebpf::pop_object())
    }

    /// The data plane under test: pop's built object, or the ELF file named
    /// by `POP_TESTRUN_OBJECT` (to run the tests against another build, e.g. a
    /// mutated one that they must reject). Panics naming what failed.
    pub fn under_test() -> Self {
        match std::env::var_os("POP_TESTRUN_OBJECT") {
            None => Harness::load().expect("loading the data plane"),
            Some(path) => {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("POP_TESTRUN_OBJECT {path:?}: {e}"));
                Harness::load_object(&bytes)
                    .unwrap_or_else(|e| panic!("loading POP_TESTRUN_OBJECT {path:?}: {e}"))
            }
        }
    }

    /// Like [`Harness::load`] with another build of the data plane (an ELF
    /// object with program [`pop_ebpf::PROGRAM_NAME`] and pop's maps), e.g. a
    /// deliberately broken one to prove that the tests catch the bug.
    pub fn load_object(pop_object: &[u8]) -> Result<Self> {
        check_root()?;
        let pin_dir = PinDir::create()?;
        let pop = load_program(pop_object, Program::Pop, &pin_dir.0)?;
        let pass = load_program(pop_ebpf::pass_object(), Program::Pass, &pin_dir.0)?;
        Ok(Harness {
            routes4: None,
            routes6: None,
            pop,
            pass,
            pin_dir,
            written: Written::default(),
        })
    }

    /// Instructions the verifier processed to accept `program` (the kernel's
    /// `verified_insns`; its limit is 1,000,000): the program's distance from
    /// "too complex to load".
    pub fn verified_instructions(&self, program: Program) -> Result<u32> {
        let info = self.xdp(program)?.info().map_err(|e| TestRunError::Load {
            program: program.name(),
            source: Box::new(e),
        })?;
        info.verified_instruction_count()
            .ok_or_else(|| TestRunError::Load {
                program: program.name(),
                source: "the kernel reports no verified_insns".into(),
            })
    }

    /// The directory under bpffs where this harness pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir.0
    }

    /// pop's map `map` (a name from `pop_common::maps`), for tables this
    /// harness has no helper for.
    pub fn map_mut(&mut self, map: &'static str) -> Result<&mut aya::maps::Map> {
        self.pop.map_mut(map).ok_or_else(|| TestRunError::Map {
            map,
            operation: "find".into(),
            source: "not in the object".into(),
        })
    }

    /// pop's map `map`, read-only.
    pub fn map(&self, map: &'static str) -> Result<&aya::maps::Map> {
        self.pop.map(map).ok_or_else(|| TestRunError::Map {
            map,
            operation: "find".into(),
            source: "not in the object".into(),
        })
    }

    /// Declares `ifindex` an interface pop manages (map `ifaces`), with the
    /// MAC the interface has in this thread's namespace.
    pub fn set_iface(&mut self, ifindex: u32, slot: u32, role: Role, mtu: u32) -> Result<()> {
        let mac = mac_of_ifindex(ifindex)?;
        self.set_iface_with_mac(ifindex, slot, role, mtu, mac)
    }

    /// [`Harness::set_iface`] with the MAC given: for made-up interfaces
    /// (a VLAN device the kernel here cannot create).
    pub fn set_iface_with_mac(
        &mut self,
        ifindex: u32,
        slot: u32,
        role: Role,
        mtu: u32,
        mac: [u8; 6],
    ) -> Result<()> {
        let value = PopIface {
            slot,
            role: role as u32,
            flags: 0,
            mtu,
            mac,
            ..PopIface::default()
        };
        let m = maps::IFACES;
        let mut map: HashMap<_, u32, PopIface> =
            HashMap::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(ifindex, value, 0)
            .map_err(map_err(m, format!("insert ifindex {ifindex}")))?;
        self.written.ifaces.push(ifindex);
        Ok(())
    }

    /// Writes every interface record now in `ifaces` whose ifindex is below
    /// `pop_common::IFACES_BY_INDEX` to `ifaces_by_index` too, on every CPU
    /// with `IFACE_PRESENT` set, as popd does; the data plane then finds them
    /// by index. Without this call it finds every interface in the hash.
    /// Call it again after changing a record. The array is this object's, or
    /// else the one pinned in [`Harness::pin_dir`] by another object loaded on
    /// the same maps (a B object of pop-bench). Returns how many records it
    /// wrote (0 when there is no array).
    pub fn index_ifaces(&mut self) -> Result<usize> {
        let m = maps::IFACES;
        let records: Vec<(u32, PopIface)> = {
            let hash: HashMap<_, u32, PopIface> =
                HashMap::try_from(self.map(m)?).map_err(map_err(m, "open"))?;
            hash.iter()
                .flatten()
                .filter(|(k, _)| pop::dataplane::ifaces::indexed(*k))
                .collect()
        };
        let m = maps::IFACES_BY_INDEX;
        if let Some(map) = self.pop.map_mut(m) {
            let array = PerCpuArray::try_from(map).map_err(map_err(m, "open"))?;
            return write_indexed(array, &records);
        }
        let pin = self.pin_dir().join(m);
        if !pin.exists() {
            return Ok(0);
        }
        let data = aya::maps::MapData::from_pin(&pin).map_err(map_err(m, "open pin"))?;
        let array = PerCpuArray::try_from(
            aya::maps::Map::from_map_data(data).map_err(map_err(m, "open pin"))?,
        )
        .map_err(map_err(m, "open"))?;
        write_indexed(array, &records)
    }

    /// Sets the ICMP error sources of interface `ifindex` (already set with
    /// [`Harness::set_iface`]); `None` leaves a family without one.
    pub fn set_icmp_sources(
        &mut self,
        ifindex: u32,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    ) -> Result<()> {
        let m = maps::IFACES;
        let mut map: HashMap<_, u32, PopIface> =
            HashMap::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        let mut value = map
            .get(&ifindex, 0)
            .map_err(map_err(m, format!("get ifindex {ifindex}")))?;
        value.icmp_src_v4 = v4.map_or([0; 4], |a| a.octets());
        value.icmp_src_v6 = v6.map_or([0; 16], |a| a.octets());
        map.insert(ifindex, value, 0)
            .map_err(map_err(m, format!("insert ifindex {ifindex}")))?;
        Ok(())
    }

    /// Sets the ICMP error rate limit (`PopConfig::icmp_rate_per_s`,
    /// `icmp_burst`; rate 0: no limit), keeping the config's other fields.
    pub fn set_icmp_limit(&mut self, rate_per_s: u32, burst: u32) -> Result<()> {
        let m = maps::CONFIG;
        let mut map: Array<_, PopConfig> =
            Array::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        let mut config = map.get(&0, 0).map_err(map_err(m, "get index 0"))?;
        config.icmp_rate_per_s = rate_per_s;
        config.icmp_burst = burst;
        map.set(0, config, 0)
            .map_err(map_err(m, format!("set icmp {rate_per_s}/s burst {burst}")))?;
        self.written.config = true;
        Ok(())
    }

    /// Adds `ifindex` to the devmap `tx_ports`, so it can be redirected to.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let m = maps::TX_PORTS;
        let mut map = DevMapHash::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(ifindex, ifindex, None, 0)
            .map_err(map_err(m, format!("insert ifindex {ifindex}")))?;
        self.written.tx_ports.push(ifindex);
        Ok(())
    }

    /// The data plane's IPv4 routes (fib4 and its route records), written
    /// through popd's writer on this harness's maps.
    pub fn routes4(&mut self) -> Result<&mut Routes4> {
        if self.routes4.is_none() {
            let r = Routes4::open_new(&self.pin_dir.0)
                .map_err(map_err(maps::FIB4_ROUTES, "open fib4"))?;
            self.routes4 = Some(r);
        }
        Ok(self.routes4.as_mut().expect("opened above"))
    }

    /// Adds an IPv4 route `prefix` (e.g. `"10.0.0.0/8"`) to next-hop ids
    /// `nh_ids`: into fib4 and its route records, and the prefix list
    /// `routes_v4`, as popd writes it.
    pub fn add_route_v4(&mut self, prefix: &str, nh_ids: &[u32], flags: u32) -> Result<()> {
        let (addr, len) = parse_prefix_v4(prefix)?;
        let route = make_route(prefix, nh_ids, flags)?;
        let net = ipnet::Ipv4Net::new(addr, len as u8)
            .map_err(map_err(maps::FIB4_TBL24, format!("prefix {prefix}")))?;
        self.routes4()?
            .set(&net, &route)
            .map_err(map_err(maps::FIB4_TBL24, format!("set {prefix}")))?;
        // And the prefix list popd keeps beside it (read back on adoption).
        let m = maps::ROUTES_V4;
        let mut map: LpmTrie<_, [u8; 4], PopRoute> =
            LpmTrie::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(&Key::new(len, addr.octets()), route, 0)
            .map_err(map_err(m, format!("insert {prefix}")))?;
        self.written.routes_v4.push((len, addr.octets()));
        Ok(())
    }

    /// The data plane's IPv6 routes (fib6 and its route records), written
    /// through popd's writer on this harness's maps.
    pub fn routes6(&mut self) -> Result<&mut Routes6> {
        if self.routes6.is_none() {
            let r = Routes6::open_new(&self.pin_dir.0)
                .map_err(map_err(maps::FIB6_ROUTES, "open fib6"))?;
            self.routes6 = Some(r);
        }
        Ok(self.routes6.as_mut().expect("opened above"))
    }

    /// Adds an IPv6 route `prefix` (e.g. `"2001:db8::/32"`) to next-hop ids
    /// `nh_ids`: into fib6 and its route records, and the prefix list
    /// `routes_v6`, as popd writes it.
    pub fn add_route_v6(&mut self, prefix: &str, nh_ids: &[u32], flags: u32) -> Result<()> {
        let (addr, len) = parse_prefix_v6(prefix)?;
        let route = make_route(prefix, nh_ids, flags)?;
        let net = ipnet::Ipv6Net::new(addr, len as u8)
            .map_err(map_err(maps::FIB6_NODES, format!("prefix {prefix}")))?;
        self.routes6()?
            .set(&net, &route)
            .map_err(map_err(maps::FIB6_NODES, format!("set {prefix}")))?;
        // And the prefix list popd keeps beside it (read back on adoption).
        let m = maps::ROUTES_V6;
        let mut map: LpmTrie<_, [u8; 16], PopRoute> =
            LpmTrie::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(&Key::new(len, addr.octets()), route, 0)
            .map_err(map_err(m, format!("insert {prefix}")))?;
        self.written.routes_v6.push((len, addr.octets()));
        Ok(())
    }

    /// Sets next hop `id` (map `nexthops`).
    pub fn set_nexthop(&mut self, id: u32, nexthop: PopNexthop) -> Result<()> {
        let m = maps::NEXTHOPS;
        let mut map: Array<_, PopNexthop> =
            Array::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.set(id, nexthop, 0)
            .map_err(map_err(m, format!("set id {id}")))?;
        self.written.nexthops.push(id);
        Ok(())
    }

    /// Maps an IPv4 customer prefix to `customer_id`: into fib4's customer
    /// plane, and the list `cust_v4`, as popd writes it.
    pub fn add_customer_v4(&mut self, prefix: &str, customer_id: u32) -> Result<()> {
        let (addr, len) = parse_prefix_v4(prefix)?;
        let p = Prefix4::new(addr, len as u8)
            .map_err(map_err(maps::FIB4_TBL24, format!("prefix {prefix}")))?;
        self.routes4()?
            .fib_mut()
            .set_customer(p, customer_id)
            .map_err(map_err(maps::FIB4_TBL24, format!("customer {prefix}")))?;
        let m = maps::CUST_V4;
        let mut map: LpmTrie<_, [u8; 4], PopCustomerRef> =
            LpmTrie::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(
            &Key::new(len, addr.octets()),
            PopCustomerRef { customer_id },
            0,
        )
        .map_err(map_err(m, format!("insert {prefix}")))?;
        self.written.cust_v4.push((len, addr.octets()));
        Ok(())
    }

    /// Maps an IPv6 customer prefix to `customer_id`: into fib6's entries,
    /// and the list `cust_v6`, as popd writes it.
    pub fn add_customer_v6(&mut self, prefix: &str, customer_id: u32) -> Result<()> {
        let (addr, len) = parse_prefix_v6(prefix)?;
        let p = Prefix6::new(addr, len as u8)
            .map_err(map_err(maps::FIB6_NODES, format!("prefix {prefix}")))?;
        self.routes6()?
            .fib_mut()
            .set_customer(p, customer_id)
            .map_err(map_err(maps::FIB6_NODES, format!("customer {prefix}")))?;
        let m = maps::CUST_V6;
        let mut map: LpmTrie<_, [u8; 16], PopCustomerRef> =
            LpmTrie::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        map.insert(
            &Key::new(len, addr.octets()),
            PopCustomerRef { customer_id },
            0,
        )
        .map_err(map_err(m, format!("insert {prefix}")))?;
        self.written.cust_v6.push((len, addr.octets()));
        Ok(())
    }

    /// Declares `addr` an address of this host: into fib4's local plane,
    /// and the list `local_v4`, as popd writes it.
    pub fn add_local_v4(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.add_local_v4_kind(addr, LocalKind::Host)
    }

    /// Declares `addr` the directed broadcast address of a local subnet.
    pub fn add_broadcast_v4(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.add_local_v4_kind(addr, LocalKind::Broadcast)
    }

    fn add_local_v4_kind(&mut self, addr: Ipv4Addr, kind: LocalKind) -> Result<()> {
        self.routes4()?
            .fib_mut()
            .set_local(addr, kind)
            .map_err(map_err(maps::FIB4_TBL24, format!("local {addr}")))?;
        let m = maps::LOCAL_V4;
        let mut map: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        // The key is the address as it sits in the packet (network order).
        let key = u32::from_ne_bytes(addr.octets());
        let value = match kind {
            LocalKind::Host => pop::dataplane::addr4::LOCAL_HOST,
            LocalKind::Broadcast => pop::dataplane::addr4::LOCAL_BROADCAST,
        };
        map.insert(key, value, 0)
            .map_err(map_err(m, format!("insert {addr}")))?;
        self.written.local_v4.push(key);
        Ok(())
    }

    /// Declares `addr` an address of this host: into fib6's entries, and the
    /// list `local_v6`, as popd writes it.
    pub fn add_local_v6(&mut self, addr: Ipv6Addr) -> Result<()> {
        self.routes6()?
            .fib_mut()
            .set_local(addr)
            .map_err(map_err(maps::FIB6_NODES, format!("local {addr}")))?;
        let m = maps::LOCAL_V6;
        let mut map: HashMap<_, PopLocalV6, u32> =
            HashMap::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        let key = PopLocalV6 {
            addr: addr.octets(),
        };
        map.insert(key, 0, 0)
            .map_err(map_err(m, format!("insert {addr}")))?;
        self.written.local_v6.push(key.addr);
        Ok(())
    }

    /// Declares `mac` the MAC of a macvlan device (ifindex `upper`) on
    /// interface `ifindex` (map `upper_macs`): frames to it are for the host.
    pub fn add_upper_mac(&mut self, ifindex: u32, mac: [u8; 6], upper: u32) -> Result<()> {
        let m = maps::UPPER_MACS;
        let mut map: HashMap<_, PopUpperMacKey, u32> =
            HashMap::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        let key = PopUpperMacKey {
            ifindex,
            mac,
            pad: 0,
        };
        map.insert(key, upper, 0)
            .map_err(map_err(m, format!("insert {key:?}")))?;
        self.written.upper_macs.push(key);
        Ok(())
    }

    /// Sets the global `CFG_*` flags (map `config`), keeping its other fields.
    pub fn set_config(&mut self, flags: u32) -> Result<()> {
        let m = maps::CONFIG;
        let mut map: Array<_, PopConfig> =
            Array::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
        let mut config = map.get(&0, 0).map_err(map_err(m, "get index 0"))?;
        config.flags = flags;
        map.set(0, config, 0)
            .map_err(map_err(m, format!("set flags {flags:#x}")))?;
        self.written.config = true;
        Ok(())
    }

    /// Removes every table entry written through this harness (interfaces,
    /// tx ports, routes, next hops, customers, local addresses, upper MACs,
    /// config flags),
    /// so one loaded program can serve many test cases. Counters are kept:
    /// compare them before and after a run.
    pub fn reset_tables(&mut self) -> Result<()> {
        let w = std::mem::take(&mut self.written);
        // Deleting a key twice (written twice) reports ENOENT: ignore that.
        fn gone(r: std::result::Result<(), aya::maps::MapError>) -> bool {
            match r {
                Err(aya::maps::MapError::KeyNotFound) => true,
                Err(aya::maps::MapError::SyscallError(e)) => {
                    e.io_error.raw_os_error() == Some(libc::ENOENT)
                }
                other => other.is_ok(),
            }
        }
        macro_rules! remove_all {
            ($name:expr, $ty:ty, $keys:expr, $remove:expr) => {{
                let m = $name;
                let mut map: $ty = <$ty>::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
                for key in $keys {
                    if !gone($remove(&mut map, key)) {
                        return Err(TestRunError::Map {
                            map: m,
                            operation: format!("remove {key:?}"),
                            source: "delete failed".into(),
                        });
                    }
                }
            }};
        }
        if self.pop.map(maps::IFACES_BY_INDEX).is_some() {
            // Elements [`Harness::index_ifaces`] wrote, before their hash entries.
            let m = maps::IFACES_BY_INDEX;
            let mut array: PerCpuArray<_, PopIface> =
                PerCpuArray::try_from(self.map_mut(m)?).map_err(map_err(m, "open"))?;
            for ifindex in w
                .ifaces
                .iter()
                .filter(|i| pop::dataplane::ifaces::indexed(**i))
            {
                let zero = on_every_cpu(m, PopIface::default())?;
                array
                    .set(*ifindex, zero, 0)
                    .map_err(map_err(m, format!("clear ifindex {ifindex}")))?;
            }
        }
        remove_all!(
            maps::IFACES,
            HashMap<_, u32, PopIface>,
            &w.ifaces,
            |m: &mut HashMap<_, u32, PopIface>, k: &u32| m.remove(k)
        );
        remove_all!(
            maps::TX_PORTS,
            DevMapHash<_>,
            &w.tx_ports,
            |m: &mut DevMapHash<_>, k: &u32| m.remove(*k)
        );
        for (len, addr) in &w.routes_v4 {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(*addr), *len as u8)
                .map_err(map_err(maps::FIB4_TBL24, format!("prefix {addr:?}/{len}")))?;
            self.routes4()?
                .del(&net)
                .map_err(map_err(maps::FIB4_TBL24, format!("remove {net}")))?;
        }
        remove_all!(
            maps::ROUTES_V4,
            LpmTrie<_, [u8; 4], PopRoute>,
            &w.routes_v4,
            |m: &mut LpmTrie<_, [u8; 4], PopRoute>, k: &(u32, [u8; 4])| m
                .remove(&Key::new(k.0, k.1))
        );
        for (len, addr) in &w.routes_v6 {
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from(*addr), *len as u8)
                .map_err(map_err(maps::FIB6_NODES, format!("prefix {addr:?}/{len}")))?;
            self.routes6()?
                .del(&net)
                .map_err(map_err(maps::FIB6_NODES, format!("remove {net}")))?;
        }
        remove_all!(
            maps::ROUTES_V6,
            LpmTrie<_, [u8; 16], PopRoute>,
            &w.routes_v6,
            |m: &mut LpmTrie<_, [u8; 16], PopRoute>, k: &(u32, [u8; 16])| m
                .remove(&Key::new(k.0, k.1))
        );
        remove_all!(
            maps::NEXTHOPS,
            Array<_, PopNexthop>,
            &w.nexthops,
            |m: &mut Array<_, PopNexthop>, k: &u32| m.set(*k, PopNexthop::default(), 0)
        );
        for (len, addr) in &w.cust_v4 {
            let p = Prefix4::new(Ipv4Addr::from(*addr), *len as u8)
                .map_err(map_err(maps::FIB4_TBL24, format!("prefix {addr:?}/{len}")))?;
            self.routes4()?
                .fib_mut()
                .del_customer(p)
                .map_err(map_err(maps::FIB4_TBL24, format!("remove customer {p}")))?;
        }
        for key in &w.local_v4 {
            let addr = Ipv4Addr::from(key.to_ne_bytes());
            self.routes4()?
                .fib_mut()
                .del_local(addr)
                .map_err(map_err(maps::FIB4_TBL24, format!("remove local {addr}")))?;
        }
        for (len, addr) in &w.cust_v6 {
            let p = Prefix6::new(Ipv6Addr::from(*addr), *len as u8)
                .map_err(map_err(maps::FIB6_NODES, format!("prefix {addr:?}/{len}")))?;
            self.routes6()?
                .fib_mut()
                .del_customer(p)
                .map_err(map_err(maps::FIB6_NODES, format!("remove customer {p}")))?;
        }
        for addr in &w.local_v6 {
            let addr = Ipv6Addr::from(*addr);
            self.routes6()?
                .fib_mut()
                .del_local(addr)
                .map_err(map_err(maps::FIB6_NODES, format!("remove local {addr}")))?;
        }
        remove_all!(
            maps::CUST_V4,
            LpmTrie<_, [u8; 4], PopCustomerRef>,
            &w.cust_v4,
            |m: &mut LpmTrie<_, [u8; 4], PopCustomerRef>, k: &(u32, [u8; 4])| m
                .remove(&Key::new(k.0, k.1))
        );
        remove_all!(
            maps::CUST_V6,
            LpmTrie<_, [u8; 16], PopCustomerRef>,
            &w.cust_v6,
            |m: &mut LpmTrie<_, [u8; 16], PopCustomerRef>, k: &(u32, [u8; 16])| m
                .remove(&Key::new(k.0, k.1))
        );
        remove_all!(
            maps::LOCAL_V4,
            HashMap<_, u32, u32>,
            &w.local_v4,
            |m: &mut HashMap<_, u32, u32>, k: &u32| m.remove(k)
        );
        remove_all!(
            maps::LOCAL_V6,
            HashMap<_, PopLocalV6, u32>,
            &w.local_v6,
            |m: &mut HashMap<_, PopLocalV6, u32>, k: &[u8; 16]| m
                .remove(&PopLocalV6 { addr: *k })
        );
        remove_all!(
            maps::UPPER_MACS,
            HashMap<_, PopUpperMacKey, u32>,
            &w.upper_macs,
            |m: &mut HashMap<_, PopUpperMacKey, u32>, k: &PopUpperMacKey| m.remove(k)
        );
        if w.config {
            self.set_config(0)?;
            self.set_icmp_limit(0, 0)?;
            self.written.config = false;
        }
        Ok(())
    }

    /// The loaded program, e.g. to tail call it from a benchmark driver.
    pub fn xdp(&self, program: Program) -> Result<&Xdp> {
        let ebpf = match program {
            Program::Pop => &self.pop,
            Program::Pass => &self.pass,
        };
        let prog = ebpf
            .program(program.name())
            .ok_or_else(|| TestRunError::Load {
                program: program.name(),
                source: "not in the object".into(),
            })?;
        <&Xdp>::try_from(prog).map_err(|e| TestRunError::Load {
            program: program.name(),
            source: Box::new(e),
        })
    }

    fn test_run(
        &self,
        program: Program,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        let ctx = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex,
            ..XdpMd::default()
        }
        .to_bytes();
        let mut out = vec![0u8; frame.len() + 256];
        let xdp = self.xdp(program)?;
        // With repeats the kernel stops at a pending signal and returns
        // EINTR (bpf_test_timer_continue); nothing is measured then, so run
        // the batch again. A few signals in a row are tolerated, not a storm.
        let mut interrupted = 0;
        let result = loop {
            match xdp.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::default()
            }) {
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EINTR) && interrupted < 10 =>
                {
                    interrupted += 1;
                }
                other => {
                    break other.map_err(|e| TestRunError::Run {
                        program: program.name(),
                        ingress_ifindex,
                        source: Box::new(e),
                    })?
                }
            }
        };
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }

    /// Runs pop's program once on `frame` arriving on `ingress_ifindex`;
    /// returns the XDP action (`XDP_PASS` = 2, ...) and the frame as it left.
    pub fn run(&self, frame: &[u8], ingress_ifindex: u32) -> Result<(u32, Vec<u8>)> {
        self.run_program(Program::Pop, frame, ingress_ifindex)
    }

    /// Like [`Harness::run`], for either program.
    pub fn run_program(
        &self,
        program: Program,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(u32, Vec<u8>)> {
        let (action, out, _) = self.test_run(program, frame, ingress_ifindex, 1)?;
        Ok((action, out))
    }

    /// Average cost in ns of one run of `program` on `frame`, measured by the
    /// kernel over `total_runs` runs.
    ///
    /// The kernel does not reset the frame between the repeats of one
    /// BPF_PROG_TEST_RUN call, so a frame the program changes (a forwarded one:
    /// TTL - 1) is run in batches of at most [`MAX_REPEAT_PER_BATCH`] repeats,
    /// each starting again from `frame`; give it TTL / hop limit 255 so it stays
    /// forwardable within a batch. A frame the program leaves unchanged is run
    /// in batches of up to [`MAX_REPEAT_FIXED_FRAME`]. Every call with repeats
    /// has a fixed cost of ~20 ms wall-clock on Linux 6.18 (the kernel swaps the
    /// XDP dispatcher), so prefer fewer, larger `total_runs`.
    ///
    /// Fails if batches return different actions.
    pub fn ns_per_packet(
        &self,
        program: Program,
        frame: &[u8],
        ingress_ifindex: u32,
        total_runs: u32,
    ) -> Result<f64> {
        let (first, out, _) = self.test_run(program, frame, ingress_ifindex, 1)?;
        let max_batch = if out == frame {
            MAX_REPEAT_FIXED_FRAME
        } else {
            MAX_REPEAT_PER_BATCH
        };
        let total_runs = total_runs.max(1);
        let mut remaining = total_runs;
        let mut total_ns = 0f64;
        while remaining > 0 {
            let batch = remaining.min(max_batch);
            let (action, _, duration) = self.test_run(program, frame, ingress_ifindex, batch)?;
            if action != first {
                return Err(TestRunError::UnstableAction {
                    program: program.name(),
                    first,
                    later: action,
                });
            }
            // The kernel reports the mean duration of one run in the batch.
            total_ns += duration.as_nanos() as f64 * f64::from(batch);
            remaining -= batch;
        }
        Ok(total_ns / f64::from(total_runs))
    }

    fn counter(&self, map: &'static str, index: u32) -> Result<PopCounter> {
        let array: PerCpuArray<_, PopCounter> =
            PerCpuArray::try_from(self.map(map)?).map_err(map_err(map, "open"))?;
        let values = array
            .get(&index, 0)
            .map_err(map_err(map, format!("get index {index}")))?;
        Ok(PopCounter::sum(values.iter()))
    }

    fn record<V: aya::Pod>(&self, map: &'static str, index: u32) -> Result<Vec<V>> {
        let array: PerCpuArray<_, V> =
            PerCpuArray::try_from(self.map(map)?).map_err(map_err(map, "open"))?;
        let values = array
            .get(&index, 0)
            .map_err(map_err(map, format!("get index {index}")))?;
        Ok(values.iter().copied().collect())
    }

    /// Interface `slot`'s counter record (or [`NO_IFACE_SLOT`]'s), summed over CPUs.
    pub fn iface_record(&self, slot: u32) -> Result<PopIfaceCounters> {
        let per_cpu: Vec<PopIfaceCounters> = self.record(maps::IFACE_COUNTERS, slot)?;
        Ok(PopIfaceCounters::sum(per_cpu.iter()))
    }

    /// Every interface record summed (all slots and [`NO_IFACE_SLOT`]): the
    /// global counters by drop and pass reason.
    pub fn iface_totals(&self) -> Result<PopIfaceCounters> {
        let mut total = PopIfaceCounters::default();
        for slot in 0..=NO_IFACE_SLOT {
            total.add(&self.iface_record(slot)?);
        }
        Ok(total)
    }

    /// Customer `customer_id`'s counter record, summed over CPUs.
    pub fn customer_record(&self, customer_id: u32) -> Result<PopCustomerCounters> {
        let per_cpu: Vec<PopCustomerCounters> =
            self.record(maps::CUSTOMER_COUNTERS, customer_id)?;
        Ok(PopCustomerCounters::sum(per_cpu.iter()))
    }

    /// Packets and bytes counted for interface `slot` and `action`, summed over CPUs.
    pub fn iface_stats(&self, slot: u32, action: Action) -> Result<PopCounter> {
        Ok(self.iface_record(slot)?.action[action as usize])
    }

    /// Packets and bytes dropped for `reason` on interface `slot`, summed over CPUs.
    pub fn iface_drops(&self, slot: u32, reason: DropReason) -> Result<PopCounter> {
        Ok(self.iface_record(slot)?.drop[reason as usize])
    }

    /// Packets and bytes passed for `reason` on interface `slot`, summed over CPUs.
    pub fn iface_passes(&self, slot: u32, reason: PassReason) -> Result<PopCounter> {
        Ok(self.iface_record(slot)?.pass[reason as usize])
    }

    /// Packets and bytes dropped for `reason`, summed over CPUs and interfaces.
    pub fn drop_stats(&self, reason: DropReason) -> Result<PopCounter> {
        Ok(self.iface_totals()?.drop[reason as usize])
    }

    /// Packets and bytes passed to the kernel for `reason`, summed over CPUs
    /// and interfaces.
    pub fn pass_stats(&self, reason: PassReason) -> Result<PopCounter> {
        Ok(self.iface_totals()?.pass[reason as usize])
    }

    /// ICMP errors of `kind` sent (packets, bytes of the errors), summed over CPUs.
    pub fn icmp_stats(&self, kind: IcmpType) -> Result<PopCounter> {
        self.counter(maps::ICMP_STATS, kind as u32)
    }

    /// Customer `customer_id`'s traffic in `direction`, summed over CPUs.
    pub fn cust_stats(&self, customer_id: u32, direction: Direction) -> Result<PopCounter> {
        Ok(self.customer_record(customer_id)?.dir[direction as usize])
    }

    /// Customer `customer_id`'s drops for `reason`, summed over CPUs.
    pub fn cust_drops(&self, customer_id: u32, reason: DropReason) -> Result<PopCounter> {
        Ok(self.customer_record(customer_id)?.drop[reason as usize])
    }
}

fn load_program(object: &[u8], program: Program, pin_dir: &Path) -> Result<Ebpf> {
    let load_err = |source: Box<dyn Error + Send + Sync>| TestRunError::Load {
        program: program.name(),
        source,
    };
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(object)
        .map_err(|e| load_err(Box::new(e)))?;
    let prog: &mut Xdp = ebpf
        .program_mut(program.name())
        .ok_or_else(|| load_err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| load_err(Box::new(e)))?;
    prog.load().map_err(|e| load_err(Box::new(e)))?;
    Ok(ebpf)
}

fn make_route(prefix: &str, nh_ids: &[u32], flags: u32) -> Result<PopRoute> {
    if nh_ids.len() > MAX_ECMP {
        return Err(TestRunError::NextHopCount {
            prefix: prefix.into(),
            count: nh_ids.len(),
        });
    }
    let mut route = PopRoute {
        flags,
        nh_count: nh_ids.len() as u32,
        nh_ids: [0; MAX_ECMP],
    };
    route.nh_ids[..nh_ids.len()].copy_from_slice(nh_ids);
    Ok(route)
}

/// Writes `records` to `ifaces_by_index` on every CPU, with `IFACE_PRESENT`.
fn write_indexed<T: std::borrow::BorrowMut<aya::maps::MapData>>(
    mut array: PerCpuArray<T, PopIface>,
    records: &[(u32, PopIface)],
) -> Result<usize> {
    let m = maps::IFACES_BY_INDEX;
    for (ifindex, record) in records {
        let values = on_every_cpu(m, pop::dataplane::ifaces::indexed_value(Some(*record)))?;
        array
            .set(*ifindex, values, 0)
            .map_err(map_err(m, format!("set ifindex {ifindex}")))?;
    }
    Ok(records.len())
}

/// `value` on every possible CPU: an element of the per-CPU array `map`.
fn on_every_cpu(map: &'static str, value: PopIface) -> Result<aya::maps::PerCpuValues<PopIface>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| TestRunError::Map {
        map,
        operation: "nr_cpus".into(),
        source: e.into(),
    })?;
    Ok(aya::maps::PerCpuValues::try_from(vec![value; cpus]).expect("nr_cpus values"))
}

fn map_err<E: Error + Send + Sync + 'static>(
    map: &'static str,
    operation: impl Into<String>,
) -> impl FnOnce(E) -> TestRunError {
    let operation = operation.into();
    move |e| TestRunError::Map {
        map,
        operation,
        source: Box::new(e),
    }
}
