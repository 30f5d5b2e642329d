//! `pop-docgen DIR`: writes popctl(1), popd(8) and the shell completions of
//! both below DIR (`cargo xtask dist` packs them). Not installed.
fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: pop-docgen DIR");
        std::process::exit(2);
    };
    match pop::docgen::write_all(std::path::Path::new(&dir)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
        }
        Err(e) => {
            eprintln!("pop-docgen: {}: {e}", std::path::Path::new(&dir).display());
            std::process::exit(1);
        }
    }
}
