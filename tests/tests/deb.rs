//! The Debian package, built once by the same code as `cargo xtask dist`
//! (`xtask::deb`) from the debug binaries:
//! - it holds the binaries, the conffile, the man pages, completions, docs and
//!   the unit, and `lintian` reports no errors;
//! - `systemd-analyze verify` accepts the unit installed in a temporary root,
//!   and `systemd-analyze security --offline=yes` rates it at most 4.0;
//! - popd runs the way the unit runs it: under `setpriv` with exactly the
//!   unit's user, group, capabilities, no-new-privs and umask, in a lab
//!   (`pkg-*`): traffic forwards, a member of `pop` can use popctl, and
//!   another user gets a clear permission error.
//!
//! Needs root, dpkg-deb, dpkg-dev, lintian, systemd (systemd-analyze) and
//! util-linux (setpriv).
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use pop_lab::{topology, Lab, Popd};

/// The group the package creates and the unit runs popd with.
const GROUP: &str = "pop";
/// The user that stands for any other local user.
const NOBODY: u32 = 65534;

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The package and the directory it was extracted into (`dpkg -x`).
struct Package {
    deb: PathBuf,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

/// Builds the package once for every test of this file.
fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pop-deb")
            .tempdir()
            .unwrap();
        // Other users (nobody) run the extracted popctl.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin_dir = pop_lab::popd::test_bin_dir().expect("popd and popctl built");
        assert!(
            bin_dir.join("pop-docgen").exists(),
            "{} is missing: run `cargo build --workspace` first",
            bin_dir.join("pop-docgen").display()
        );
        let deb = xtask::deb::build(&xtask::deb::Inputs {
            root: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
            bin_dir,
            out_dir: dir.path().to_path_buf(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .unwrap_or_else(|e| panic!("building the package: {e:#}"));
        let root = dir.path().join("root");
        let out = run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
        assert!(out.status.success(), "dpkg -x: {}", text(&out.stderr));
        Package {
            deb,
            root,
            _dir: dir,
        }
    })
}

/// The unit as installed by the package.
fn unit_path() -> PathBuf {
    package().root.join(xtask::deb::UNIT_PATH)
}

/// `Key=value` settings of the unit's [Service] section (values of repeated
/// keys joined by spaces).
fn service_settings() -> BTreeMap<String, String> {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let entry = out.entry(k.to_string()).or_default();
            if !entry.is_empty() {
                entry.push(' ');
            }
            entry.push_str(v);
        }
    }
    out
}

#[test]
fn package_holds_what_an_operator_needs() {
    let pkg = package();
    let out = run(Command::new("dpkg-deb").arg("-c").arg(&pkg.deb));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    for path in [
        "./usr/sbin/popd",
        "./usr/bin/popctl",
        "./etc/pop/pop.toml",
        "./lib/systemd/system/popd.service",
        "./usr/share/man/man1/popctl.1.gz",
        "./usr/share/man/man8/popd.8.gz",
        "./usr/share/bash-completion/completions/popctl",
        "./usr/share/zsh/vendor-completions/_popctl",
        "./usr/share/fish/vendor_completions.d/popctl.fish",
        "./usr/share/doc/pop/copyright",
        "./usr/share/doc/pop/reference.md.gz",
        "./usr/share/doc/pop/operations.md.gz",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{listing}"
        );
    }
    // Every file belongs to root.
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not owned by root: {line}");
    }
    let out = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&pkg.deb)
        .arg("conffiles"));
    assert_eq!(text(&out.stdout).trim(), "/etc/pop/pop.toml");
    let depends = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&pkg.deb)
        .arg("Depends"));
    let depends = text(&depends.stdout);
    assert!(depends.contains("libc6"), "Depends: {depends}");
    // The shipped config is one popd starts with.
    let config = std::fs::read_to_string(pkg.root.join("etc/pop/pop.toml")).unwrap();
    pop::config::validate::parse_config(&config)
        .and_then(|c| pop::config::validate::validate(&c).map(|_| c))
        .unwrap_or_else(|e| panic!("the shipped /etc/pop/pop.toml: {e}"));
    // The man pages render without warnings.
    for page in [
        "usr/share/man/man1/popctl.1.gz",
        "usr/share/man/man8/popd.8.gz",
    ] {
        let out = run(Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(pkg.root.join(page))
            .env("MANWIDTH", "80"));
        assert!(out.status.success(), "man {page}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "man warns about {page}");
        assert!(text(&out.stdout).contains("SYNOPSIS"));
    }
}

