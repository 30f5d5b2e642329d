//! Man pages and shell completions, generated from the clap definitions of
//! popctl ([`crate::cli::args::Cli`]) and popd ([`crate::daemon::Args`]), so
//! they always list the options the binaries take. `pop-docgen DIR` (run by
//! `cargo xtask dist`) writes them; the Debian package installs them.
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// The command line of popctl, built (bin names filled in).
pub fn popctl_command() -> clap::Command {
    let mut cmd = crate::cli::args::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The command line of popd, built.
pub fn popd_command() -> clap::Command {
    let mut cmd = crate::daemon::Args::command();
    cmd.build();
    cmd
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a
/// control character.
fn esc(text: &str) -> String {
    let body = text.replace('\\', "\\e").replace('-', "\\-");
    body.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn section(out: &mut String, title: &str, body: &str) {
    let _ = writeln!(out, ".SH {title}\n{}", body.trim_end());
}

/// Paragraphs (blank-line separated) as roff paragraphs.
fn paragraphs(text: &str) -> String {
    text.trim()
        .split("\n\n")
        .map(|p| esc(&p.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect::<Vec<_>>()
        .join("\n.PP\n")
}

/// The page with every non-ASCII character as a groff escape (`\[u2014]`):
/// man renders them in any locale.
fn ascii(page: String) -> String {
    page.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\[u{:04X}]", c as u32)
            }
        })
        .collect()
}

/// `(name, text)` items as a tagged list.
fn tagged(items: &[(&str, &str)]) -> String {
    items
        .iter()
        .map(|(tag, text)| format!(".TP\n\\fB{}\\fR\n{}", esc(tag), paragraphs(text)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mangen(cmd: &clap::Command, section_no: &str) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone())
        .section(section_no)
        .manual("pop manual")
        .source(format!("pop {}", env!("CARGO_PKG_VERSION")))
}

/// The clap-generated head of a page, then `description`, then the
/// clap-generated OPTIONS.
fn head(cmd: &clap::Command, section_no: &str, description: &str) -> io::Result<String> {
    let man = mangen(cmd, section_no);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    let mut out = String::from_utf8(buf).map_err(io::Error::other)?;
    section(&mut out, "DESCRIPTION", &paragraphs(description));
    let mut buf = Vec::new();
    man.render_options_section(&mut buf)?;
    out.push_str(&String::from_utf8(buf).map_err(io::Error::other)?);
    Ok(out)
}

/// Every command under `cmd` that takes no further subcommand, depth first.
fn leaves(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.has_subcommands() {
            out.extend(leaves(sub));
        } else {
            out.push(sub.clone());
        }
    }
    out
}

/// One command of popctl's COMMANDS section: its usage, what it does, and
/// its own arguments.
fn command_entry(leaf: &clap::Command) -> String {
    let mut usage = leaf.clone().render_usage().to_string();
    usage = usage
        .trim_start_matches("Usage:")
        .trim()
        .replace(" [OPTIONS]", "");
    let options: Vec<String> = leaf
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| a.get_id() != "help")
        .map(|a| {
            let names = match (a.get_long(), a.get_short()) {
                (Some(l), Some(s)) => format!("-{s}, --{l}"),
                (Some(l), None) => format!("--{l}"),
                (None, Some(s)) => format!("-{s}"),
                (None, None) => a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| a.get_id().to_string().to_uppercase()),
            };
            let value = match (a.get_long(), a.get_value_names()) {
                (Some(_), Some(v)) if a.get_action().takes_values() => {
                    format!(" {}", v.join(" "))
                }
                _ => String::new(),
            };
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            format!(
                ".RS\n.TP\n\\fB{}\\fR{}\n{}\n.RE",
                esc(&names),
                esc(&value),
                esc(&help)
            )
        })
        .collect();
    let about = leaf.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut entry = format!(".TP\n\\fB{}\\fR\n{}", esc(&usage), esc(&about));
    for o in options {
        entry.push('\n');
        entry.push_str(&o);
    }
    entry
}

