//! Compiles the C data plane into BPF objects with BTF (clang -g -target bpf).
//!
//! The compiler is `$POP_CLANG` if set, else the first of clang-16..clang-19 or a
//! `clang` that is version 16 or newer. A missing compiler fails with one line that
//! names the Debian packages to install.
use std::{env, path::PathBuf, process::Command};

/// (object, source, extra clang flags). `pop_variant` is pop built with
/// POP_VARIANT: another build of the same data plane, for upgrade tests.
const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("pop", "pop", &[]),
    ("pass", "pass", &[]),
    ("bench", "bench", &[]),
    ("pop_variant", "pop", &["-DPOP_VARIANT=1"]),
    ("fib4_test", "fib4_test", &[]),
    ("fib6_test", "fib6_test", &[]),
];

fn clang_major(bin: &str) -> Option<u32> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pos = text.find("version ")?;
    text[pos + 8..].split('.').next()?.parse().ok()
}

fn find_clang() -> String {
    if let Ok(c) = env::var("POP_CLANG") {
        return c;
    }
    for c in ["clang-16", "clang-17", "clang-18", "clang-19", "clang"] {
        if clang_major(c).is_some_and(|v| v >= 16) {
            return c.to_string();
        }
    }
    panic!(
        "pop-ebpf: no clang >= 16 found to build the XDP program; install it with \
         `apt-get install -y clang-16 llvm-16 libbpf-dev` (or set POP_CLANG)"
    );
}

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let src_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("src");
    println!("cargo:rerun-if-env-changed=POP_CLANG");
    // Any change under src/ (sources and headers) rebuilds the objects.
    println!("cargo:rerun-if-changed=src");
    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!(
            "pop-ebpf: libbpf headers missing; install them with `apt-get install -y libbpf-dev`"
        );
    }
    let clang = find_clang();
    for (name, source, flags) in OBJECTS {
        let src = src_dir.join(format!("{source}.bpf.c"));
        let obj = out_dir.join(format!("{name}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(&clang)
            .args([
                "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3",
            ])
            .args(*flags)
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(&src_dir)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("pop-ebpf: cannot run {clang}: {e}"));
        if !status.success() {
            panic!("pop-ebpf: {clang} failed to compile {}", src.display());
        }
    }
}
