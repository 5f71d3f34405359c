//! Man pages, generated from the clap definitions of the command lines (`clap_mangen`), so they
//! never drift from `--help`: `ptnet-backend(1)`, `ptnet-ctl(1)` and one page per `ptnet-ctl`
//! subcommand (`ptnet-ctl-stats(1)`, ...). `cargo xtask man` writes them into `target/man`.

use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// The command lines documented: the daemon's and the control client's.
pub fn commands() -> Vec<clap::Command> {
    vec![crate::cli::Args::command(), crate::ctl::CtlArgs::command()]
}

/// Writes every page into `dir` (created if missing); returns their paths, sorted.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for cmd in commands() {
        clap_mangen::generate_to(cmd, dir)?;
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}
