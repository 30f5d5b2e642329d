//! sFlow v5 export: popd's side of `[sflow]`.
//!
//! The data plane samples 1 in N packets at ingress (random skips, per CPU,
//! so every packet of every interface has the same 1/N chance) and puts each
//! sample (the frame's first 128 bytes, its length, input and output port or
//! drop reason) in the ring buffer `sample_ring`. The exporter, a thread of
//! popd, reads the ring, adds the sample pool (per data source, the packets
//! the samples' skips covered, lost samples' included) and the drops (samples
//! lost to a full ring), and sends flow samples in datagrams of at most 1400
//! bytes, at most 250 ms after the sample was taken. Every `polling_interval`
//! seconds it sends a counter sample per pop interface. Datagrams leave
//! through an ordinary UDP socket in popd's network namespace: the host's
//! kernel routes (the management network), never through pop.
pub mod datagram;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use pop_common::{
    maps as names, Action, DropReason, ObserveStat, PopCounter, PopIfaceCounters, PopSample,
};

use crate::config::model::{Config, InterfaceRole};
use crate::config::validate::ValidSflow;
use datagram::{
    CounterSample, FlowSample, Header, IfCounters, Sample, MAX_DATAGRAM_BYTES, OUTPUT_DISCARDED,
    OUTPUT_INTERNAL, UNKNOWN_32,
};

/// Longest a flow sample waits for others to fill its datagram.
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);

/// A pop interface as the exporter reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Kernel name.
    pub name: String,
    /// ifIndex: the data source and the input/output values.
    pub ifindex: u32,
    /// Slot of its counters in `iface_counters`.
    pub slot: u32,
}

/// What the exporter does; `None` in [`Exporter::set`] stops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where datagrams go.
    pub collectors: Vec<SocketAddr>,
    /// 1 in N (for the record; each sample carries the rate it was taken at).
    pub sampling_rate: u32,
    /// Seconds between counter samples; 0: none.
    pub polling_interval: u32,
    /// Agent address in the datagrams.
    pub agent: IpAddr,
    /// pop's interfaces that exist now.
    pub ports: Vec<Port>,
}

