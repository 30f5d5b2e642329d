//! popctl, the command-line client of popd (commands: docs/reference.md).
fn main() {
    std::process::exit(pop::cli::main())
}