/// popctl(1).
pub fn popctl_man() -> io::Result<String> {
    let cmd = popctl_command();
    let mut out = head(
        &cmd,
        "1",
        "popctl is the command-line client of popd(8), the controller of pop's XDP \
             forwarding plane. It changes the desired state (routes, customers, ACL rules), \
             shows it with the data plane's counters, and asks the live data plane what it \
             does with a packet.\n\n\
             Every change is validated, applied to the data plane and persisted by popd \
             before popctl returns; a rejected change changes nothing. Plain output is \
             aligned tables for people; -j prints one JSON document for scripts.\n\n\
             Only root and members of popd's socket group (the group pop in the Debian \
             package) may connect to popd's socket.",
    )?;
    let entries: Vec<String> = leaves(&cmd).iter().map(command_entry).collect();
    section(&mut out, "COMMANDS", &entries.join("\n"));
    section(
        &mut out,
        "EXIT STATUS",
        &tagged(&[
            ("0", "Success."),
            (
                "1",
                "A value is not valid, popd refused the request, or popd could not be \
                 reached. One line on standard error names the bad field or the cause.",
            ),
            ("2", "Wrong words on the command line."),
        ]),
    );
    section(
        &mut out,
        "ENVIRONMENT",
        &tagged(&[(
            "POP_SOCKET",
            "popd's API socket when --socket is not given.",
        )]),
    );
    section(
        &mut out,
        "FILES",
        &tagged(&[("/run/pop/popd.sock", "popd's API socket (mode 0660).")]),
    );
    section(
        &mut out,
        "EXAMPLES",
        &format!(
            ".nf\n{}\n.fi",
            esc("popctl route add 0.0.0.0/0 via 192.0.2.1 dev eth0\n\
                 popctl customer add acme --prefix 198.51.100.0/24 --iface eth1 --anti-spoofing\n\
                 popctl acl add 100 --action drop --dst 198.51.100.10/32 --proto tcp --dport 22\n\
                 popctl acl show\n\
                 popctl -j stats acme\n\
                 popctl trace --in eth0 --src 192.0.2.50 --dst 198.51.100.10 --proto tcp --dport 22")
        ),
    );
    section(
        &mut out,
        "SEE ALSO",
        "\\fBpopd\\fR(8); /usr/share/doc/pop/reference.md",
    );
    Ok(ascii(out))
}

/// popd(8).
pub fn popd_man() -> io::Result<String> {
    let cmd = popd_command();
    let mut out = head(
        &cmd,
        "8",
        "popd loads pop's XDP program, attaches it to every interface of the config, \
             pins the program, its maps and links under --bpffs, and keeps the maps equal to \
             the desired state: routes, customers and ACL rules, changed with popctl(1) or \
             the config file. It resolves next hops from the kernel's neighbour table, serves \
             popctl on a Unix socket and Prometheus metrics over HTTP.\n\n\
             Restart is hitless: a new popd adopts the pinned program and maps and never \
             detaches while traffic flows; a popd of another build loads its data plane beside \
             the running one and swaps every link to it atomically. A stopped or crashed popd \
             leaves forwarding running; only --detach-on-exit or popctl shutdown --detach \
             remove the data plane.\n\n\
             Every change is persisted in --state-dir (atomic write and fsync; the directory \
             0750, the files 0640) before it is acknowledged, and wins over the config file \
             at the next start.\n\n\
             popd needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root), and a mounted bpffs \
             (it mounts /sys/fs/bpf when it may).",
    )?;
    section(
        &mut out,
        "SIGNALS",
        &tagged(&[
            (
                "SIGHUP",
                "Re-read --config and apply it in one transaction, like popctl apply. A \
                 config that cannot be applied is refused whole and logged.",
            ),
            (
                "SIGTERM, SIGINT",
                "Exit; the data plane keeps forwarding (unless --detach-on-exit).",
            ),
        ]),
    );
    section(
        &mut out,
        "FILES",
        &tagged(&[
            ("/etc/pop/pop.toml", "The config file."),
            (
                "/var/lib/pop/state.json",
                "The desired state, with the ids the data plane's counters use (a snapshot).",
            ),
            (
                "/var/lib/pop/state.journal",
                "The changes made since that snapshot, each fsynced before popctl returns. \
                 Back up both files (popd stopped), or use popctl export.",
            ),
            ("/run/pop/popd.sock", "The API socket."),
            (
                "/sys/fs/bpf/pop",
                "The pinned program, maps and links of the data plane.",
            ),
        ]),
    );
    section(
        &mut out,
        "SEE ALSO",
        "\\fBpopctl\\fR(1); /usr/share/doc/pop/reference.md, /usr/share/doc/pop/operations.md",
    );
    Ok(ascii(out))
}