impl Settings {
    /// The exporter's settings for a valid `[sflow]` of `config`: ports from
    /// the kernel's ifindexes and popd's slots; the agent address as
    /// configured, else the first address of the first upstream interface
    /// (IPv4 preferred), else 0.0.0.0 with a warning.
    pub fn new(
        sflow: &ValidSflow,
        config: &Config,
        ifindex: impl Fn(&str) -> Option<u32>,
        slots: &std::collections::BTreeMap<String, u32>,
    ) -> Settings {
        let ports = config
            .interfaces
            .iter()
            .filter_map(|i| {
                Some(Port {
                    name: i.name.clone(),
                    ifindex: ifindex(&i.name)?,
                    slot: *slots.get(&i.name)?,
                })
            })
            .collect();
        let agent = sflow.agent_address.unwrap_or_else(|| {
            let upstream = config
                .interfaces
                .iter()
                .find(|i| i.role == InterfaceRole::Upstream);
            match upstream.and_then(|i| first_address(&i.name)) {
                Some(a) => a,
                None => {
                    tracing::warn!(
                        "sflow: no agent_address and no address on an upstream interface; \
                         datagrams carry agent 0.0.0.0"
                    );
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
            }
        });
        Settings {
            collectors: sflow.collectors.clone(),
            sampling_rate: sflow.sampling_rate,
            polling_interval: sflow.polling_interval,
            agent,
            ports,
        }
    }
}

/// The first address of interface `name` in this network namespace: IPv4 if
/// it has one, else a global IPv6 address.
pub fn first_address(name: &str) -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect();
    addrs.iter().find(|a| a.is_ipv4()).copied().or_else(|| {
        addrs
            .iter()
            .find(|a| matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
            .copied()
    })
}

struct Shared {
    settings: Mutex<Option<Settings>>,
    flow_samples: AtomicU64,
    counter_samples: AtomicU64,
    stop: AtomicBool,
}

/// The exporter thread; stops when dropped.
pub struct Exporter {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Starts the exporter on the maps pinned in `maps_dir`; it sends nothing
    /// until [`Exporter::set`] gives it settings.
    pub fn start(maps_dir: &Path) -> Result<Exporter, String> {
        let maps = ExporterMaps::open(maps_dir)?;
        let shared = Arc::new(Shared {
            settings: Mutex::new(None),
            flow_samples: AtomicU64::new(0),
            counter_samples: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sflow".into())
            .spawn(move || run(maps, s))
            .map_err(|e| format!("sflow: starting the exporter: {e}"))?;
        Ok(Exporter {
            shared,
            thread: Some(thread),
        })
    }

    /// New settings (`None`: export nothing).
    pub fn set(&self, settings: Option<Settings>) {
        let mut cur = self
            .shared
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *cur != settings {
            match &settings {
                Some(s) => tracing::info!(
                    collectors = ?s.collectors,
                    sampling_rate = s.sampling_rate,
                    polling_interval = s.polling_interval,
                    agent = %s.agent,
                    "sflow: exporting"
                ),
                None if cur.is_some() => tracing::info!("sflow: export stopped"),
                None => {}
            }
            *cur = settings;
        }
    }

    /// Flow samples sent so far.
    pub fn flow_samples(&self) -> u64 {
        self.shared.flow_samples.load(Ordering::Relaxed)
    }

    /// Counter samples sent so far.
    pub fn counter_samples(&self) -> u64 {
        self.shared.counter_samples.load(Ordering::Relaxed)
    }

    /// The sample counts, readable apart from the exporter (for metrics).
    pub fn sample_counts(&self) -> SampleCounts {
        SampleCounts(self.shared.clone())
    }
}

/// An exporter's sample counts, read without the exporter itself.
#[derive(Clone)]
pub struct SampleCounts(Arc<Shared>);

impl SampleCounts {
    /// (flow samples, counter samples) sent so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.0.flow_samples.load(Ordering::Relaxed),
            self.0.counter_samples.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct ExporterMaps {
    ring: RingBuf<MapData>,
    iface_counters: PerCpuArray<MapData, PopIfaceCounters>,
    observe_stats: PerCpuArray<MapData, u64>,
}

fn open_map(dir: &Path, name: &str) -> Result<Map, String> {
    let path: PathBuf = dir.join(name);
    let data =
        MapData::from_pin(&path).map_err(|e| format!("sflow: map {}: {e}", path.display()))?;
    Map::from_map_data(data).map_err(|e| format!("sflow: map {name}: {e}"))
}

impl ExporterMaps {
    fn open(dir: &Path) -> Result<Self, String> {
        Ok(Self {
            ring: RingBuf::try_from(open_map(dir, names::SAMPLE_RING)?)
                .map_err(|e| format!("sflow: map {}: {e}", names::SAMPLE_RING))?,
            iface_counters: PerCpuArray::try_from(open_map(dir, names::IFACE_COUNTERS)?)
                .map_err(|e| format!("sflow: map {}: {e}", names::IFACE_COUNTERS))?,
            observe_stats: PerCpuArray::try_from(open_map(dir, names::OBSERVE_STATS)?)
                .map_err(|e| format!("sflow: map {}: {e}", names::OBSERVE_STATS))?,
        })
    }

    /// (packets, bytes, dropped packets) pop saw on interface `slot`.
    fn iface(&self, slot: u32) -> (u64, u64, u64) {
        let record = self
            .iface_counters
            .get(&slot, 0)
            .map(|v| PopIfaceCounters::sum(v.iter()))
            .unwrap_or_default();
        let total = PopCounter::sum(record.action.iter());
        let dropped = record.action[Action::Drop as usize].packets;
        (total.packets, total.bytes, dropped)
    }

    fn lost(&self) -> u64 {
        self.observe_stats
            .get(&(ObserveStat::SampleLost as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// The datagram being filled, and the sequence numbers.
struct Sender {
    sock4: Option<UdpSocket>,
    sock6: Option<UdpSocket>,
    started: Instant,
    datagrams: u32,
    pending: Vec<Sample>,
    pending_bytes: usize,
    oldest: Option<Instant>,
}

impl Sender {
    fn new() -> Self {
        let bind = |a: IpAddr| UdpSocket::bind(SocketAddr::new(a, 0)).ok();
        Self {
            sock4: bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            sock6: bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            started: Instant::now(),
            datagrams: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            oldest: None,
        }
    }

    fn push(&mut self, s: &Settings, sample: Sample) {
        let len = sample.encoded_len();
        if !self.pending.is_empty()
            && datagram::header_len(&s.agent) + self.pending_bytes + len > MAX_DATAGRAM_BYTES
        {
            self.flush(s);
        }
        self.pending_bytes += len;
        self.pending.push(sample);
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn flush(&mut self, s: &Settings) {
        if self.pending.is_empty() {
            return;
        }
        self.datagrams = self.datagrams.wrapping_add(1);
        let header = Header {
            agent: s.agent,
            sub_agent_id: 0,
            sequence: self.datagrams,
            uptime_ms: self.started.elapsed().as_millis() as u32,
        };
        let bytes = datagram::encode(&header, &self.pending);
        for c in &s.collectors {
            let sock = if c.is_ipv4() {
                &self.sock4
            } else {
                &self.sock6
            };
            let sent = match sock {
                Some(sock) => sock.send_to(&bytes, c).map(|_| ()),
                None => Err(std::io::Error::other("no socket of that family")),
            };
            if let Err(e) = sent {
                tracing::debug!(collector = %c, "sflow: sending a datagram: {e}");
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        self.oldest = None;
    }
}

fn run(mut maps: ExporterMaps, shared: Arc<Shared>) {
    let mut sender = Sender::new();
    let mut flow_seq: HashMap<u32, u32> = HashMap::new();
    let mut counter_seq: HashMap<u32, u32> = HashMap::new();
    // The sample pool of each data source: the packets the samples' skips
    // covered (per CPU, so every packet counts once).
    let mut pools: HashMap<u32, u32> = HashMap::new();
    let mut next_poll = Instant::now();
    let fd = maps.ring.as_raw_fd();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        let settings = shared
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(s) = settings else {
            // Not exporting: empty the ring so old samples are not sent later.
            while maps.ring.next().is_some() {}
            sender.pending.clear();
            sender.pending_bytes = 0;
            sender.oldest = None;
            continue;
        };
        let by_ifindex: HashMap<u32, &Port> = s.ports.iter().map(|p| (p.ifindex, p)).collect();
        let mut drops = None;
        loop {
            let Some(item) = maps.ring.next() else { break };
            if item.len() < std::mem::size_of::<PopSample>() {
                continue;
            }
            // SAFETY: the record is a struct pop_sample (checked length);
            // read_unaligned copes with the ring's 8-byte alignment.
            let rec: PopSample = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let Some(port) = by_ifindex.get(&rec.ingress_ifindex) else {
                continue;
            };
            let pool = pools.entry(port.ifindex).or_insert(0);
            *pool = pool.wrapping_add(rec.skipped);
            let drops = *drops.get_or_insert_with(|| maps.lost() as u32);
            let seq = flow_seq.entry(port.ifindex).or_insert(0);
            *seq = seq.wrapping_add(1);
            sender.push(&s, Sample::Flow(flow_sample(&rec, *seq, *pool, drops)));
            shared.flow_samples.fetch_add(1, Ordering::Relaxed);
        }
        if sender.oldest.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
            sender.flush(&s);
        }
        if s.polling_interval > 0 && Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_secs(s.polling_interval.into());
            let kernel = kernel_stats();
            let flags = link_flags();
            for port in &s.ports {
                let seq = counter_seq.entry(port.ifindex).or_insert(0);
                *seq = seq.wrapping_add(1);
                let counters = if_counters(&maps, port, &kernel, &flags);
                sender.push(
                    &s,
                    Sample::Counter(CounterSample {
                        sequence: *seq,
                        source_ifindex: port.ifindex,
                        counters,
                    }),
                );
                shared.counter_samples.fetch_add(1, Ordering::Relaxed);
            }
            sender.flush(&s);
        }
    }
}

/// A flow sample for record `rec`.
fn flow_sample(rec: &PopSample, sequence: u32, sample_pool: u32, drops: u32) -> FlowSample {
    let output = match Action::from_u32(rec.action) {
        Some(Action::Redirect) | Some(Action::Tx) => rec.egress_ifindex,
        Some(Action::Pass) => OUTPUT_INTERNAL,
        Some(Action::Drop) | None => {
            OUTPUT_DISCARDED | datagram::discard_code(DropReason::from_u32(rec.reason))
        }
    };
    let len = (rec.header_len as usize).min(rec.header.len());
    FlowSample {
        sequence,
        source_ifindex: rec.ingress_ifindex,
        sampling_rate: rec.sampling_rate,
        sample_pool,
        drops,
        input: rec.ingress_ifindex,
        output,
        // On the wire the frame had a 4-byte FCS, which the header lacks.
        frame_length: rec.frame_len + 4,
        stripped: 4,
        header: rec.header[..len].to_vec(),
    }
}

/// The kernel's counters of an interface (`/proc/net/dev`, this namespace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct KernelStats {
    rx_errors: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_errors: u64,
    tx_dropped: u64,
}

fn kernel_stats() -> HashMap<String, KernelStats> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    parse_proc_net_dev(&text)
}

fn parse_proc_net_dev(text: &str) -> HashMap<String, KernelStats> {
    let mut out = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if v.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            KernelStats {
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

/// (admin up, running, promiscuous) by interface name.
fn link_flags() -> HashMap<String, (bool, bool, bool)> {
    use nix::net::if_::InterfaceFlags as F;
    let mut out = HashMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let f = a.flags;
            out.insert(
                a.interface_name,
                (
                    f.contains(F::IFF_UP),
                    f.contains(F::IFF_RUNNING),
                    f.contains(F::IFF_PROMISC),
                ),
            );
        }
    }
    out
}

/// Generic interface counters: what arrived from what pop's data plane saw
/// (every packet on the port, its drops as discards), what left from the
/// kernel's counters.
fn if_counters(
    maps: &ExporterMaps,
    port: &Port,
    kernel: &HashMap<String, KernelStats>,
    flags: &HashMap<String, (bool, bool, bool)>,
) -> IfCounters {
    let (packets, bytes, dropped) = maps.iface(port.slot);
    let k = kernel.get(&port.name).copied().unwrap_or_default();
    let (up, running, promisc) = flags.get(&port.name).copied().unwrap_or_default();
    IfCounters {
        index: port.ifindex,
        if_type: 6,
        speed: 0,
        direction: 0,
        status: u32::from(up) | (u32::from(up && running) << 1),
        in_octets: bytes,
        in_ucast_pkts: packets as u32,
        in_multicast_pkts: UNKNOWN_32,
        in_broadcast_pkts: UNKNOWN_32,
        in_discards: dropped as u32,
        in_errors: k.rx_errors as u32,
        in_unknown_protos: UNKNOWN_32,
        out_octets: k.tx_bytes,
        out_ucast_pkts: k.tx_packets as u32,
        out_multicast_pkts: UNKNOWN_32,
        out_broadcast_pkts: UNKNOWN_32,
        out_discards: k.tx_dropped as u32,
        out_errors: k.tx_errors as u32,
        promiscuous: u32::from(promisc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_columns() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n  eth0: 1000 10 1 2 0 0 0 3 2000 20 4 5 0 0 0 0\n";
        let s = parse_proc_net_dev(text);
        assert_eq!(
            s["eth0"],
            KernelStats {
                rx_errors: 1,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errors: 4,
                tx_dropped: 5,
            }
        );
    }

    #[test]
    fn drops_are_discards_with_sflow_reason_codes() {
        let mut rec = PopSample {
            ingress_ifindex: 3,
            egress_ifindex: 0,
            action: Action::Drop as u32,
            reason: DropReason::Acl as u32,
            frame_len: 60,
            header_len: 60,
            sampling_rate: 10,
            skipped: 10,
            header: [0; pop_common::SAMPLE_HEADER_BYTES],
        };
        let f = flow_sample(&rec, 1, 100, 0);
        assert_eq!(f.output, 0x4000_0000 | 258);
        assert_eq!((f.frame_length, f.stripped, f.header.len()), (64, 4, 60));
        rec.action = Action::Redirect as u32;
        rec.egress_ifindex = 5;
        assert_eq!(flow_sample(&rec, 1, 100, 0).output, 5);
        rec.action = Action::Pass as u32;
        assert_eq!(flow_sample(&rec, 1, 100, 0).output, 0x3FFF_FFFF);
    }
}
