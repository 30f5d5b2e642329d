//! popd: see `popd --help` and docs/operations.md.
fn main() {
    std::process::exit(pop::daemon::main());
}
