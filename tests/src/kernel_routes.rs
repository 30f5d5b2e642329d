//! Writing routes into kernel table 100 on the lab's edge, the table popd
//! follows with `[kernel_routes]`, and a ping across the edge while it
//! changes: the end-to-end BGP test and pop-bench's route churn.
//!
//! - [`Writer`]: a raw route netlink socket in the edge namespace that sends
//!   RTM_NEWROUTE (create|replace) and RTM_DELROUTE for /24s in batches, each
//!   message acknowledged: as fast as the kernel takes updates.
//! - [`ip_batch`] with [`batch_v4`] / [`batch_v6`]: the same with `ip -batch`.
//! - [`start_ping`] / [`finish_ping`]: a ping from c1 across the edge.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use pop_lab::bgp::KERNEL_TABLE;
use pop_lab::topology::{C1, EDGE};
use pop_lab::{cmd, Lab, PingStats};

/// The gateway of every route written here (the upstream, on the edge's
/// eth0).
pub const GATEWAY: [u8; 4] = [192, 0, 2, 1];

/// A route netlink socket in the edge namespace.
pub struct Writer {
    fd: OwnedFd,
    /// eth0 of the edge.
    oif: u32,
    seq: u32,
    buf: Vec<u8>,
    rx: Vec<u8>,
}

fn nl_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    // Every value here is 4 bytes: already aligned.
}

impl Writer {
    /// The bytes queued since the last flush.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// A route netlink socket in the namespace `netns` (a path under
    /// /run/netns), with room for `batch` messages before a flush.
    pub fn open(netns: &Path, batch: usize) -> Result<Writer> {
        let netns = netns.to_path_buf();
        let (fd, oif) = thread::spawn(move || -> Result<(OwnedFd, u32)> {
            let f =
                std::fs::File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns {}", netns.display()))?;
            // SAFETY: plain socket(2); the fd is owned at once.
            let raw = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                )
            };
            if raw < 0 {
                bail!("netlink socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh, valid fd.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with a c_int value. Best effort: acks of one
            // batch fit the default buffer too.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            // SAFETY: a NUL-terminated literal.
            let oif = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            ensure!(oif != 0, "the edge has no eth0");
            Ok((fd, oif))
        })
        .join()
        .map_err(|_| anyhow!("writer thread panicked"))??;
        Ok(Writer {
            fd,
            oif,
            seq: 1,
            buf: Vec::with_capacity(batch * 64),
            rx: vec![0; 1 << 16],
        })
    }

    /// Queues an add (create or replace) of `dst`/24 via [`GATEWAY`] on eth0,
    /// or a delete of it, in [`KERNEL_TABLE`].
    pub fn push(&mut self, dst: [u8; 4], add: bool) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 16]); // nlmsghdr, filled below
        let (kind, flags) = if add {
            (
                libc::RTM_NEWROUTE,
                libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
            )
        } else {
            (libc::RTM_DELROUTE, libc::NLM_F_REQUEST | libc::NLM_F_ACK)
        };
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
        // type, flags; a delete matches on any protocol and type, like `ip route del`.
        let (protocol, scope, rtype) = if add {
            (
                libc::RTPROT_STATIC,
                libc::RT_SCOPE_UNIVERSE,
                libc::RTN_UNICAST,
            )
        } else {
            (0, libc::RT_SCOPE_NOWHERE, 0)
        };
        self.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            24,
            0,
            0,
            KERNEL_TABLE as u8,
            protocol,
            scope,
            rtype,
        ]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        nl_attr(&mut self.buf, libc::RTA_TABLE, &KERNEL_TABLE.to_ne_bytes());
        nl_attr(&mut self.buf, libc::RTA_DST, &dst);
        if add {
            nl_attr(&mut self.buf, libc::RTA_GATEWAY, &GATEWAY);
            nl_attr(&mut self.buf, libc::RTA_OIF, &self.oif.to_ne_bytes());
        }
        let len = (self.buf.len() - start) as u32;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let h = &mut self.buf[start..start + 16];
        h[0..4].copy_from_slice(&len.to_ne_bytes());
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
        h[8..12].copy_from_slice(&seq.to_ne_bytes());
    }

    /// Sends the queued messages and waits for every ack; fails on the first
    /// error the kernel returns.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut want = 0usize;
        let mut off = 0;
        while off < self.buf.len() {
            let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into()?) as usize;
            off += len;
            want += 1;
        }
        // SAFETY: sending an initialised buffer on an owned fd; the kernel's
        // address is all zeroes, the default for a connected netlink socket.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                self.buf.as_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            bail!("netlink send: {}", std::io::Error::last_os_error());
        }
        self.buf.clear();
        let mut acked = 0;
        while acked < want {
            // SAFETY: receiving into an owned buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                    0,
                )
            };
            if n < 0 {
                bail!("netlink recv: {}", std::io::Error::last_os_error());
            }
            let data = &self.rx[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into()?) as usize;
                let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into()?);
                ensure!(len >= 16, "netlink: short message");
                if kind == libc::NLMSG_ERROR as u16 {
                    let code = i32::from_ne_bytes(data[off + 16..off + 20].try_into()?);
                    ensure!(
                        code == 0,
                        "the kernel refused a route update: {}",
                        std::io::Error::from_raw_os_error(-code)
                    );
                    acked += 1;
                }
                off += (len + 3) & !3;
            }
        }
        Ok(())
    }
}

/// `ip -batch` in the edge namespace.
pub fn ip_batch(lab: &Lab, lines: &str) -> Result<()> {
    let file = tempfile::Builder::new().prefix("pop-ip-batch").tempfile()?;
    std::fs::write(file.path(), lines)?;
    lab.exec_ok(EDGE, &["ip", "-batch", &file.path().to_string_lossy()])?;
    Ok(())
}

/// Route lines for `ip -batch`: `verb` `n` /24s from `first` (an IPv4 u32)
/// on, via the upstream.
pub fn batch_v4(verb: &str, first: u32, n: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        let a = Ipv4Addr::from(first + (i << 8));
        let _ = writeln!(
            s,
            "route {verb} {a}/24 via {} dev eth0 table {KERNEL_TABLE}",
            Ipv4Addr::from(GATEWAY)
        );
    }
    s
}

/// Route lines for `ip -batch`: `verb` `count` IPv6 /48s from 2a01:: on, via
/// the upstream.
pub fn batch_v6(verb: &str, count: u32) -> String {
    let mut s = String::new();
    for i in 0..count {
        let _ = writeln!(
            s,
            "route {verb} 2a01:{:x}:{:x}::/48 via 2001:db8:ffff::1 dev eth0 table {KERNEL_TABLE}",
            i >> 16,
            i & 0xffff
        );
    }
    s
}

/// A ping from c1 to `dst` every `interval_s` seconds, `count` requests;
/// [`finish_ping`] collects it.
pub fn start_ping(lab: &Lab, dst: &str, interval_s: f64, count: u32) -> Result<Child> {
    let mut ping = lab.command(
        C1,
        &[
            "ping",
            "-n",
            "-q",
            "-i",
            &interval_s.to_string(),
            "-c",
            &count.to_string(),
            "-W",
            "1",
            dst,
        ],
    );
    ping.stdout(Stdio::piped()).stderr(Stdio::piped());
    ping.spawn().context("cannot start ping")
}

/// Waits for a ping [`start_ping`] started (`timeout` at most) and reads its
/// statistics.
pub fn finish_ping(ping: Child, timeout: Duration) -> Result<PingStats> {
    let out = cmd::wait_output_timeout(ping, timeout)?;
    PingStats::parse(&String::from_utf8_lossy(&out.stdout))
}
