//! `popctl capture`: popd arms a filter in the data plane (map
//! `observe_config`), which copies each matching packet, as the pipeline left
//! it and with its verdict, to the ring buffer `capture_ring`. popd streams
//! the packets to popctl over the API socket (so only root and the socket's
//! group may capture), and disarms the filter when popctl disconnects or has
//! its `--count`. popctl writes them as pcapng ([`pcapng`]).
//!
//! The data plane bounds the capture: per CPU at most [`RATE_PPS_PER_CPU`]
//! packets a second (bursts of [`BURST_PACKETS`]); packets over it are counted
//! (`observe_stats`) and not copied, so a capture cannot hurt forwarding.
pub mod pcapng;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aya::maps::{Map, MapData, RingBuf};
use pop_common::{
    maps as names, Action, DropReason, PassReason, PopCapture, PopObserveConfig, CAPTURE_BYTES,
    CAPTURE_CUSTOMER, CAPTURE_DROPS, CAPTURE_DROP_REASON, CAPTURE_IFACE, CAPTURE_ON,
};

use crate::api::protocol::{CaptureRequest, CaptureStart, CapturedPacket};
use crate::config::model::Config;
use crate::dataplane::observe::ObserveMaps;

/// Captured packets per second and CPU, at most.
pub const RATE_PPS_PER_CPU: u64 = 2000;
/// Packets a CPU may capture at once above the rate.
pub const BURST_PACKETS: u64 = 128;

/// Why a capture cannot be armed; each names the option and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `--iface` is not in the desired state's interfaces.
    #[error("capture: --iface {0}: not an interface of pop (see popctl status)")]
    NotPopInterface(String),
    /// `--iface` is configured but the device is gone.
    #[error("capture: --iface {0}: no such device")]
    NoDevice(String),
    /// `--customer` does not exist.
    #[error("capture: --customer {0}: no such customer")]
    NoCustomer(String),
    /// `--drop REASON` is not a drop reason.
    #[error("capture: --drop {reason}: not a drop reason (one of {all})")]
    NotDropReason {
        /// As given.
        reason: String,
        /// The reasons there are.
        all: String,
    },
    /// `--snaplen` out of range.
    #[error("capture: --snaplen {0} out of range 1-{CAPTURE_BYTES}")]
    Snaplen(u32),
    /// The data plane was removed (shutdown in progress).
    #[error("capture: the data plane is not loaded")]
    NoDataplane,
    /// The pinned data plane has no capture maps.
    #[error("capture: unavailable (the data plane has no capture maps)")]
    Unavailable,
    /// Another capture is armed.
    #[error("capture: another capture is running (one at a time)")]
    Busy,
    /// A map could not be opened or written.
    #[error("capture: {0}")]
    Map(String),
}

/// An armed capture: what popd streams from.
pub struct Armed {
    /// The first answer.
    pub start: CaptureStart,
    /// ifindex → interface name.
    pub names: HashMap<u32, String>,
    ring: RingBuf<MapData>,
}

fn ring(dir: &Path) -> Result<RingBuf<MapData>, CaptureError> {
    let path = dir.join(names::CAPTURE_RING);
    let data = MapData::from_pin(&path)
        .map_err(|e| CaptureError::Map(format!("map {}: {e}", path.display())))?;
    let map = Map::from_map_data(data).map_err(|e| CaptureError::Map(e.to_string()))?;
    RingBuf::try_from(map).map_err(|e| CaptureError::Map(e.to_string()))
}

/// What arming a capture needs of popd's state.
pub struct Target<'a> {
    /// The desired state.
    pub config: &'a Config,
    /// Customer ids by name.
    pub customer_ids: &'a std::collections::BTreeMap<String, u32>,
    /// The kernel's ifindex of an interface, if it exists.
    pub ifindex: &'a dyn Fn(&str) -> Option<u32>,
    /// Where the data plane's maps are pinned (`None`: it was removed).
    pub maps_dir: Option<std::path::PathBuf>,
    /// The sampling and capture settings map, if the data plane has it.
    pub observe: Option<&'a mut ObserveMaps>,
}

