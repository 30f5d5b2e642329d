//! popctl: argument parsing, the socket client call and table rendering.
//!
//! Exit codes: 0 success; 1 an error (popd's message verbatim, a bad value, popd
//! unreachable); 2 a usage error. Every error is exactly one line on stderr,
//! `popctl: <message>`.
pub mod args;
pub mod capture;
pub mod render;
pub mod top;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Parser;
use thiserror::Error;

use crate::api::client::{self, ClientError};
use crate::api::protocol::{Request, Response};
use crate::config::validate::ConfigError;
use args::{Cli, Plan};

/// Why a popctl command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// Wrong words on the command line (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A value that popd would reject too (exit 1).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// An address argument that does not parse.
    #[error("{field} {value:?}: not an IP address")]
    BadAddress {
        /// Where it was given, e.g. "route get: address".
        field: &'static str,
        /// The text given.
        value: String,
    },
    /// popd could not be reached or did not answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// popd refused the request; its message, verbatim.
    #[error("{0}")]
    Server(String),
    /// The `apply` file cannot be read.
    #[error("cannot read {}: {}", .path.display(), strip_os_error(.source))]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// popd's data does not have the documented shape.
    #[error("popd sent an unexpected answer to {what}: {error}")]
    BadData {
        /// The command.
        what: &'static str,
        /// The decoding error.
        error: String,
    },
    /// The capture file cannot be written.
    #[error("cannot write {}: {}", .path.display(), strip_os_error(.source))]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing to stdout failed.
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn strip_os_error(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// popctl's entry point: parses `std::env::args`, runs, returns the exit code.
pub fn main() -> i32 {
    run(
        std::env::args_os(),
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// Runs popctl with these arguments (including argv\[0\]), writing to `out`/`err`.
pub fn run<I, T>(argv: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e, out, err),
    };
    match execute(&cli, out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "popctl: {}", e.to_string().replace('\n', " "));
            e.exit_code()
        }
    }
}

/// Help and version go to stdout as clap renders them; real errors become one line.
fn clap_error(e: &clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{text}");
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(err, "{text}");
            2
        }
        _ => {
            let _ = writeln!(err, "popctl: {}", one_line(&text));
            2
        }
    }
}

/// Folds clap's multi-line error into one line: the message, then the usage.
fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") || line.starts_with("tip:") {
            continue;
        }
        match line.strip_prefix("Usage:") {
            Some(usage) => parts.push(format!("(usage:{usage})")),
            None => parts.push(line.strip_prefix("error: ").unwrap_or(line).to_string()),
        }
    }
    parts.join(" ")
}

/// Sends one request; popd's `Error` becomes [`CliError::Server`].
pub fn call_ok(socket: &Path, req: &Request) -> Result<serde_json::Value, CliError> {
    match client::call(socket, req)? {
        Response::Ok { data } => Ok(data),
        Response::Error { message } => Err(CliError::Server(message)),
    }
}

fn execute(cli: &Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let socket = cli.socket_path();
    match args::plan(&cli.command)? {
        Plan::Top {
            iterations,
            interval,
        } => top::run(&socket, iterations, interval, cli.json, out),
        Plan::Capture { request, output } => capture::run(&socket, &request, &output, out),
        Plan::Call(req) => {
            let data = call_ok(&socket, &req)?;
            if cli.json {
                let text = serde_json::to_string_pretty(&data).unwrap_or_default();
                render::write_all(out, &format!("{text}\n"))
            } else {
                render::plain(&req, &data, out)
            }
        }
    }
}

#[cfg(test)]
mod tests;
