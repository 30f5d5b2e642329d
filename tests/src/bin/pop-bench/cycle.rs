//! The test_run cost driver: `xdp_cycle` in bench.bpf.c.
//!
//! A test_run that repeats one frame keeps every lookup in cache, so a
//! last-lookup cache would look free. `xdp_cycle` instead overwrites the
//! frame's first 64 bytes (Ethernet, IP and UDP headers) with the next of up
//! to 65,536 headers before each run, then tail calls the program under test.
//! The headers carry addresses drawn at random from the tables. The
//! references (`xdp_pass`, `xdp_redirect_min`) run behind the same driver, so
//! the copy and the tail call cost every case the same; restoring the headers
//! also undoes what the previous run rewrote (MACs, TTL, checksum).
use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, DevMap, MapData, PerCpuArray, PerCpuValues, ProgramArray};
use aya::programs::{ProgramFd, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use pop_tests::testrun::{Harness, Program};

/// Bytes of each header the driver restores (bench.bpf.c CYCLE_HEADER_LEN).
pub const HEADER_LEN: usize = 64;
/// Most headers one cycle holds (bench.bpf.c CYCLE_MAX_FRAMES).
pub const MAX_FRAMES: usize = 65_536;

/// One header as the driver's map holds it.
#[repr(C)]
#[derive(Clone, Copy)]
struct CycleHeader([u8; HEADER_LEN]);
// SAFETY: plain bytes, no padding.
unsafe impl aya::Pod for CycleHeader {}

/// xdp_redirect_min's next hop.
#[repr(C)]
#[derive(Clone, Copy)]
struct MinRoute {
    dmac: [u8; 6],
    smac: [u8; 6],
    ifindex: u32,
}
// SAFETY: repr(C), 16 bytes, no padding.
unsafe impl aya::Pod for MinRoute {}

/// The program a measurement runs behind the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The XDP_PASS reference.
    Pass,
    /// The minimal router: rewrite MACs, redirect.
    RedirectMin,
    /// pop's data plane.
    Pop,
    /// Only the two fib4 lookups of the header (`xdp_fib4_loads`).
    Fib4Loads,
    /// Another data-plane object on the same maps (`add_other`), by the
    /// order they were added.
    Other(usize),
}

/// The loaded driver and minimal router.
pub struct Cycler {
    bench: Ebpf,
    /// fib4_test.bpf.o on pop's fib4 maps, for `xdp_fib4_loads`.
    fib4: Ebpf,
    frame_len: usize,
    others: Vec<ProgramFd>,
}

/// `struct xdp_md` for ctx_in: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(frame_len: usize, ingress: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
    ctx
}

