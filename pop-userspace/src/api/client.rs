//! The client side of the popd API (used by popctl): one connection per call, one
//! JSON [`Request`] line out, one JSON [`Response`] line back.
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::protocol::{Request, Response};

/// How long a call may take before the client gives up. Long because an `apply`
/// of a million routes takes a while.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call to popd failed (not popd's own `Response::Error`).
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket cannot be connected to.
    #[error("cannot connect to popd at {}: {} ({hint})", .path.display(), os_message(.source))]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// What to check.
        hint: String,
    },
    /// Reading or writing the socket failed.
    #[error("talking to popd at {}: {}", .path.display(), os_message(.source))]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No answer in time.
    #[error("popd at {} did not answer within {} s", .path.display(), .timeout.as_secs())]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The limit that passed.
        timeout: Duration,
    },
    /// popd closed the connection without a response line.
    #[error("popd at {} closed the connection without answering", .path.display())]
    Closed {
        /// Socket path.
        path: PathBuf,
    },
    /// The response line is not a [`Response`].
    #[error("popd sent an invalid response: {0}")]
    BadResponse(String),
}

/// An OS error's text without Rust's " (os error N)" suffix.
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Why a connect was refused, naming the socket's group when it can be seen.
pub(crate) fn permission_hint(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let group = std::fs::metadata(socket)
        .ok()
        .and_then(|m| nix::unistd::Group::from_gid(m.gid().into()).ok().flatten())
        .map(|g| g.name);
    match group {
        Some(name) if name != "root" => format!(
            "only root and members of group {name} may use popd; \
             add this user to it (adduser USER {name}) and log in again"
        ),
        _ => "only root and members of popd's socket group (popd --socket-group) may use popd"
            .to_string(),
    }
}

/// Sends `req` to popd at `socket` and returns its response, waiting at most
/// [`DEFAULT_TIMEOUT`].
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    call_with_timeout(socket, req, DEFAULT_TIMEOUT)
}

/// [`call`] with an explicit timeout for each read and write.
pub fn call_with_timeout(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let path = socket.to_path_buf();
    let stream = UnixStream::connect(socket).map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => permission_hint(socket),
            _ => "is popd running?".to_string(),
        };
        ClientError::Connect {
            path: path.clone(),
            source,
            hint,
        }
    })?;
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
            path: path.clone(),
            timeout,
        },
        _ => ClientError::Io {
            path: path.clone(),
            source,
        },
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut line = serde_json::to_string(req).expect("Request always serializes");
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    (&stream).flush().map_err(io_err)?;

    let mut answer = String::new();
    let n = BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    if n == 0 {
        return Err(ClientError::Closed { path });
    }
    serde_json::from_str(answer.trim_end()).map_err(|e| ClientError::BadResponse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn missing_socket_names_path_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popd.sock");
        let err = call(&path, &Request::Status).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to popd at {}: No such file or directory (is popd running?)",
                path.display()
            )
        );
    }

    #[test]
    fn one_line_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream)
                .write_all(b"{\"status\":\"ok\",\"data\":{\"generation\":3}}\n")
                .unwrap();
            line
        });
        let resp = call(
            &path,
            &Request::RouteDel {
                prefix: "10.0.0.0/8".into(),
            },
        )
        .unwrap();
        assert_eq!(
            resp,
            Response::Ok {
                data: serde_json::json!({"generation": 3})
            }
        );
        assert_eq!(
            server.join().unwrap(),
            "{\"cmd\":\"route_del\",\"prefix\":\"10.0.0.0/8\"}\n"
        );
    }

    #[test]
    fn silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let err =
            call_with_timeout(&path, &Request::Status, Duration::from_millis(200)).unwrap_err();
        drop(listener);
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    }

    #[test]
    fn closed_connection_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
        });
        let err = call(&path, &Request::Status).unwrap_err();
        server.join().unwrap();
        assert!(
            err.to_string()
                .contains("closed the connection without answering"),
            "{err}"
        );
    }
}
