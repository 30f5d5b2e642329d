//! `popctl capture`: one connection to popd that stays open while packets
//! stream in; each becomes a pcapng packet block whose comment is its verdict.
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::api::client::ClientError;
use crate::api::protocol::{CaptureRequest, CaptureStart, CapturedPacket, Request, Response};
use crate::capture::pcapng;

/// The verdict as a packet comment: `drop acl; in eth1`,
/// `redirect; in eth1 out eth0`.
pub fn comment(p: &CapturedPacket) -> String {
    let mut text = p.action.clone();
    if let Some(r) = &p.reason {
        text.push(' ');
        text.push_str(r);
    }
    text.push_str("; in ");
    text.push_str(&p.in_iface);
    if let Some(o) = &p.out_iface {
        text.push_str(" out ");
        text.push_str(o);
    }
    text
}

/// Runs the capture, writing pcapng to `output` (`-`: `stdout`).
pub fn run(
    socket: &Path,
    req: &CaptureRequest,
    output: &str,
    stdout: &mut dyn Write,
) -> Result<(), CliError> {
    let path = socket.to_path_buf();
    let stream = UnixStream::connect(socket).map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => crate::api::client::permission_hint(socket),
            _ => "is popd running?".to_string(),
        };
        ClientError::Connect {
            path: path.clone(),
            source,
            hint,
        }
    })?;
    let io_err = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut line = serde_json::to_string(&Request::Capture(req.clone())).expect("serialises");
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut reader = BufReader::new(&stream);
    let mut first = String::new();
    if reader.read_line(&mut first).map_err(io_err)? == 0 {
        return Err(ClientError::Closed { path }.into());
    }
    let start: CaptureStart = match serde_json::from_str(first.trim_end())
        .map_err(|e| ClientError::BadResponse(e.to_string()))?
    {
        Response::Error { message } => return Err(CliError::Server(message)),
        Response::Ok { data } => serde_json::from_value(data).map_err(|e| CliError::BadData {
            what: "capture",
            error: e.to_string(),
        })?,
    };
    let mut file;
    let out: &mut dyn Write = if output == "-" {
        stdout
    } else {
        file = std::fs::File::create(output).map_err(|source| CliError::WriteFile {
            path: PathBuf::from(output),
            source,
        })?;
        &mut file
    };
    let write_err = |source: io::Error| {
        if output == "-" {
            CliError::Output(source)
        } else {
            CliError::WriteFile {
                path: PathBuf::from(output),
                source,
            }
        }
    };
    let mut pcap = pcapng::Writer::new(out, &start.interfaces, start.snaplen).map_err(write_err)?;
    let mut captured = 0u64;
    let mut text = String::new();
    loop {
        text.clear();
        if reader.read_line(&mut text).map_err(io_err)? == 0 {
            break;
        }
        let p: CapturedPacket =
            serde_json::from_str(text.trim_end()).map_err(|e| CliError::BadData {
                what: "capture",
                error: e.to_string(),
            })?;
        let data = crate::capture::unhex(&p.data).ok_or_else(|| CliError::BadData {
            what: "capture",
            error: "packet data is not hex".into(),
        })?;
        let id = pcap.interface_id(&p.in_iface);
        match pcap.packet(id, p.ts_ns, &data, p.len, &comment(&p)) {
            // `popctl capture -w - | tcpdump -c 5 -r -`: the reader is done.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            other => other.map_err(write_err)?,
        }
        captured += 1;
        if req.count.is_some_and(|n| captured >= n) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_give_action_reason_and_interfaces() {
        let mut p = CapturedPacket {
            in_iface: "eth1".into(),
            action: "drop".into(),
            reason: Some("acl".into()),
            ..Default::default()
        };
        assert_eq!(comment(&p), "drop acl; in eth1");
        p.action = "redirect".into();
        p.reason = None;
        p.out_iface = Some("eth0".into());
        assert_eq!(comment(&p), "redirect; in eth1 out eth0");
    }
}
