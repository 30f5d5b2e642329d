//! The differential fuzzer: random tables and random, mutated frames through
//! the real XDP program (BPF_PROG_TEST_RUN, [`crate::testrun::Harness`]) and
//! through the reference model ([`crate::model`]); any difference in action,
//! output bytes or counters is a [`Difference`] with a printable reproduction.
//!
//! Tables are drawn from a seed ([`tables`]); a reproduction is the tables
//! (JSON of the model's desired state), the ingress port and the frame's hex,
//! which is also the corpus format (`tests/fuzz-corpus/*.case`, see [`Case`]).
use std::{collections::BTreeMap, fmt, net::IpAddr, rc::Rc};

use aya::maps::HashMap as BpfHashMap;
use ipnet::IpNet;
use pop::{
    acl::{self, AclMaps, SpoofTables},
    config::{model::AclAction, validate::ValidAcl},
};
use pop_common::{
    maps, Action, Direction, DropReason, IcmpType, PassReason, PopIface, PopNexthop, PopVlanKey,
    Role, CFG_NO_ROUTE_DROP, IFACE_ANTI_SPOOFING, NH_RESOLVED, NH_VALID, ROUTE_BLACKHOLE,
};

use crate::{
    model::{
        AclRuleSpec, Counter, CustomerSpec, Desired, IfaceSpec, Model, NextHopSpec, Outcome,
        Prefix, RouteSpec, Verdict,
    },
    testrun::{Harness, Port},
};

mod frames;
pub use frames::random_frame;

/// A small, seedable PRNG (splitmix64): the fuzzer needs no crate for it.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The made-up ifindex of the VLAN device (id [`VLAN_ID`]) on port A.
pub const VLAN_DEV: u32 = 900;
/// The VLAN id served on port A.
pub const VLAN_ID: u16 = 100;
/// MAC of a macvlan (VRRP) device on port A.
pub const UPPER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];

fn v4(a: [u8; 4], len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::from(a),
        len,
    }
}

fn v6(a: &str, len: u8) -> Prefix {
    Prefix {
        addr: a.parse().unwrap(),
        len,
    }
}