#[test]
fn lintian_reports_no_errors() {
    let pkg = package();
    let out = run(Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(&pkg.deb));
    let report = text(&out.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    eprintln!("lintian:\n{report}{}", text(&out.stderr));
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        !text(&out.stderr).contains("error"),
        "lintian failed: {}",
        text(&out.stderr)
    );
}

/// `systemd-analyze security --offline=yes` exposure of `unit`, in a root.
fn exposure(root: &Path, unit: &Path) -> Result<f64> {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(unit));
    let report = text(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no exposure level: {report}{}", text(&out.stderr)))?;
    let value = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no number in {line:?}"))?;
    Ok(value)
}

#[test]
fn systemd_accepts_the_unit_and_rates_it_at_most_4() {
    let pkg = package();
    let unit = unit_path();
    // verify resolves ExecStart= on the host: a copy of the unit whose
    // ExecStart= is the packaged popd, extracted in the temporary root.
    let dir = tempfile::tempdir().unwrap();
    let text_of_unit = std::fs::read_to_string(&unit).unwrap();
    ensure_exec_start(&text_of_unit);
    let copy = dir.path().join("popd.service");
    std::fs::write(
        &copy,
        text_of_unit.replace(
            "ExecStart=/usr/sbin/popd ",
            &format!("ExecStart={} ", pkg.root.join("usr/sbin/popd").display()),
        ),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--no-pager", "--man=no"])
        .arg(&copy));
    let messages = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify: {messages}{}",
        text(&out.stdout)
    );
    assert!(
        !messages.contains("popd.service"),
        "systemd-analyze verify complains about the unit:\n{messages}"
    );
    let level = exposure(&pkg.root, &unit).unwrap();
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(level <= 4.0, "the unit's exposure is {level}, above 4.0");
    // The check can fail: the same unit without its hardening rates worse.
    let bare: String = std::fs::read_to_string(&unit)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Capability")
                && !l.starts_with("Restrict")
                && !l.starts_with("Private")
                && !l.starts_with("SystemCall")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let bare_unit = dir.path().join("popd.service");
    std::fs::write(&bare_unit, bare).unwrap();
    let bare_level = exposure(Path::new("/"), &bare_unit).unwrap();
    assert!(bare_level > 4.0, "an unhardened unit rates {bare_level}");
}

/// The unit starts the packaged popd, as the package installs it.
fn ensure_exec_start(unit: &str) {
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("the unit has an ExecStart=");
    assert!(
        exec.starts_with("ExecStart=/usr/sbin/popd ") && exec.contains("--socket-group pop"),
        "{exec}"
    );
    assert!(package().root.join("usr/sbin/popd").exists());
}

/// The gid of the `pop` group, created (like the package's postinst does) if
/// the host has none.
fn pop_gid() -> Result<u32> {
    let lookup = || nix::unistd::Group::from_name(GROUP).ok().flatten();
    if lookup().is_none() {
        let out = run(Command::new("groupadd").args(["--system", GROUP]));
        ensure!(
            out.status.success() || lookup().is_some(),
            "groupadd {GROUP}: {}",
            text(&out.stderr)
        );
    }
    Ok(lookup().context("no pop group")?.gid.as_raw())
}

