//! Writes the man pages (`ptnet_backend::man`) into the directory given (default `target/man`):
//! what `cargo xtask man` runs.

fn main() -> std::process::ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| "target/man".into(), std::path::PathBuf::from);
    match ptnet_backend::man::write_all(&dir) {
        Ok(pages) => {
            for p in pages {
                println!("{}", p.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ptnet-man: {}: {e}", dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}
