//! The XDP data plane as popd sees it: load or adopt the program, attach it to
//! interfaces, pin everything under `--bpffs`, and typed access to every map.
//!
//! Layout under the bpffs directory (default `/sys/fs/bpf/pop`):
//! ```text
//! prog                       the pop_xdp program
//! prog_trace                 the pop_trace program (`popctl trace`, never attached)
//! build/<digest>             the pop_xdp program again: marks which build is pinned
//! next/{prog,prog_trace,maps/}  another build staged during an upgrade
//! maps/<name>                every map of pop_common::maps::ALL
//! links/native/<ifname>      XDP links, one per attached interface,
//! links/generic/<ifname>     in the directory of their attach mode
//! ```
//! A restarted popd finds `prog` and adopts it with its maps and links: nothing
//! is detached or reloaded, so forwarding never stops. A popd of
//! another build stages its own data plane under `next/` and swaps the links to
//! it with bpf_link_update ([`Dataplane::finish_upgrade`]): also without a stop.
pub mod acl;
pub mod acl_hits;
pub mod addr4;
pub mod addr6;
pub mod counter_reader;
pub mod counters;
pub mod fib4;
pub mod fib6;
pub mod ifaces;
mod link;
pub mod maps;
pub mod observe;
pub mod police;
mod readers;
pub mod route4;
pub mod route6;
pub mod route_records;
pub mod route_writer;

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use aya_obj::programs::XdpAttachType;
use thiserror::Error;

pub use maps::Maps;
pub use readers::wait_for_readers;

/// Errors of the data plane layer.
#[derive(Debug, Error)]
pub enum DataplaneError {
    /// bpffs is missing and could not be mounted.
    #[error("bpffs: cannot mount at /sys/fs/bpf: {0}")]
    Mount(io::Error),
    /// A filesystem operation on the pin directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Loading the object or program failed (verifier log included).
    #[error("loading the XDP program: {0}")]
    Load(String),
    /// Attaching to an interface failed.
    #[error("interface {iface}: cannot attach XDP in {mode} mode: {reason}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Requested mode.
        mode: &'static str,
        /// Kernel's answer.
        reason: String,
    },
    /// A map has no room for another entry.
    #[error("map {map}: full ({max_entries} entries)")]
    MapFull {
        /// Map name.
        map: &'static str,
        /// Its capacity.
        max_entries: u32,
    },
    /// A map operation failed.
    #[error("map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A copy of the ACL maps that cannot be written or activated.
    #[error("acl copy {copy}: {reason}")]
    AclCopy {
        /// The copy (0 or 1).
        copy: u32,
        /// Why.
        reason: String,
    },
    /// A compiled ACL larger than its maps.
    #[error("acl: {count} {what} exceed the maximum of {max}")]
    AclFull {
        /// "rules", "tree nodes" or "leaf blocks".
        what: &'static str,
        /// How many.
        count: usize,
        /// The maps' capacity.
        max: u32,
    },
    /// A customer id outside the per-customer maps.
    #[error("customer id {id}: must be between 1 and {max}")]
    CustomerId {
        /// The id.
        id: u32,
        /// The largest id.
        max: u32,
    },
    /// A policer setting beyond what the bucket arithmetic holds.
    #[error("{field} {value}: must be between 1 and {max}")]
    Policer {
        /// "rate_bps" or "burst_bytes".
        field: &'static str,
        /// The value given.
        value: u64,
        /// The largest it may be.
        max: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
    move |source| DataplaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How an interface ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

impl AttachMode {
    /// Label used in metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
    fn dir(self) -> &'static str {
        self.label()
    }
}

/// Requested attach mode (config `xdp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedMode {
    /// Native, else generic with a warning.
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// The loaded (or adopted) program with its pinned maps.
pub struct Dataplane {
    root: PathBuf,
    program: Xdp,
    trace: Xdp,
    program_id: u32,
    adopted: bool,
    /// [`link::build_id`] of the object this popd loads.
    build: String,
    /// `root/next` while this build is staged beside another one's.
    upgrade: Option<PathBuf>,
    /// Whether [`Dataplane::open`] created `root` (so [`Dataplane::discard`]
    /// removes it).
    created_root: bool,
    /// Interfaces this process attached (their links are its own).
    created_links: Vec<String>,
    /// Typed handles on every map.
    pub maps: Maps,
}

