//! `ptnet-ctl`: asks a running `ptnet-backend` over its control socket (see [`ptnet_backend::ctl`]).

fn main() -> std::process::ExitCode {
    ptnet_backend::ctl::run()
}