/// Checks the request against the desired state and arms the filter. One
/// capture at a time.
pub fn arm(target: Target<'_>, req: &CaptureRequest) -> Result<Armed, CaptureError> {
    let cfg = target.config;
    let mut filter = PopObserveConfig {
        capture: CAPTURE_ON,
        ..Default::default()
    };
    if let Some(iface) = &req.iface {
        if !cfg.interfaces.iter().any(|i| &i.name == iface) {
            return Err(CaptureError::NotPopInterface(iface.clone()));
        }
        filter.capture |= CAPTURE_IFACE;
        filter.capture_ifindex =
            (target.ifindex)(iface).ok_or_else(|| CaptureError::NoDevice(iface.clone()))?;
    }
    if let Some(name) = &req.customer {
        let id = target
            .customer_ids
            .get(name)
            .copied()
            .ok_or_else(|| CaptureError::NoCustomer(name.clone()))?;
        filter.capture |= CAPTURE_CUSTOMER;
        filter.capture_customer = id;
    }
    if req.drops {
        filter.capture |= CAPTURE_DROPS;
    }
    if let Some(reason) = &req.drop_reason {
        let r = DropReason::ALL
            .iter()
            .find(|r| r.label() == reason)
            .ok_or_else(|| CaptureError::NotDropReason {
                reason: reason.clone(),
                all: DropReason::ALL
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        filter.capture |= CAPTURE_DROPS | CAPTURE_DROP_REASON;
        filter.capture_reason = *r as u32;
    }
    let snaplen = req.snaplen.unwrap_or(CAPTURE_BYTES as u32);
    if snaplen == 0 || snaplen as usize > CAPTURE_BYTES {
        return Err(CaptureError::Snaplen(snaplen));
    }
    filter.capture_snaplen = snaplen;
    filter.capture_interval_ns = 1_000_000_000 / RATE_PPS_PER_CPU;
    filter.capture_burst_ns = filter.capture_interval_ns * BURST_PACKETS;
    let interfaces: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let names = interfaces
        .iter()
        .filter_map(|n| Some(((target.ifindex)(n)?, n.clone())))
        .collect();
    let dir = target.maps_dir.ok_or(CaptureError::NoDataplane)?;
    let observe = target.observe.ok_or(CaptureError::Unavailable)?;
    if observe.capture_armed() {
        return Err(CaptureError::Busy);
    }
    let mut ring = ring(&dir)?;
    // What an earlier capture left unread.
    while ring.next().is_some() {}
    observe
        .set_capture(Some(filter))
        .map_err(|e| CaptureError::Map(e.to_string()))?;
    tracing::info!(?req, "capture armed");
    Ok(Armed {
        start: CaptureStart {
            interfaces,
            snaplen,
        },
        names,
        ring,
    })
}

/// Disarms the capture.
pub fn disarm(observe: Option<&mut ObserveMaps>) {
    if let Some(o) = observe {
        match o.set_capture(None) {
            Ok(()) => tracing::info!("capture disarmed"),
            Err(e) => tracing::error!("capture: disarming: {e}"),
        }
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
fn realtime_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Reads the ring until `stop`, sending each packet to `tx`. Runs on a
/// thread of its own (it blocks in poll).
pub fn read_ring(
    mut armed: Armed,
    tx: tokio::sync::mpsc::Sender<CapturedPacket>,
    stop: Arc<AtomicBool>,
) {
    let offset = realtime_offset_ns();
    let fd = armed.ring.as_raw_fd();
    let name = |names: &HashMap<u32, String>, i: u32| {
        names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"))
    };
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        while let Some(item) = armed.ring.next() {
            if item.len() < std::mem::size_of::<PopCapture>() {
                continue;
            }
            // SAFETY: the record is a struct pop_capture (checked length).
            let rec: PopCapture = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let action = Action::from_u32(rec.action).unwrap_or(Action::Drop);
            let reason = match action {
                Action::Drop => DropReason::from_u32(rec.reason).map(|r| r.label().to_string()),
                Action::Pass => PassReason::from_u32(rec.reason).map(|r| r.label().to_string()),
                _ => None,
            };
            let len = (rec.capture_len as usize).min(rec.data.len());
            let packet = CapturedPacket {
                ts_ns: (rec.timestamp_ns as i128 + offset).max(0) as u64,
                in_iface: name(&armed.names, rec.ingress_ifindex),
                out_iface: matches!(action, Action::Redirect | Action::Tx)
                    .then(|| name(&armed.names, rec.egress_ifindex)),
                action: action.label().to_string(),
                reason,
                len: rec.frame_len,
                data: hex(&rec.data[..len]),
            };
            if tx.blocking_send(packet).is_err() {
                return;
            }
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of lower- or upper-case hex text.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::hex(&bytes), "0001abff");
        assert_eq!(super::unhex("0001ABff").unwrap(), bytes);
        assert!(super::unhex("abc").is_none());
        assert!(super::unhex("zz").is_none());
    }
}