/// The data-plane object to load: pop-ebpf's, or for upgrade tests the ELF
/// file named by `POP_DATAPLANE_OBJECT` (it must hold pop's programs and maps).
fn object_bytes() -> Result<Object, DataplaneError> {
    match std::env::var_os("POP_DATAPLANE_OBJECT") {
        None => Ok(Object::Builtin(pop_ebpf::pop_object())),
        Some(path) => {
            let bytes = fs::read(&path).map_err(io_err(Path::new(&path)))?;
            tracing::warn!(object = %Path::new(&path).display(), "loading the data plane from POP_DATAPLANE_OBJECT");
            // ELF parsing wants the bytes 8-aligned: keep them in u64s.
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            // SAFETY: u64s are plain bytes; the slice covers exactly the Vec.
            let view = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
            };
            view[..bytes.len()].copy_from_slice(&bytes);
            Ok(Object::File(words, bytes.len()))
        }
    }
}

enum Object {
    Builtin(&'static [u8]),
    File(Vec<u64>, usize),
}

impl Object {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Object::Builtin(b) => b,
            // SAFETY: the Vec holds at least `len` initialised bytes.
            Object::File(words, len) => unsafe {
                std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len)
            },
        }
    }
}

/// Removes the pins under `dir` and the directories, if `dir` exists. Pins
/// are files to the VFS; unpinning drops only the pin's reference.
fn remove_pins(dir: &Path) -> Result<(), DataplaneError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted (a fresh machine has none).
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let target = CString::new("/sys/fs/bpf").expect("static path");
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(target.as_ptr(), &mut st) };
    if rc == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    fs::create_dir_all("/sys/fs/bpf").map_err(DataplaneError::Mount)?;
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| DataplaneError::Mount(io::Error::from(e)))
}

impl Dataplane {
    /// Adopts the program and maps pinned under `root` when they come from this
    /// build; loads and pins them when there are none; and when a data plane of
    /// another build is running, loads this build's program with fresh maps
    /// under `root/next` beside it (an *upgrade*: the old program keeps
    /// forwarding until [`Dataplane::finish_upgrade`] swaps the links).
    ///
    /// When it fails, what it created under `root` is removed again; a data
    /// plane pinned before is left as it was.
    pub fn open(root: &Path) -> Result<Self, DataplaneError> {
        ensure_bpffs()?;
        let created_root = !root.exists();
        let had_program = root.join("prog").exists();
        Self::open_pinned(root, created_root).inspect_err(|_| {
            if created_root {
                let _ = fs::remove_dir_all(root);
            } else if had_program {
                let _ = remove_pins(&root.join("next"));
            } else {
                for pin in ["prog", "prog_trace"] {
                    let _ = fs::remove_file(root.join(pin));
                }
                let _ = remove_pins(&root.join("maps"));
                let _ = remove_pins(&root.join("build"));
            }
        })
    }