/// Random desired state over ports `a` and `b`, from `seed`: two ports (A
/// with a served VLAN device), routes with one or several next hops
/// (resolved or not, MTUs from 68 to none, tagged or not, on either port,
/// B sometimes missing from the device map), blackholes, customers, local
/// addresses with their subnets, and either `no_route` setting.
pub fn tables(seed: u64, a: &Port, b: &Port) -> Desired {
    let mut r = Rng::new(seed ^ 0x7ab1e5);
    let src4 = |r: &mut Rng| {
        r.chance(7, 8)
            .then(|| IpAddr::from([192, 0, 2, 1 + r.below(3) as u8]))
    };
    let src6 = |r: &mut Rng| r.chance(7, 8).then(|| "2001:db8:ffff::1".parse().unwrap());
    let icmp4 = |r: &mut Rng| match src4(r) {
        Some(IpAddr::V4(x)) => Some(x),
        _ => None,
    };
    let icmp6 = |r: &mut Rng| match src6(r) {
        Some(IpAddr::V6(x)) => Some(x),
        _ => None,
    };
    let mut upper = vec![];
    if r.chance(1, 2) {
        upper.push(UPPER_MAC);
    }
    let ifaces = vec![
        IfaceSpec {
            ifindex: a.ifindex,
            slot: 1,
            mac: a.mac,
            vlan_of: None,
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: upper,
        },
        IfaceSpec {
            ifindex: b.ifindex,
            slot: 2,
            mac: b.mac,
            vlan_of: None,
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: vec![],
        },
        IfaceSpec {
            ifindex: VLAN_DEV,
            slot: 1,
            mac: a.mac,
            vlan_of: Some((a.ifindex, VLAN_ID)),
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: vec![],
        },
    ];
    let mut tx_ports = vec![a.ifindex];
    if r.chance(7, 8) {
        tx_ports.push(b.ifindex);
    }
    let mtus = [0u32, 1500, 1280, 576, 576, 100, 100, 68, 9000];
    let nexthop = |r: &mut Rng, i: u8| NextHopSpec {
        ifindex: if r.chance(2, 3) { b.ifindex } else { a.ifindex },
        resolved: r.chance(7, 8),
        dmac: [0x02, 0, 0, 0, 0x0e, i],
        smac: [0x02, 0, 0, 0, 0x5e, i],
        mtu: *r.pick(&mtus),
        vlan: *r.pick(&[0, 0, 0, 200, VLAN_ID]),
    };
    let prefixes = [
        v4([10, 0, 0, 0], 8),
        v4([10, 1, 0, 0], 16),
        v4([10, 1, 2, 0], 24),
        v4([198, 51, 100, 0], 24),
        v4([203, 0, 113, 0], 24),
        v4([0, 0, 0, 0], 0),
        v6("2001:db8::", 32),
        v6("2001:db8:1::", 48),
        v6("2001:db8:1:2::", 64),
        v6("2001:db8:a::", 48),
        v6("::", 0),
    ];
    let mut routes = vec![];
    let mut nh_no = 0u8;
    for p in prefixes {
        // Default routes are rarer, so that no_route is reached.
        let keep = if p.len == 0 { 1 } else { 3 };
        if !r.chance(keep, 4) {
            continue;
        }
        let count = if r.chance(1, 4) { 1 + r.below(3) } else { 1 };
        let nexthops = (0..count)
            .map(|_| {
                nh_no += 1;
                nexthop(&mut r, nh_no)
            })
            .collect();
        routes.push(RouteSpec {
            prefix: p,
            nexthops,
            blackhole: r.chance(1, 16),
        });
    }
    let ports = [a.ifindex, b.ifindex, VLAN_DEV];
    let attach = |r: &mut Rng| {
        let mut at: Vec<u32> = ports.iter().copied().filter(|_| r.chance(1, 3)).collect();
        at.dedup();
        at
    };
    let mut customers = vec![
        CustomerSpec {
            id: 1,
            prefixes: vec![v4([198, 51, 100, 0], 24), v6("2001:db8:a::", 48)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
        CustomerSpec {
            id: 2,
            prefixes: vec![v4([10, 1, 2, 0], 24), v4([100, 64, 0, 0], 10)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
        CustomerSpec {
            id: 3,
            prefixes: vec![v4([203, 0, 113, 0], 24), v6("2001:db8:1::", 48)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
    ];
    // 10/8 holds customer 2's 10.1.2.0/24 (a sub-allocation): counted by the
    // most specific prefix. Only without anti-spoofing: there the data plane
    // and the model disagree (tests/fuzz-corpus/known/).
    if customers.iter().all(|c| !c.anti_spoofing) && r.chance(1, 2) {
        customers[2].prefixes.push(v4([10, 0, 0, 0], 8));
    }
    let mut acls = vec![];
    if r.chance(2, 3) {
        let n = 2 + r.below(4);
        for i in 0..n {
            acls.push(acl_rule(&mut r, 10 * (n - i) as u32, &ports, &prefixes));
        }
    }
    let local = vec![
        v4([192, 0, 2, 1], 24),
        v4([10, 1, 2, 1], 24),
        v4([198, 51, 100, 1], 31),
        v6("2001:db8:ffff::1", 64),
    ];
    Desired {
        ifaces,
        tx_ports,
        routes,
        customers,
        local,
        no_route_drop: r.chance(1, 2),
        acls,
    }
}

/// A random ACL rule: one or two fields set (and the protocol of a port
/// range), so that some traffic matches and most passes.
fn acl_rule(r: &mut Rng, priority: u32, ports: &[u32], prefixes: &[Prefix]) -> AclRuleSpec {
    let mut rule = AclRuleSpec {
        priority,
        drop: r.chance(3, 4),
        src: None,
        dst: None,
        proto: None,
        src_port: None,
        dst_port: None,
        in_iface: None,
    };
    let v6 = r.chance(1, 2);
    let family: Vec<Prefix> = prefixes
        .iter()
        .copied()
        .filter(|p| p.addr.is_ipv6() == v6 && p.len > 0)
        .collect();
    for _ in 0..1 + r.below(2) {
        match r.below(6) {
            0 => rule.src = Some(*r.pick(&family)),
            1 => rule.dst = Some(*r.pick(&family)),
            2 => rule.proto = Some(*r.pick(&[1, 58, 47])),
            3 | 4 => {
                rule.proto = Some(*r.pick(&[6, 17]));
                let range = *r.pick(&[(0, 1023), (53, 53), (1024, 65535), (30000, 40000)]);
                if r.chance(1, 2) {
                    rule.dst_port = Some(range);
                } else {
                    rule.src_port = Some(range);
                }
            }
            _ => rule.in_iface = Some(*r.pick(ports)),
        }
    }
    rule
}

/// Writes `desired` into the harness's maps (after [`clear`] of the previous
/// tables): what popd's compiler does for the parts the fuzzer uses.
pub fn fill(h: &mut Harness, d: &Desired) -> crate::testrun::Result<()> {
    for i in &d.ifaces {
        h.set_iface_with_mac(i.ifindex, i.slot, Role::Upstream, 1500, i.mac)?;
        h.set_icmp_sources(i.ifindex, i.icmp_src_v4, i.icmp_src_v6)?;
        for m in &i.upper_macs {
            h.add_upper_mac(i.ifindex, *m, 800)?;
        }
        if let Some((port, vid)) = i.vlan_of {
            let map = h.map_mut(maps::VLAN_IFACES)?;
            let mut vlans: BpfHashMap<_, PopVlanKey, u32> =
                BpfHashMap::try_from(map).expect("vlan_ifaces is a hash map");
            let key = PopVlanKey {
                ifindex: port,
                vid: u32::from(vid),
            };
            vlans
                .insert(key, i.ifindex, 0)
                .expect("writing vlan_ifaces");
        }
    }
    for p in &d.tx_ports {
        h.add_tx_port(*p)?;
    }
    let mut nh_id = 1u32;
    for route in &d.routes {
        let mut ids = vec![];
        for nh in &route.nexthops {
            let flags = NH_VALID | if nh.resolved { NH_RESOLVED } else { 0 };
            h.set_nexthop(
                nh_id,
                PopNexthop {
                    ifindex: nh.ifindex,
                    flags,
                    dmac: nh.dmac,
                    smac: nh.smac,
                    mtu: nh.mtu,
                    vlan: nh.vlan,
                    pad: 0,
                },
            )?;
            ids.push(nh_id);
            nh_id += 1;
        }
        let flags = if route.blackhole { ROUTE_BLACKHOLE } else { 0 };
        let text = route.prefix.to_string();
        match route.prefix.addr {
            IpAddr::V4(_) => h.add_route_v4(&text, &ids, flags)?,
            IpAddr::V6(_) => h.add_route_v6(&text, &ids, flags)?,
        }
    }
    for c in &d.customers {
        for p in &c.prefixes {
            let text = p.to_string();
            match p.addr {
                IpAddr::V4(_) => h.add_customer_v4(&text, c.id)?,
                IpAddr::V6(_) => h.add_customer_v6(&text, c.id)?,
            }
        }
    }
    for l in &d.local {
        match l.addr {
            IpAddr::V4(a) => {
                h.add_local_v4(a)?;
                // The subnet's directed broadcast address is the host's too.
                if l.len < 31 {
                    let bcast = u32::from(a) | (u32::MAX >> l.len);
                    h.add_local_v4(bcast.into())?;
                }
            }
            IpAddr::V6(a) => h.add_local_v6(a)?,
        }
    }
    h.set_config(if d.no_route_drop {
        CFG_NO_ROUTE_DROP
    } else {
        0
    })?;
    // ICMP errors without a rate limit: the bucket depends on time.
    h.set_icmp_limit(0, 0)?;
    fill_admission(h, d);
    Ok(())
}

/// The interface name the ACL compiler is given for `ifindex`.
fn iface_name(ifindex: u32) -> String {
    format!("if{ifindex}")
}

/// Anti-spoofing and ACL tables, compiled by popd's own code (`pop::acl`).
fn fill_admission(h: &mut Harness, d: &Desired) {
    let mut spoof = SpoofTables::default();
    for c in &d.customers {
        for i in &c.interfaces {
            spoof.allow.insert((c.id, *i));
            if c.anti_spoofing {
                // The first anti-spoofing customer at a port is the one its
                // spoofed packets are counted against.
                spoof.ports.entry(*i).or_insert(c.id);
            }
        }
    }
    let rules: Vec<ValidAcl> = d
        .acls
        .iter()
        .map(|a| ValidAcl {
            priority: a.priority,
            action: if a.drop {
                AclAction::Drop
            } else {
                AclAction::Allow
            },
            src: a.src.map(to_net),
            dst: a.dst.map(to_net),
            proto: a.proto,
            src_port: a.src_port,
            dst_port: a.dst_port,
            in_iface: a.in_iface.map(iface_name),
        })
        .collect();
    let compiled = acl::compile(&rules, &|name| name.strip_prefix("if")?.parse().ok())
        .expect("compiling the ACL");
    let mut maps = AclMaps::open(h.pin_dir()).expect("opening the ACL maps");
    maps.swap_in(&compiled).expect("writing the ACL");
    maps.add_spoof(&spoof)
        .expect("writing the anti-spoofing tables");
    for ifindex in spoof.ports.keys() {
        let m = h.map_mut(maps::IFACES).expect("ifaces");
        let mut ifaces: BpfHashMap<_, u32, PopIface> =
            BpfHashMap::try_from(m).expect("ifaces is a hash map");
        let mut value = ifaces.get(ifindex, 0).expect("the interface was written");
        value.flags |= IFACE_ANTI_SPOOFING;
        ifaces.insert(ifindex, value, 0).expect("writing ifaces");
    }
}

fn to_net(p: Prefix) -> IpNet {
    IpNet::new(p.addr, p.len).expect("a valid prefix length")
}

/// Removes the tables [`fill`] wrote.
pub fn clear(h: &mut Harness) -> crate::testrun::Result<()> {
    h.reset_tables()?;
    let mut maps = AclMaps::open(h.pin_dir()).expect("opening the ACL maps");
    maps.prune_spoof(&SpoofTables::default())
        .expect("clearing the anti-spoofing tables");
    maps.swap_in(&acl::compile(&[], &|_| None).expect("an empty ACL"))
        .expect("clearing the ACL");
    let map = h.map_mut(maps::VLAN_IFACES)?;
    let mut vlans: BpfHashMap<_, PopVlanKey, u32> =
        BpfHashMap::try_from(map).expect("vlan_ifaces is a hash map");
    let keys: Vec<PopVlanKey> = vlans.keys().filter_map(|k| k.ok()).collect();
    for k in keys {
        let _ = vlans.remove(&k);
    }
    Ok(())
}

/// Every counter the model can move, for tables over these slots and customers.
fn all_counters(d: &Desired) -> Vec<Counter> {
    let mut all = vec![];
    let mut slots: Vec<u32> = d.ifaces.iter().map(|i| i.slot).collect();
    slots.sort();
    slots.dedup();
    for s in slots {
        all.extend(Action::ALL.iter().map(|a| Counter::Iface(s, *a)));
    }
    all.extend(DropReason::ALL.iter().map(|r| Counter::Drop(*r)));
    all.extend(PassReason::ALL.iter().map(|r| Counter::Pass(*r)));
    all.extend(IcmpType::ALL.iter().map(|k| Counter::Icmp(*k)));
    for c in &d.customers {
        all.extend(Direction::ALL.iter().map(|x| Counter::Cust(c.id, *x)));
        all.extend(DropReason::ALL.iter().map(|r| Counter::CustDrop(c.id, *r)));
    }
    all
}

fn read_counter(h: &Harness, c: Counter) -> (u64, u64) {
    let v = match c {
        Counter::Iface(s, a) => h.iface_stats(s, a),
        Counter::Drop(r) => h.drop_stats(r),
        Counter::Pass(r) => h.pass_stats(r),
        Counter::Cust(id, d) => h.cust_stats(id, d),
        Counter::CustDrop(id, r) => h.cust_drops(id, r),
        Counter::Icmp(k) => h.icmp_stats(k),
    }
    .unwrap_or_else(|e| panic!("reading {c:?}: {e}"));
    (v.packets, v.bytes)
}

/// Packets and bytes.
type Moved = (u64, u64);

type Snapshot = BTreeMap<Counter, Moved>;

fn snapshot(h: &Harness, all: &[Counter]) -> Snapshot {
    all.iter().map(|c| (*c, read_counter(h, *c))).collect()
}

/// One frame, where it arrives, and the tables it meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Seed the tables were drawn from ([`tables`]); informative only.
    pub table_seed: u64,
    /// The tables, with the ports' ifindexes and MACs of the fuzz test
    /// (shared by the frames of a run).
    pub tables: Rc<Desired>,
    /// Ingress: 0 port A, 1 port B, 2 an interface pop does not serve.
    pub ingress: u8,
    /// The frame.
    pub frame: Vec<u8>,
}

impl Case {
    /// The corpus form: `table_seed N`, `ingress N`, `frame HEX` and
    /// `tables JSON` lines.
    pub fn to_text(&self) -> String {
        format!(
            "table_seed {}\ningress {}\nframe {}\ntables {}\n",
            self.table_seed,
            self.ingress,
            hex(&self.frame),
            serde_json::to_string(&*self.tables).expect("tables serialize")
        )
    }
    /// Parses [`Case::to_text`]; `#` lines are comments.
    pub fn parse(text: &str) -> Result<Case, String> {
        let (mut seed, mut ingress, mut frame, mut tables) = (None, None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(' ').ok_or(format!("line {line:?}"))?;
            match k {
                "table_seed" => seed = Some(v.parse().map_err(|e| format!("{line}: {e}"))?),
                "ingress" => ingress = Some(v.parse().map_err(|e| format!("{line}: {e}"))?),
                "frame" => frame = Some(unhex(v)?),
                "tables" => {
                    tables = Some(serde_json::from_str(v).map_err(|e| format!("tables: {e}"))?)
                }
                _ => return Err(format!("unknown key {k:?}")),
            }
        }
        Ok(Case {
            table_seed: seed.ok_or("no table_seed")?,
            tables: Rc::new(tables.ok_or("no tables")?),
            ingress: ingress.ok_or("no ingress")?,
            frame: frame.ok_or("no frame")?,
        })
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex: {e}")))
        .collect()
}

/// A difference between the program and the model, printable as a reproduction.
#[derive(Debug)]
pub struct Difference {
    /// The case (corpus form).
    pub case: Case,
    /// What differed.
    pub what: String,
    /// The program's action and output.
    pub program: (u32, Vec<u8>),
    /// The model's answers.
    pub model: Vec<Outcome>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "program and model differ: {}", self.what)?;
        writeln!(f, "--- reproduction (tests/fuzz-corpus/NAME.case) ---")?;
        write!(f, "{}", self.case.to_text())?;
        writeln!(
            f,
            "--- program: action {} output {}",
            self.program.0,
            hex(&self.program.1)
        )?;
        for m in &self.model {
            writeln!(
                f,
                "--- model: {} action {} egress {:?} output {}\n    counters {:?}",
                m.verdict,
                m.action,
                m.egress,
                hex(&m.out),
                m.counters
            )?;
        }
        Ok(())
    }
}

/// The fuzzer's environment: the loaded program, its three ports, the model.
pub struct Fuzzer {
    /// The real program.
    pub harness: Harness,
    /// Port A (with the VLAN device) and port B.
    pub ports: [Port; 2],
    /// An ifindex pop does not serve.
    pub unknown: u32,
    /// The model of the current tables.
    pub model: Model,
    table_seed: u64,
    tables: Rc<Desired>,
    counters: Vec<Counter>,
    /// Frames per verdict so far.
    pub histogram: BTreeMap<Verdict, u64>,
    /// Frames run so far.
    pub frames: u64,
}

/// How many frames run between counter comparisons.
pub const BATCH: usize = 2000;

impl Fuzzer {
    /// A fuzzer over `harness` and ports `a`, `b` (veths in this thread's
    /// namespace) and `unknown` (an interface pop does not serve).
    pub fn new(harness: Harness, a: Port, b: Port, unknown: u32) -> Fuzzer {
        Fuzzer {
            harness,
            ports: [a, b],
            unknown,
            model: Model::new(Desired::default()),
            table_seed: u64::MAX,
            tables: Rc::new(Desired::default()),
            counters: vec![],
            histogram: BTreeMap::new(),
            frames: 0,
        }
    }

    /// Loads the tables of `seed` into the program and the model.
    pub fn use_tables(&mut self, seed: u64) {
        let d = tables(seed, &self.ports[0], &self.ports[1]);
        self.use_desired(seed, &Rc::new(d));
    }

    /// Loads `d` (drawn from `seed`) into the program and the model.
    pub fn use_desired(&mut self, seed: u64, d: &Rc<Desired>) {
        if seed == self.table_seed && (Rc::ptr_eq(d, &self.tables) || **d == *self.tables) {
            return;
        }
        self.tables = d.clone();
        let d = (**d).clone();
        clear(&mut self.harness).expect("clearing the tables");
        fill(&mut self.harness, &d).expect("filling the tables");
        self.counters = all_counters(&d);
        let breakage = self.model.breakage;
        self.model = Model::new(d);
        self.model.breakage = breakage;
        self.table_seed = seed;
    }

    fn ifindex(&self, ingress: u8) -> u32 {
        match ingress {
            0 => self.ports[0].ifindex,
            1 => self.ports[1].ifindex,
            _ => self.unknown,
        }
    }

    fn difference(&self, case: &Case, what: String, prog: (u32, Vec<u8>)) -> Difference {
        Difference {
            case: case.clone(),
            what,
            program: prog,
            model: self.model.predict(&case.frame, self.ifindex(case.ingress)),
        }
    }

    /// Runs `case` through both and compares action, bytes and, when the
    /// model allows several answers (ECMP) that count differently, that
    /// frame's counters; returns the model's outcome that matched.
    fn check_one(&mut self, case: &Case) -> Result<Outcome, Box<Difference>> {
        self.use_desired(case.table_seed, &case.tables);
        let port = self.ifindex(case.ingress);
        let answers = self.model.predict(&case.frame, port);
        let ambiguous = answers.iter().any(|o| o.counters != answers[0].counters);
        let before = ambiguous.then(|| snapshot(&self.harness, &self.counters));
        let prog = self
            .harness
            .run(&case.frame, port)
            .expect("BPF_PROG_TEST_RUN");
        let mut matching = answers
            .into_iter()
            .filter(|o| o.action == prog.0 && o.out == prog.1);
        let Some(before) = before else {
            return matching.next().ok_or_else(|| {
                Box::new(self.difference(case, "action or output bytes".into(), prog.clone()))
            });
        };
        let after = snapshot(&self.harness, &self.counters);
        matching
            .find(|o| self.counters_moved_as(&before, &after, o).is_none())
            .ok_or_else(|| {
                Box::new(self.difference(
                    case,
                    "action, output bytes or counters (ECMP)".into(),
                    prog,
                ))
            })
    }

    /// The first counter that did not move between `before` and `after` as
    /// outcome `o` says, with how it moved.
    fn counters_moved_as(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        o: &Outcome,
    ) -> Option<(Counter, Moved, Moved)> {
        self.counters.iter().find_map(|c| {
            let want = o
                .counters
                .iter()
                .find(|(x, _)| x == c)
                .map_or((0, 0), |(_, b)| (1, *b));
            let got = (after[c].0 - before[c].0, after[c].1 - before[c].1);
            (got != want).then_some((*c, got, want))
        })
    }

    /// Runs `cases` (all with one table seed), comparing each frame's
    /// action and bytes and, after the batch, every counter; a counter
    /// difference is pinned on its frame by running the batch again one by one.
    pub fn run_batch(&mut self, cases: &[Case]) -> Result<(), Box<Difference>> {
        let Some(first) = cases.first() else {
            return Ok(());
        };
        self.use_desired(first.table_seed, &first.tables);
        let before = snapshot(&self.harness, &self.counters);
        let mut expected: BTreeMap<Counter, (u64, u64)> = BTreeMap::new();
        for case in cases {
            let o = self.check_one(case)?;
            *self.histogram.entry(o.verdict).or_default() += 1;
            self.frames += 1;
            for (c, bytes) in o.counters {
                let e = expected.entry(c).or_default();
                e.0 += 1;
                e.1 += bytes;
            }
        }
        let after = snapshot(&self.harness, &self.counters);
        let differs = self.counters.iter().any(|c| {
            (after[c].0 - before[c].0, after[c].1 - before[c].1)
                != expected.get(c).copied().unwrap_or_default()
        });
        if !differs {
            return Ok(());
        }
        // Find the frame.
        for case in cases {
            let before = snapshot(&self.harness, &self.counters);
            let o = self.check_one(case)?;
            let after = snapshot(&self.harness, &self.counters);
            if let Some((c, got, want)) = self.counters_moved_as(&before, &after, &o) {
                let prog = self
                    .harness
                    .run(&case.frame, self.ifindex(case.ingress))
                    .expect("BPF_PROG_TEST_RUN");
                return Err(Box::new(self.difference(
                    case,
                    format!("counter {c:?}: program moved it by {got:?}, model by {want:?}"),
                    prog,
                )));
            }
        }
        panic!("the batch's counters differ, but no single frame's do");
    }

    /// Draws `count` frames from `seed`, `frames_per_table` per table set.
    pub fn run_random(
        &mut self,
        seed: u64,
        count: u64,
        frames_per_table: u64,
    ) -> Result<(), Box<Difference>> {
        let mut r = Rng::new(seed);
        let mut done = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while done < count {
            let table_seed = r.next_u64();
            self.use_tables(table_seed);
            let n = frames_per_table.min(count - done);
            for _ in 0..n {
                let (ingress, frame) = random_frame(&mut r, &self.model.desired, &self.ports);
                batch.push(Case {
                    table_seed,
                    tables: self.tables.clone(),
                    ingress,
                    frame,
                });
                if batch.len() == BATCH {
                    self.run_batch(&batch)?;
                    batch.clear();
                }
            }
            self.run_batch(&batch)?;
            batch.clear();
            done += n;
        }
        Ok(())
    }
}
