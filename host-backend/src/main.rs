//! `ptnet-backend`: see `ptnet-backend --help`.

fn main() -> std::process::ExitCode {
    ptnet_backend::cli::run()
}