/// Shell completions of `cmd` (named `bin`) for `shell`.
pub fn completion(cmd: &clap::Command, bin: &str, shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd.clone(), bin, &mut buf);
    buf
}

/// Where each generated file goes below a DIR, with its bytes:
/// `man/popctl.1`, `man/popd.8`, `completions/{bash,zsh,fish}/...`.
pub fn files() -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = vec![
        (PathBuf::from("man/popctl.1"), popctl_man()?.into_bytes()),
        (PathBuf::from("man/popd.8"), popd_man()?.into_bytes()),
    ];
    for (bin, cmd) in [("popctl", popctl_command()), ("popd", popd_command())] {
        for (shell, name) in [
            (Shell::Bash, bin.to_string()),
            (Shell::Zsh, format!("_{bin}")),
            (Shell::Fish, format!("{bin}.fish")),
        ] {
            let path = Path::new("completions").join(shell.to_string()).join(name);
            out.push((path, completion(&cmd, bin, shell)));
        }
    }
    Ok(out)
}

/// Writes [`files`] below `dir`; returns the paths written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (rel, bytes) in files()? {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, bytes)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Formats a page the way man does, returning groff's warnings.
    fn groff_warnings(page: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page");
        fs::write(&path, page).unwrap();
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn popctl_page_lists_every_command_with_its_options() {
        let page = popctl_man().unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH popctl 1"),
            "{page}"
        );
        for command in [
            "popctl status",
            "popctl route add",
            "popctl route del",
            "popctl route show",
            "popctl route get",
            "popctl customer add",
            "popctl acl add",
            "popctl acl show",
            "popctl stats",
            "popctl top",
            "popctl apply",
            "popctl export",
            "popctl shutdown",
            "popctl trace",
        ] {
            assert!(page.contains(&esc(command)), "no {command} in popctl(1)");
        }
        for option in [
            "\\-\\-in\\-iface",
            "\\-\\-anti\\-spoofing",
            "\\-\\-dry\\-run",
            "POP_SOCKET",
        ] {
            assert!(page.contains(option), "no {option} in popctl(1)");
        }
        // Hidden test-only options stay out.
        assert!(!page.contains("iterations"), "a hidden option in popctl(1)");
        if let Some(warnings) = groff_warnings(&page) {
            assert_eq!(warnings, "", "groff warns about popctl(1)");
        }
    }

    #[test]
    fn popd_page_has_every_option_in_section_8() {
        let page = popd_man().unwrap();
        assert!(page.contains(".TH popd 8"), "{page}");
        for arg in popd_command().get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            if let Some(long) = arg.get_long() {
                assert!(
                    page.contains(&esc(&format!("--{long}"))),
                    "no --{long} in popd(8)"
                );
            }
        }
        if let Some(warnings) = groff_warnings(&page) {
            assert_eq!(warnings, "", "groff warns about popd(8)");
        }
    }

    #[test]
    fn completions_know_the_commands() {
        let bash = completion(&popctl_command(), "popctl", Shell::Bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("complete") && bash.contains("acl"), "{bash}");
        let names: Vec<PathBuf> = files().unwrap().into_iter().map(|(p, _)| p).collect();
        assert!(names.contains(&PathBuf::from("completions/zsh/_popd")));
        assert!(names.contains(&PathBuf::from("completions/fish/popctl.fish")));
    }
}
