//! popd's side of the API: a Unix socket (mode 0660) speaking one JSON
//! [`Request`] per line and answering one JSON [`Response`] per line.
//!
//! Only root and the socket's group may connect: popd runs as root, and with
//! `--socket-group GROUP` hands the socket to that group (the Debian package's
//! `pop`), so its members can use popctl without being root.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use super::protocol::{CaptureRequest, Request, Response};
use crate::capture::{Armed, CaptureError};

/// What a request asks popd to do after answering.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Keep running.
    Continue,
    /// Exit, removing the data plane if `detach`.
    Shutdown {
        /// Remove XDP and pins.
        detach: bool,
    },
}

/// What the server serves: popd's controller. The server holds it behind a
/// lock and calls it on a blocking thread, one request at a time.
pub trait Service: Send + 'static {
    /// Why a request was refused; its text is the answer's `message`.
    type Error: std::fmt::Display + Send + 'static;
    /// Answers one request (a capture goes to [`Service::arm_capture`]).
    fn handle(&mut self, req: Request) -> (Result<serde_json::Value, Self::Error>, After);
    /// Checks a capture request and arms the data plane's filter.
    fn arm_capture(&mut self, req: &CaptureRequest) -> Result<Armed, CaptureError>;
    /// Disarms the capture.
    fn disarm_capture(&mut self);
}

/// Binds the socket, replacing a stale one left by a crashed popd; refuses to
/// steal the socket of a popd that is still running.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    bind_for_group(path, None)
}

/// Why `--socket-group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No group has that name.
    #[error("socket group {0}: no such group")]
    NoSuchGroup(String),
    /// The group database could not be read.
    #[error("socket group {name}: {source}")]
    Lookup {
        /// The name as given.
        name: String,
        /// The cause.
        source: nix::Error,
    },
}

/// A group by name, for `--socket-group`.
pub fn group_id(name: &str) -> Result<u32, GroupError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(GroupError::NoSuchGroup(name.to_string())),
        Err(source) => Err(GroupError::Lookup {
            name: name.to_string(),
            source,
        }),
    }
}

/// [`bind`], then gives the socket to group `gid` (mode 0660 either way).
pub fn bind_for_group(path: &Path, gid: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: another popd is running", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves requests until a `shutdown` arrives; then records whether to detach
/// and wakes `stop`.
pub async fn serve<S: Service>(
    listener: UnixListener,
    ctl: Arc<Mutex<S>>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    detach: Arc<Mutex<bool>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctl = ctl.clone();
        let changed = changed.clone();
        let stop = stop.clone();
        let detach = detach.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ctl, changed, stop, detach).await {
                tracing::debug!("api connection: {e}");
            }
        });
    }
}

async fn connection<S: Service>(
    stream: UnixStream,
    ctl: Arc<Mutex<S>>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    detach: Arc<Mutex<bool>>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        // A request can be a whole config (tens of MB): read in the line's
        // own buffer, which the request then owns.
        let parsed = super::request_line::parse_request(line);
        let (resp, after) = match parsed {
            Err(e) => (
                Response::Error {
                    message: format!("bad request: {e}"),
                },
                After::Continue,
            ),
            Ok(Request::Capture(req)) => {
                return capture(req, ctl, lines, w).await;
            }
            Ok(req) => {
                let mutates = !matches!(
                    req,
                    Request::Status
                        | Request::RouteShow { .. }
                        | Request::RouteGet { .. }
                        | Request::CustomerShow
                        | Request::AclShow
                        | Request::Stats { .. }
                        | Request::Export
                        | Request::Trace(_)
                );
                let ctl = ctl.clone();
                let (reply, after) = tokio::task::spawn_blocking(move || {
                    let mut c = ctl.lock().unwrap_or_else(|p| p.into_inner());
                    c.handle(req)
                })
                .await
                .map_err(std::io::Error::other)?;
                if mutates {
                    changed.notify_one();
                }
                let resp = match reply {
                    Ok(data) => Response::Ok { data },
                    Err(e) => Response::Error {
                        message: e.to_string(),
                    },
                };
                (resp, after)
            }
        };
        let mut out = serde_json::to_vec(&resp).expect("response serialises");
        out.push(b'\n');
        w.write_all(&out).await?;
        w.flush().await?;
        if let After::Shutdown { detach: d } = after {
            *detach.lock().unwrap_or_else(|p| p.into_inner()) = d;
            stop.notify_one();
            return Ok(());
        }
    }
    Ok(())
}

/// `popctl capture`: arms the filter, answers with [`CaptureStart`], then
/// streams one [`CapturedPacket`] line per packet until the client goes away
/// or has its count; the filter is disarmed whatever ends the stream.
///
/// [`CaptureStart`]: super::protocol::CaptureStart
/// [`CapturedPacket`]: super::protocol::CapturedPacket
async fn capture<S: Service>(
    req: super::protocol::CaptureRequest,
    ctl: Arc<Mutex<S>>,
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    mut w: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = ctl.clone();
    let r = req.clone();
    let armed = tokio::task::spawn_blocking(move || {
        c.lock().unwrap_or_else(|p| p.into_inner()).arm_capture(&r)
    })
    .await
    .map_err(std::io::Error::other)?;
    let armed = match armed {
        Ok(a) => a,
        Err(e) => {
            let message = e.to_string();
            let mut out = serde_json::to_vec(&Response::Error { message }).expect("serialises");
            out.push(b'\n');
            return w.write_all(&out).await;
        }
    };
    // Disarms on every way out of this function.
    struct Disarm<S: Service>(Arc<Mutex<S>>, Arc<AtomicBool>);
    impl<S: Service> Drop for Disarm<S> {
        fn drop(&mut self) {
            self.1.store(true, Ordering::Relaxed);
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .disarm_capture();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _disarm = Disarm(ctl.clone(), stop.clone());
    let start = Response::Ok {
        data: serde_json::to_value(&armed.start).expect("serialises"),
    };
    let mut out = serde_json::to_vec(&start).expect("serialises");
    out.push(b'\n');
    w.write_all(&out).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let reader = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || crate::capture::read_ring(armed, tx, stop)
    });
    let mut sent = 0u64;
    let result = loop {
        tokio::select! {
            packet = rx.recv() => {
                let Some(packet) = packet else { break Ok(()) };
                let mut out = serde_json::to_vec(&packet).expect("serialises");
                out.push(b'\n');
                if let Err(e) = w.write_all(&out).await {
                    break Err(e);
                }
                sent += 1;
                if req.count.is_some_and(|n| sent >= n) {
                    break Ok(());
                }
            }
            line = lines.next_line() => {
                // The client hung up (or sent something: a capture takes no more requests).
                if !matches!(line, Ok(Some(_))) {
                    break Ok(());
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = reader.await;
    let _ = w.shutdown().await;
    tracing::info!(packets = sent, "capture ended");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn the_socket_goes_to_the_socket_group_with_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popd.sock");
        let gid = group_id("nogroup").unwrap();
        let _listener = bind_for_group(&path, Some(gid)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.mode() & 0o7777, 0o660);
    }

    #[test]
    fn an_unknown_socket_group_is_named() {
        assert_eq!(
            group_id("no-such-pop-group").unwrap_err().to_string(),
            "socket group no-such-pop-group: no such group"
        );
    }
}
