//! The Debian package: `pop_<version>-1_amd64.deb`, built with `dpkg-deb`.
//!
//! `dpkg-deb` (part of dpkg, on every Debian host) rather than cargo-deb: it
//! needs no tool compiled first, and the package is small enough to lay out by
//! hand, maintainer scripts and conffiles included. The files that are not
//! built (unit, maintainer scripts, conffile, copyright) are in
//! `packaging/debian/`; the man pages and completions come from `pop-docgen`.
//!
//! Layout:
//! ```text
//! /usr/sbin/popd, /usr/bin/popctl                  stripped
//! /etc/pop/pop.toml                                conffile
//! /lib/systemd/system/popd.service
//! /usr/share/man/man1/popctl.1.gz, man8/popd.8.gz
//! /usr/share/bash-completion/completions/{popctl,popd}
//! /usr/share/zsh/vendor-completions/{_popctl,_popd}
//! /usr/share/fish/vendor_completions.d/{popctl,popd}.fish
//! /usr/share/doc/pop/{copyright,changelog.Debian.gz,README.md.gz,*.md.gz}
//! ```
use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// What goes into the package.
pub struct Inputs {
    /// The workspace root (packaging/, docs/, README.md).
    pub root: PathBuf,
    /// The popd, popctl and pop-docgen binaries.
    pub bin_dir: PathBuf,
    /// Where the .deb is written (a staging directory is made beside it).
    pub out_dir: PathBuf,
    /// Upstream version (the workspace's); the package is `<version>-1`.
    pub version: String,
}

/// The name of the unit file in the package and in `packaging/debian/`.
pub const UNIT: &str = "popd.service";
/// Where the unit is installed.
pub const UNIT_PATH: &str = "lib/systemd/system/popd.service";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` of `bytes` (no name, no timestamp: reproducible).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    child.stdin.take().expect("piped stdin").write_all(bytes)?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "gzip failed ({})", out.status);
    Ok(out.stdout)
}

/// The shared libraries the binaries need, as Depends (dpkg-shlibdeps).
fn shlib_depends(binaries: &[PathBuf]) -> Result<String> {
    let tmp = std::env::temp_dir().join(format!("pop-shlibdeps-{}", std::process::id()));
    fs::create_dir_all(tmp.join("debian"))?;
    fs::write(
        tmp.join("debian/control"),
        "Source: pop\n\nPackage: pop\nArchitecture: any\n",
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&tmp).arg("-O");
    for b in binaries {
        cmd.arg(format!("-e{}", b.display()));
    }
    let out = run(&mut cmd).context("dpkg-shlibdeps (package dpkg-dev)");
    let _ = fs::remove_dir_all(&tmp);
    let out = out?;
    let depends = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out}"))?;
    Ok(depends.trim().to_string())
}

/// Total size in KiB of the files under `dir`, as Installed-Size counts it.
fn installed_size_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += installed_size_kib(&entry.path())? * 1024;
        } else {
            total += meta.len().div_ceil(1024) * 1024;
        }
    }
    Ok(total / 1024)
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, base, out)?;
        } else {
            out.push(path.strip_prefix(base)?.to_path_buf());
        }
    }
    out.sort();
    Ok(())
}

/// Builds the package; returns the path of the .deb.
pub fn build(inputs: &Inputs) -> Result<PathBuf> {
    let version = format!("{}-1", inputs.version);
    let name = format!("pop_{version}_amd64");
    let stage = inputs.out_dir.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let src = inputs.root.join("packaging/debian");
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));

    // Binaries, stripped (the debug info stays in the build tree).
    for (bin, dest) in [("popd", "usr/sbin/popd"), ("popctl", "usr/bin/popctl")] {
        let to = stage.join(dest);
        put(&to, &read(&inputs.bin_dir.join(bin))?, 0o755)?;
        run(Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment"])
            .arg(&to))
        .context("strip (package binutils)")?;
    }

    // Man pages and completions, generated from the clap definitions.
    let generated = inputs.out_dir.join(format!("{name}.generated"));
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    run(Command::new(inputs.bin_dir.join("pop-docgen")).arg(&generated))?;
    for (from, to) in [
        ("man/popctl.1", "usr/share/man/man1/popctl.1.gz"),
        ("man/popd.8", "usr/share/man/man8/popd.8.gz"),
    ] {
        put(
            &stage.join(to),
            &gzip(&read(&generated.join(from))?)?,
            0o644,
        )?;
    }
    for bin in ["popctl", "popd"] {
        for (from, to) in [
            (
                format!("completions/bash/{bin}"),
                format!("usr/share/bash-completion/completions/{bin}"),
            ),
            (
                format!("completions/zsh/_{bin}"),
                format!("usr/share/zsh/vendor-completions/_{bin}"),
            ),
            (
                format!("completions/fish/{bin}.fish"),
                format!("usr/share/fish/vendor_completions.d/{bin}.fish"),
            ),
        ] {
            put(&stage.join(to), &read(&generated.join(from))?, 0o644)?;
        }
    }
    fs::remove_dir_all(&generated)?;

    // Config, unit, docs.
    put(
        &stage.join("etc/pop/pop.toml"),
        &read(&src.join("pop.toml"))?,
        0o644,
    )?;
    put(&stage.join(UNIT_PATH), &read(&src.join(UNIT))?, 0o644)?;
    let doc = stage.join("usr/share/doc/pop");
    put(
        &doc.join("copyright"),
        &read(&src.join("copyright"))?,
        0o644,
    )?;
    let changelog =
        String::from_utf8(read(&src.join("changelog"))?)?.replace("@VERSION@", &version);
    put(
        &doc.join("changelog.Debian.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;
    put(
        &doc.join("README.md.gz"),
        &gzip(&read(&inputs.root.join("README.md"))?)?,
        0o644,
    )?;
    for entry in fs::read_dir(inputs.root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().expect("a file").to_string_lossy();
            put(
                &doc.join(format!("{name}.gz")),
                &gzip(&read(&path)?)?,
                0o644,
            )?;
        }
    }

    // Control area.
    let debian = stage.join("DEBIAN");
    let depends = shlib_depends(&[stage.join("usr/sbin/popd"), stage.join("usr/bin/popctl")])?;
    let control = String::from_utf8(read(&src.join("control"))?)?
        .replace("@VERSION@", &version)
        .replace("@DEPENDS@", &depends)
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&stage)?.to_string());
    put(&debian.join("control"), control.as_bytes(), 0o644)?;
    put(
        &debian.join("conffiles"),
        &read(&src.join("conffiles"))?,
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        put(&debian.join(script), &read(&src.join(script))?, 0o755)?;
    }
    let mut files = Vec::new();
    files_under(&stage, &stage, &mut files)?;
    let mut md5sums = String::new();
    for f in files.iter().filter(|f| !f.starts_with("DEBIAN")) {
        if f.starts_with("etc") {
            continue; // conffiles are not listed
        }
        let sum = run(Command::new("md5sum").arg(stage.join(f)))?;
        let sum = sum.split_whitespace().next().unwrap_or_default();
        md5sums.push_str(&format!("{sum}  {}\n", f.display()));
    }
    put(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    // Directories 0755 whatever the umask.
    let mut dirs = vec![stage.clone()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }

    let deb = inputs.out_dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}