/// The capability names of a unit setting, as setpriv wants them:
/// `CAP_BPF CAP_NET_ADMIN` → `-all,+bpf,+net_admin`.
fn setpriv_caps(setting: &str) -> String {
    let mut out = String::from("-all");
    for cap in setting.split_whitespace() {
        out.push_str(",+");
        out.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    out
}

/// `sh -c 'umask U; exec setpriv ... "$@"'`: popd with exactly the unit's
/// user, group, capabilities, no-new-privs and umask.
fn unit_wrapper(settings: &BTreeMap<String, String>, gid: u32) -> Result<Vec<String>> {
    let get = |k: &str| {
        settings
            .get(k)
            .cloned()
            .with_context(|| format!("the unit sets no {k}="))
    };
    ensure!(
        get("User")? == "root",
        "the unit's User= is {}",
        get("User")?
    );
    ensure!(
        get("Group")? == GROUP,
        "the unit's Group= is {}",
        get("Group")?
    );
    ensure!(
        get("NoNewPrivileges")? == "yes",
        "the unit allows new privileges"
    );
    let bounding = get("CapabilityBoundingSet")?;
    let ambient = get("AmbientCapabilities")?;
    for forbidden in ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_MODULE"] {
        ensure!(!bounding.contains(forbidden), "the unit keeps {forbidden}");
    }
    let umask = get("UMask")?;
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("umask {umask} && exec \"$0\" \"$@\""),
        "setpriv".to_string(),
        "--reuid=0".to_string(),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
        format!("--inh-caps={}", setpriv_caps(&ambient)),
        format!("--ambient-caps={}", setpriv_caps(&ambient)),
        format!("--bounding-set={}", setpriv_caps(&bounding)),
        "--no-new-privs".to_string(),
    ];
    argv.push("--".to_string());
    Ok(argv)
}

/// popctl `args` as `uid` with supplementary `groups`, no capabilities.
fn popctl_as(popctl: &Path, socket: &Path, uid: u32, groups: &[u32], args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.args([
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ])
    .arg(popctl)
    .arg("--socket")
    .arg(socket)
    .args(args)
    .env_remove("POP_SOCKET");
    run(&mut cmd)
}

/// popd and its lab, removed when dropped.
struct UnitLab {
    lab: Lab,
    popd: Popd,
    _state: tempfile::TempDir,
}

impl Drop for UnitLab {
    fn drop(&mut self) {
        let _ = self.popd.kill();
        let _ = self.lab.down();
    }
}

fn start_like_the_unit() -> Result<UnitLab> {
    ensure!(pop_lab::is_root(), "needs root");
    pop_lab::ensure_bpffs()?;
    let pkg = package();
    let gid = pop_gid()?;
    let settings = service_settings();
    let wrapper = unit_wrapper(&settings, gid)?;
    // popd and popctl as installed by the package.
    let state = tempfile::Builder::new().prefix("pop-pkg").tempdir()?;
    let bin = state.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(pkg.root.join("usr/sbin/popd"), bin.join("popd"))?;
    std::fs::copy(pkg.root.join("usr/bin/popctl"), bin.join("popctl"))?;
    // What StateDirectory= and RuntimeDirectory= make: root:pop, 0750.
    let dir = state.path().join("state");
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::chown(&dir, Some(0), Some(gid))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))?;
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755))?;
    let lab = Lab::new("pkg-");
    lab.up().context("lab up")?;
    let mut popd = match Popd::new(&lab, &bin, &dir, &topology::full_config()) {
        Ok(p) => p,
        Err(e) => {
            let _ = lab.down();
            return Err(e);
        }
    };
    popd.set_wrapper(&wrapper);
    popd.set_extra_args(&["--socket-group", GROUP]);
    let mut env = UnitLab {
        lab,
        popd,
        _state: state,
    };
    env.popd.start()?;
    env.popd.wait_resolved(Duration::from_secs(10))?;
    Ok(env)
}

#[test]
fn popd_runs_with_only_the_units_privileges() {
    let env = match start_like_the_unit() {
        Ok(env) => env,
        Err(e) => panic!("starting popd like the unit: {e:#}"),
    };
    if let Err(e) = check_unit_popd(&env) {
        panic!("{e:#}\n--- popd log:\n{}", env.popd.log_tail(30));
    }
}