    fn open_pinned(root: &Path, created_root: bool) -> Result<Self, DataplaneError> {
        let object = object_bytes()?;
        let build = link::build_id(object.as_bytes());
        let maps_dir = root.join("maps");
        let prog_pin = root.join("prog");
        let trace_pin = root.join("prog_trace");
        let build_pin = root.join("build").join(&build);
        let next = root.join("next");
        for d in [
            maps_dir.clone(),
            root.join("links").join(AttachMode::Native.dir()),
            root.join("links").join(AttachMode::Generic.dir()),
        ] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        // What an interrupted upgrade left.
        remove_pins(&next)?;
        let complete = prog_pin.exists()
            && trace_pin.exists()
            && pop_common::maps::ALL
                .iter()
                .all(|m| maps_dir.join(m).exists());
        let adopted = complete && build_pin.exists();
        let upgrade = !adopted && prog_pin.exists();
        let (load_maps, load_prog, load_trace) = if upgrade {
            tracing::info!(
                build,
                "the pinned data plane comes from another build: loading this one beside it"
            );
            (
                next.join("maps"),
                next.join("prog"),
                next.join("prog_trace"),
            )
        } else {
            (maps_dir.clone(), prog_pin.clone(), trace_pin.clone())
        };
        if !adopted {
            if !upgrade {
                // Nothing runs these (no program pin): start from empty maps.
                remove_pins(&maps_dir)?;
                remove_pins(&root.join("build"))?;
            }
            fs::create_dir_all(&load_maps).map_err(io_err(&load_maps))?;
            // Maps are declared LIBBPF_PIN_BY_NAME: aya pins them in load_maps.
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(&load_maps)
                .load(object.as_bytes())
                .map_err(|e| DataplaneError::Load(error_chain(&e)))?;
            for (name, pin) in [
                (pop_ebpf::PROGRAM_NAME, &load_prog),
                (pop_ebpf::TRACE_PROGRAM_NAME, &load_trace),
            ] {
                let prog: &mut Xdp = ebpf
                    .program_mut(name)
                    .ok_or_else(|| DataplaneError::Load(format!("program {name} not in object")))?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| {
                        DataplaneError::Load(e.to_string())
                    })?;
                prog.load()
                    .map_err(|e| DataplaneError::Load(format!("{name}: {}", error_chain(&e))))?;
                prog.pin(pin)
                    .map_err(|e| DataplaneError::Load(format!("pinning {}: {e}", pin.display())))?;
            }
        }
        // One path for every case: from the pins.
        let from_pin = |pin: &Path| {
            Xdp::from_pin(pin, XdpAttachType::Interface).map_err(|e| {
                DataplaneError::Load(format!("opening {}: {}", pin.display(), error_chain(&e)))
            })
        };
        let program = from_pin(&load_prog)?;
        let trace = from_pin(&load_trace)?;
        let program_id = program
            .info()
            .map_err(|e| DataplaneError::Load(e.to_string()))?
            .id();
        // Loaded just now (fresh, or staged for an upgrade): empty maps.
        let maps = Maps::open(&load_maps, !adopted)?;
        let mut dp = Self {
            root: root.to_path_buf(),
            program,
            trace,
            program_id,
            adopted,
            maps,
            build,
            upgrade: upgrade.then_some(next),
            created_root,
            created_links: Vec::new(),
        };
        if !upgrade {
            if !adopted {
                dp.pin_build()?;
            }
            // Links left running another program (an upgrade interrupted after
            // the swap) run this one from now on.
            dp.relink()?;
        }
        Ok(dp)
    }

    /// Whether this build's data plane is staged beside a running one of another
    /// build, waiting for [`Dataplane::finish_upgrade`].
    pub fn upgrading(&self) -> bool {
        self.upgrade.is_some()
    }

    /// Where the maps in use are pinned (`root/next/maps` while upgrading).
    pub fn maps_dir(&self) -> PathBuf {
        match &self.upgrade {
            Some(next) => next.join("maps"),
            None => self.root.join("maps"),
        }
    }

    /// Completes an upgrade once the new maps hold the desired state: swaps
    /// every link to the new program (BPF_LINK_UPDATE, atomic: each packet
    /// runs the old program on the old maps or the new one on the new), adds
    /// the old counters to the new ones, and replaces the old pins. Returns the
    /// old program's id; `None` when there was no upgrade.
    pub fn finish_upgrade(&mut self) -> Result<Option<u32>, DataplaneError> {
        let Some(next) = self.upgrade.clone() else {
            return Ok(None);
        };
        let old_id = Xdp::from_pin(self.root.join("prog"), XdpAttachType::Interface)
            .ok()
            .and_then(|p| p.info().ok())
            .map(|i| i.id());
        self.relink()?;
        // No packet still runs the old program once this returns.
        wait_for_readers();
        let old_maps = self.root.join("maps");
        self.maps.add_counters_from(&old_maps);
        if let Err(e) = acl_hits::carry_over_upgrade(&old_maps, &next.join("maps")) {
            tracing::warn!("ACL hit counts not carried over from the old data plane: {e}");
        }
        remove_pins(&old_maps)?;
        remove_pins(&self.root.join("build"))?;
        for pin in ["prog", "prog_trace"].map(|p| self.root.join(p)) {
            if pin.exists() {
                fs::remove_file(&pin).map_err(io_err(&pin))?;
            }
        }
        for name in ["maps", "prog", "prog_trace"] {
            let from = next.join(name);
            fs::rename(&from, self.root.join(name)).map_err(io_err(&from))?;
        }
        fs::remove_dir(&next).map_err(io_err(&next))?;
        self.upgrade = None;
        self.pin_build()?;
        Ok(old_id)
    }

    /// Pins the program as `root/build/<build id>`: the mark that the pinned
    /// data plane is this build's.
    fn pin_build(&mut self) -> Result<(), DataplaneError> {
        let dir = self.root.join("build");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let pin = dir.join(&self.build);
        self.program
            .pin(&pin)
            .map_err(|e| DataplaneError::Load(format!("pinning {}: {e}", pin.display())))
    }

    /// Points every pinned link that runs another program at this one.
    fn relink(&self) -> Result<(), DataplaneError> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog = self
            .program
            .fd()
            .map_err(|e| DataplaneError::Load(e.to_string()))?;
        let prog = prog.as_fd().as_raw_fd();
        for mode in [AttachMode::Native, AttachMode::Generic] {
            let dir = self.root.join("links").join(mode.dir());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let pin = entry.path();
                // A link whose interface is gone cannot be updated; it is
                // harmless, and removed when its interface leaves the config.
                let updated = link::obj_get(&pin).and_then(|link| {
                    if link::link_prog_id(&link)? == self.program_id {
                        return Ok(false);
                    }
                    link::link_update(&link, prog).map(|()| true)
                });
                match updated {
                    Ok(true) => tracing::info!(
                        link = %pin.display(),
                        program_id = self.program_id,
                        "link now runs this build's program"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(link = %pin.display(), "cannot update link: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Runs `frame`, arriving on `ingress_ifindex`, through the trace program:
    /// the live pipeline on the live maps that counts nothing and takes no
    /// policer tokens. Returns the XDP action and what the pipeline recorded.
    /// BPF_PROG_TEST_RUN resolves the ifindex in the calling thread's netns.
    pub fn trace(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(u32, pop_common::PopTrace), DataplaneError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        // Clear every CPU's record: the one the run writes is the one marked done.
        let cpus = self.maps.trace_out.get(&0, 0).map(|v| v.len()).unwrap_or(1);
        let zeros = aya::maps::PerCpuValues::try_from(vec![pop_common::PopTrace::default(); cpus])
            .map_err(|e| DataplaneError::Map {
                map: pop_common::maps::TRACE_OUT,
                reason: e.to_string(),
            })?;
        self.maps
            .trace_out
            .set(0, zeros, 0)
            .map_err(maps::map_err(pop_common::maps::TRACE_OUT))?;
        let mut out = vec![0u8; frame.len() + 256];
        use aya::programs::TestRun;
        let result = self
            .trace
            .test_run(aya::programs::TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| DataplaneError::Load(format!("trace run: {}", error_chain(&e))))?;
        let record = self
            .maps
            .trace_out
            .get(&0, 0)
            .map_err(maps::map_err(pop_common::maps::TRACE_OUT))?
            .iter()
            .find(|t| t.done == 1)
            .copied()
            .unwrap_or_default();
        Ok((result.return_value, record))
    }

    /// Kernel id of the program.
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Whether an already pinned program was adopted (restart) rather than loaded.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The bpffs directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn link_pin(&self, iface: &str, mode: AttachMode) -> PathBuf {
        self.root.join("links").join(mode.dir()).join(iface)
    }

    /// The mode of an existing pinned link for `iface`, if any.
    pub fn pinned_mode(&self, iface: &str) -> Option<AttachMode> {
        [AttachMode::Native, AttachMode::Generic]
            .into_iter()
            .find(|m| self.link_pin(iface, *m).exists())
    }

    /// Interfaces with a pinned link.
    pub fn pinned_interfaces(&self) -> Vec<String> {
        let mut out = Vec::new();
        for mode in [AttachMode::Native, AttachMode::Generic] {
            if let Ok(rd) = fs::read_dir(self.root.join("links").join(mode.dir())) {
                out.extend(
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        out.sort();
        out
    }

    /// Attaches to `iface` unless a pinned link exists. Returns the mode and
    /// whether a new attachment was made. `Auto` tries native first and falls back
    /// to generic with a warning.
    pub fn attach(
        &mut self,
        iface: &str,
        requested: RequestedMode,
    ) -> Result<(AttachMode, bool), DataplaneError> {
        if let Some(mode) = self.pinned_mode(iface) {
            return Ok((mode, false));
        }
        let tries: &[AttachMode] = match requested {
            RequestedMode::Auto => &[AttachMode::Native, AttachMode::Generic],
            RequestedMode::Native => &[AttachMode::Native],
            RequestedMode::Generic => &[AttachMode::Generic],
        };
        let mut last = String::new();
        for &mode in tries {
            let flags = match mode {
                AttachMode::Native => XdpMode::Driver,
                AttachMode::Generic => XdpMode::Skb,
            };
            match self.program.attach(iface, flags) {
                Ok(id) => {
                    let link = self
                        .program
                        .take_link(id)
                        .map_err(|e| self.attach_err(iface, mode, e.to_string()))?;
                    let fd_link: FdLink =
                        link.try_into()
                            .map_err(|e: aya::programs::links::LinkError| {
                                self.attach_err(iface, mode, format!("not a bpf_link: {e}"))
                            })?;
                    let pin = self.link_pin(iface, mode);
                    fd_link
                        .pin(&pin)
                        .map_err(|e| self.attach_err(iface, mode, format!("pinning link: {e}")))?;
                    self.created_links.push(iface.to_string());
                    if requested == RequestedMode::Auto && mode == AttachMode::Generic {
                        tracing::warn!(
                            iface,
                            reason = %last,
                            "native XDP unavailable, attached in generic mode (slower)"
                        );
                    }
                    return Ok((mode, true));
                }
                Err(e) => last = error_chain(&e),
            }
        }
        let mode = *tries.last().expect("non-empty");
        Err(self.attach_err(iface, mode, last))
    }

    fn attach_err(&self, iface: &str, mode: AttachMode, reason: String) -> DataplaneError {
        DataplaneError::Attach {
            iface: iface.to_string(),
            mode: mode.label(),
            reason,
        }
    }

    /// Detaches from `iface` (removes its pinned link). No-op when not attached.
    pub fn detach(&mut self, iface: &str) -> Result<(), DataplaneError> {
        self.created_links.retain(|n| n != iface);
        for mode in [AttachMode::Native, AttachMode::Generic] {
            let pin = self.link_pin(iface, mode);
            if pin.exists() {
                match PinnedLink::from_pin(&pin) {
                    // Unpinning and dropping the last fd detaches the link.
                    Ok(link) => drop(link.unpin().map_err(io_err(&pin))?),
                    Err(_) => fs::remove_file(&pin).map_err(io_err(&pin))?,
                }
            }
        }
        Ok(())
    }

    /// Undoes what this process did under `--bpffs`, for a start that failed:
    /// detaches the interfaces it attached, and removes the data plane it
    /// loaded with its pins and the directories it created. A data plane that
    /// was pinned before (adopted) is left as it was and keeps forwarding; of
    /// an upgrade, only the staged build under `next/` goes.
    pub fn discard(mut self) -> Result<(), DataplaneError> {
        for iface in std::mem::take(&mut self.created_links) {
            self.detach(&iface)?;
        }
        let root = self.root.clone();
        let loaded_fresh = !self.adopted && self.upgrade.is_none();
        let staged = self.upgrade.take();
        let created_root = self.created_root;
        // Closes the program and map fds.
        drop(self);
        if let Some(next) = staged {
            remove_pins(&next)?;
        }
        if loaded_fresh {
            for pin in ["prog", "prog_trace"].map(|p| root.join(p)) {
                if pin.exists() {
                    fs::remove_file(&pin).map_err(io_err(&pin))?;
                }
            }
            remove_pins(&root.join("maps"))?;
            remove_pins(&root.join("build"))?;
            // Directories left empty (open creates them); non-empty ones
            // hold links of others and stay.
            let links = root.join("links");
            for dir in [
                links.join(AttachMode::Native.dir()),
                links.join(AttachMode::Generic.dir()),
                links,
            ] {
                let _ = fs::remove_dir(&dir);
            }
            if created_root {
                let _ = fs::remove_dir(&root);
            }
        }
        Ok(())
    }

    /// Removes the whole data plane: every link, the program and map pins, and
    /// the directory. Forwarding stops.
    pub fn remove(mut self) -> Result<(), DataplaneError> {
        for iface in self.pinned_interfaces() {
            self.detach(&iface)?;
        }
        let root = self.root.clone();
        drop(self);
        let _ = fs::remove_dir_all(&root);
        if root.exists() {
            return Err(DataplaneError::Io {
                path: root,
                source: io::Error::other("could not remove pin directory"),
            });
        }
        Ok(())
    }
}

/// An error with its sources, on one line (verifier logs keep their lines).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