impl Cycler {
    /// Loads `xdp_cycle`, `xdp_redirect_min` (sending to `egress_ifindex`
    /// with these MACs) and `xdp_fib4_loads` (fib4_test.bpf.o, on the fib4
    /// maps pinned in `pin_dir`).
    pub fn load(
        egress_ifindex: u32,
        dmac: [u8; 6],
        smac: [u8; 6],
        pin_dir: &std::path::Path,
    ) -> Result<Self> {
        let mut bench = EbpfLoader::new()
            .load(pop_ebpf::bench_object())
            .context("loading bench.bpf.o")?;
        // fib4_test.bpf.o's fib4 maps are pinned by name: with pop's pin
        // directory, xdp_fib4_loads reads pop's tables.
        let mut fib4 = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(pop_ebpf::fib4_test_object())
            .context("loading fib4_test.bpf.o")?;
        let loads: &mut Xdp = fib4
            .program_mut("xdp_fib4_loads")
            .ok_or_else(|| anyhow!("xdp_fib4_loads not in fib4_test.bpf.o"))?
            .try_into()?;
        loads.load().context("loading xdp_fib4_loads")?;
        for name in ["xdp_cycle", "xdp_redirect_min"] {
            let prog: &mut Xdp = bench
                .program_mut(name)
                .ok_or_else(|| anyhow!("{name} not in bench.bpf.o"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let mut route: Array<_, MinRoute> = Array::try_from(
            bench
                .map_mut("min_route")
                .ok_or_else(|| anyhow!("no min_route"))?,
        )?;
        route.set(
            0,
            MinRoute {
                dmac,
                smac,
                ifindex: egress_ifindex,
            },
            0,
        )?;
        let mut ports: DevMap<_> = DevMap::try_from(
            bench
                .map_mut("min_ports")
                .ok_or_else(|| anyhow!("no min_ports"))?,
        )?;
        ports.set(0, egress_ifindex, None, 0)?;
        Ok(Cycler {
            bench,
            fib4,
            frame_len: HEADER_LEN,
            others: Vec::new(),
        })
    }

    /// The headers to cycle through; every frame is `frame_len` bytes (the
    /// header, then zeros).
    pub fn set_frames(&mut self, headers: &[[u8; HEADER_LEN]], frame_len: usize) -> Result<()> {
        if headers.is_empty() || headers.len() > MAX_FRAMES {
            bail!(
                "{} headers: the driver takes 1..={MAX_FRAMES}",
                headers.len()
            );
        }
        if frame_len < HEADER_LEN {
            bail!("frames of {frame_len} bytes: at least {HEADER_LEN}");
        }
        let mut frames: Array<_, CycleHeader> = Array::try_from(
            self.bench
                .map_mut("cycle_frames")
                .ok_or_else(|| anyhow!("no cycle_frames"))?,
        )?;
        for (i, h) in headers.iter().enumerate() {
            frames.set(i as u32, CycleHeader(*h), 0)?;
        }
        let mut count: Array<_, u32> = Array::try_from(
            self.bench
                .map_mut("cycle_count")
                .ok_or_else(|| anyhow!("no cycle_count"))?,
        )?;
        count.set(0, headers.len() as u32, 0)?;
        let mut cursor: PerCpuArray<_, u32> = PerCpuArray::try_from(
            self.bench
                .map_mut("cycle_cursor")
                .ok_or_else(|| anyhow!("no cycle_cursor"))?,
        )?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        cursor.set(0, PerCpuValues::try_from(vec![0u32; cpus])?, 0)?;
        self.frame_len = frame_len;
        Ok(())
    }

    fn xdp(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .bench
            .program(name)
            .ok_or_else(|| anyhow!("{name} not in bench.bpf.o"))?
            .try_into()?)
    }

    fn set_target(&mut self, fd: &ProgramFd) -> Result<()> {
        let mut targets: ProgramArray<&mut MapData> = ProgramArray::try_from(
            self.bench
                .map_mut("cycle_target")
                .ok_or_else(|| anyhow!("no cycle_target"))?,
        )?;
        targets.set(0, fd, 0)?;
        Ok(())
    }

    fn point_at(&mut self, h: &Harness, target: Target) -> Result<()> {
        let fd = match target {
            Target::Pass => h.xdp(Program::Pass)?.fd()?.try_clone()?,
            Target::Pop => h.xdp(Program::Pop)?.fd()?.try_clone()?,
            Target::RedirectMin => self.xdp("xdp_redirect_min")?.fd()?.try_clone()?,
            Target::Fib4Loads => {
                let prog: &Xdp = self
                    .fib4
                    .program("xdp_fib4_loads")
                    .ok_or_else(|| anyhow!("xdp_fib4_loads not in fib4_test.bpf.o"))?
                    .try_into()?;
                prog.fd()?.try_clone()?
            }
            Target::Other(i) => self
                .others
                .get(i)
                .ok_or_else(|| anyhow!("no data-plane object {i} besides pop's"))?
                .try_clone()?,
        };
        self.set_target(&fd)
    }

    fn run(&self, ingress: u32, repeat: u32) -> Result<(u32, f64)> {
        let frame = vec![0u8; self.frame_len];
        let ctx = xdp_md(self.frame_len, ingress);
        let mut out = vec![0u8; self.frame_len + 256];
        let prog = self.xdp("xdp_cycle")?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }

    /// Runs `target` behind the driver on each header once and returns the XDP
    /// action every one of them got, or an error naming the first header that
    /// got another (the tables or the generated headers are wrong).
    pub fn check_actions(
        &mut self,
        h: &Harness,
        target: Target,
        ingress: u32,
        frames: usize,
    ) -> Result<u32> {
        self.point_at(h, target)?;
        let mut first = None;
        for i in 0..frames {
            let (action, _) = self.run(ingress, 1)?;
            match first {
                None => first = Some(action),
                Some(a) if a != action => {
                    bail!("{target:?}: header {i} got XDP action {action}, header 0 got {a}")
                }
                _ => {}
            }
        }
        first.ok_or_else(|| anyhow!("no headers"))
    }

    /// Adds another program (`fd`): a further data-plane object of an A/B
    /// run. `ns_per_packet`/`check_actions` with `Target::Other(i)` run the
    /// i-th added.
    pub fn add_other(&mut self, fd: ProgramFd) {
        self.others.push(fd);
    }

    /// Mean ns per run of `target` over `runs` runs behind the driver.
    pub fn ns_per_packet(
        &mut self,
        h: &Harness,
        target: Target,
        ingress: u32,
        runs: u32,
    ) -> Result<f64> {
        self.point_at(h, target)?;
        let (_, ns) = self.run(ingress, runs.max(1))?;
        Ok(ns)
    }
}