fn check_unit_popd(env: &UnitLab) -> Result<()> {
    let pid = env.popd.pid().context("popd's pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39), nothing else.
    let want = (1u64 << 12) | (1u64 << 38) | (1u64 << 39);
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let caps = u64::from_str_radix(&field(set), 16)?;
        ensure!(
            caps == want,
            "popd's {set} is {caps:#x}, expected {want:#x}"
        );
    }
    ensure!(
        field("NoNewPrivs:") == "1",
        "popd runs without no_new_privs"
    );
    // Traffic forwards through it.
    let ping = env.lab.ping(topology::C1, topology::INTERNET_V4, 5, 0.2)?;
    ensure!(
        ping.lost() == 0,
        "ping through popd run like the unit: {ping}"
    );
    // The socket: root:pop, 0660; the state: 0640 in a 0750 dir.
    let socket = env.popd.socket();
    let gid = pop_gid()?;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&socket)?;
    ensure!(meta.gid() == gid, "the socket's group is {}", meta.gid());
    ensure!(
        meta.mode() & 0o777 == 0o660,
        "socket mode {:o}",
        meta.mode()
    );
    let state = std::fs::metadata(env.popd.state_dir().join("state.json"))?;
    ensure!(
        state.mode() & 0o777 == 0o640,
        "state.json mode {:o}",
        state.mode()
    );
    let popctl = env.popd.state_dir().join("../bin/popctl");
    // A member of pop (not root, no capabilities) can use popctl.
    let out = popctl_as(&popctl, &socket, NOBODY, &[gid], &["-j", "status"]);
    ensure!(
        out.status.success(),
        "popctl as a member of pop failed: {}",
        text(&out.stderr)
    );
    let out = popctl_as(&popctl, &socket, NOBODY, &[gid], &["customer", "show"]);
    ensure!(
        out.status.success() && text(&out.stdout).contains("acme"),
        "customer show as a member of pop: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Anyone else gets one clear line and exit 1.
    let out = popctl_as(&popctl, &socket, NOBODY, &[], &["status"]);
    let err = text(&out.stderr);
    if out.status.code() != Some(1) || err.lines().count() != 1 {
        bail!(
            "popctl as another user: exit {:?}, stderr {err:?}",
            out.status
        );
    }
    ensure!(
        err.contains("Permission denied") && err.contains("only root and members of"),
        "popctl as another user: {err}"
    );
    eprintln!("popctl as another user: {}", err.trim());
    Ok(())
}

/// What the maintainer script `script` of the package does with `args`, as
/// the lines its systemd helpers were called with. It runs in a private mount
/// namespace whose /run says systemd is running, with the helpers (and
/// getent, addgroup, popctl) replaced by stubs that only record their call.
fn maintainer_script_calls(script: &str, args: &[&str]) -> Vec<String> {
    let pkg = package();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control");
    let out = run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&pkg.deb)
        .arg(&control));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let log = dir.path().join("calls");
    for stub in [
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "systemctl",
        "getent",
        "addgroup",
        "popctl",
    ] {
        let path = stubs.join(stub);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{stub} $*\" >> {}\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh \"$0\" \"$@\"")
        .arg(control.join(script))
        .args(args)
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stubs.display()),
        ));
    assert!(
        out.status.success(),
        "{script} {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// An upgrade restarts popd (hitless: the data plane stays pinned and keeps
/// forwarding) and never stops it first; a first install starts it; only a
/// removal stops it.
#[test]
fn an_upgrade_restarts_popd_and_never_stops_it() {
    let upgrade_prerm = maintainer_script_calls("prerm", &["upgrade", "0.2.0-1"]);
    assert!(
        !upgrade_prerm.iter().any(|c| c.contains("stop")),
        "prerm upgrade stops popd: {upgrade_prerm:?}"
    );
    let upgrade = maintainer_script_calls("postinst", &["configure", "0.0.9-1"]);
    assert!(
        upgrade.contains(&"deb-systemd-invoke restart popd.service".to_string()),
        "postinst configure OLD-VERSION: {upgrade:?}"
    );
    assert!(!upgrade
        .iter()
        .any(|c| c.contains("stop") || c.contains("shutdown")));
    let install = maintainer_script_calls("postinst", &["configure"]);
    assert!(
        install.contains(&"deb-systemd-invoke start popd.service".to_string()),
        "postinst configure: {install:?}"
    );
    let remove = maintainer_script_calls("prerm", &["remove"]);
    assert!(
        remove.contains(&"deb-systemd-invoke stop popd.service".to_string()),
        "prerm remove: {remove:?}"
    );
}
