//! popctl, the command-line client of popd (CONTRACT §4).
fn main() {
    std::process::exit(pop::cli::main())
}
