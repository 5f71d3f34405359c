//! `cargo xtask`: the project's automation, one entry point.
//!
//! ```text
//! cargo xtask test          everything README promises: deps, QEMU, guest image, all tests
//!                           (the `#[ignore]`d VM tests too; PTNET_SKIP_VM=1 leaves them ignored)
//! cargo xtask ci            fmt + clippy + doc + test (what .ci/run runs)
//! cargo xtask demo          daemon + two guests exchanging packets (Ctrl-C stops)
//! cargo xtask bench         ptnet vs DPDK vhost-user benchmark (ARGS go to ptnet-bench: --quick, --only ...)
//! cargo xtask bench-table   README's figures table from target/bench/results.json ([RESULTS])
//! cargo xtask build-qemu    patched QEMU (cached); prints its path
//! cargo xtask guest-image   the guest kernel + initramfs (cached); prints its directory
//! cargo xtask deps          install the Debian packages the tests need
//! cargo xtask stock-qemu    Debian's unpatched QEMU (bookworm-backports) for the virtio-net VM tests; prints its path
//! cargo xtask man           man pages of ptnet-backend and ptnet-ctl (from their clap definitions) into target/man
//! cargo xtask fuzz          cargo-fuzz targets on nightly ([--seconds N] [--sanitizer S] [TARGET...])
//! ```

mod bench_table;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Debian packages the tests and tools need (QEMU's own build deps are installed by its script).
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "ethtool",
    "python3",
    "procps",
    "file",
    // host-backend/tests/metrics.rs: curl reads the metrics endpoint, promtool checks it.
    "curl",
    "prometheus",
    // DPDK's testpmd: the virtio-user frontend test (integration/tests/virtio_user.rs).
    "dpdk",
    "dpdk-dev",
    // integration/tests/capture.rs: tcpdump reads what `ptnet-ctl capture` wrote.
    "tcpdump",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {st}"))
    }
}

/// Runs a script whose last stdout line is a path, passing the rest of its output through.
fn run_for_path(cmd: &mut Command) -> Result<PathBuf, String> {
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap_or("").trim().to_string();
    for l in lines {
        eprintln!("{l}");
    }
    if !out.status.success() || last.is_empty() {
        return Err(format!("{cmd:?} failed: {}", out.status));
    }
    Ok(PathBuf::from(last))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn deps() -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The man pages, generated from the clap definitions (`ptnet_backend::man`), into
/// `target/man`: `man -l target/man/ptnet-backend.1`.
fn man() -> Result<(), String> {
    let dir = root().join("target").join("man");
    run(cargo()
        .args([
            "run",
            "-q",
            "-p",
            "ptnet-backend",
            "--example",
            "ptnet-man",
            "--",
        ])
        .arg(&dir))
}

fn build_qemu() -> Result<PathBuf, String> {
    run_for_path(Command::new("bash").arg(root().join("qemu-patches/build")))
}

fn guest_image() -> Result<PathBuf, String> {
    run_for_path(Command::new("bash").arg(root().join("integration/guest/build-image.sh")))
}

/// What comes from bookworm-backports: Debian's own QEMU (`qemu-system-x86` 10.0.x), which the
/// virtio-net VM tests boot unpatched (`integration/tests/vm_virtio.rs`), and the libvirt of the
/// same generation (11.3) the libvirt test drives (`integration/tests/vm_libvirt.rs`).
const BACKPORTS_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs [`BACKPORTS_PACKAGES`] when one is missing, with the backports source added when no
/// apt source names it; returns the stock QEMU binary.
fn stock_qemu() -> Result<PathBuf, String> {
    let bin = PathBuf::from("/usr/bin/qemu-system-x86_64");
    if BACKPORTS_PACKAGES.iter().all(|p| installed(p)) && bin.is_file() {
        return Ok(bin);
    }
    let mut sources = String::new();
    for f in ["/etc/apt/sources.list"]
        .into_iter()
        .map(PathBuf::from)
        .chain(
            std::fs::read_dir("/etc/apt/sources.list.d")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        )
    {
        sources.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    if !sources.contains("bookworm-backports") {
        let list = "/etc/apt/sources.list.d/bookworm-backports.list";
        eprintln!("xtask: adding {list}");
        std::fs::write(
            list,
            "deb http://deb.debian.org/debian bookworm-backports main\n",
        )
        .map_err(|e| format!("{list}: {e}"))?;
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
        ])
        .args(BACKPORTS_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} missing after installing qemu-system-x86",
            bin.display()
        ))
    }
}

/// Builds QEMU and the guest image and exports their locations for the VM tests.
fn vm_prereqs() -> Result<Vec<(String, PathBuf)>, String> {
    let qemu = build_qemu()?;
    let image = guest_image()?;
    let stock = stock_qemu()?;
    Ok(vec![
        ("PTNET_QEMU".into(), qemu),
        ("PTNET_GUEST_DIR".into(), image),
        ("PTNET_STOCK_QEMU".into(), stock),
    ])
}

/// `PTNET_SKIP_VM=1`: `cargo xtask test` leaves the VM tests ignored (and builds neither QEMU nor
/// the guest image).
fn skip_vm() -> bool {
    std::env::var("PTNET_SKIP_VM").is_ok_and(|v| v == "1")
}

/// The `cargo test` command line of `cargo xtask test EXTRA`: `EXTRA` up to a `--` goes to cargo,
/// the rest to the test binaries, after `--include-ignored` (the VM tests are `#[ignore]`d
/// because they boot QEMU; this runs them) unless `skip_vm`.
fn test_args(extra: &[String], skip_vm: bool) -> Vec<String> {
    let (cargo_args, test_args) = match extra.iter().position(|a| a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    let mut v: Vec<String> = ["test", "--workspace"].map(String::from).to_vec();
    v.extend(cargo_args.iter().cloned());
    v.push("--".into());
    if !skip_vm {
        v.push("--include-ignored".into());
    }
    v.extend(test_args.iter().cloned());
    v
}

fn test(extra: &[String]) -> Result<(), String> {
    deps()?;
    let skip_vm = skip_vm();
    let env = if skip_vm {
        eprintln!("xtask: PTNET_SKIP_VM=1: the VM tests stay ignored");
        Vec::new()
    } else {
        vm_prereqs()?
    };
    // Binaries the integration tests start (daemon, pkt-gen) are built first, in one go.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    let mut c = cargo();
    c.args(test_args(extra, skip_vm));
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    test(&[])
}

/// Builds the release binaries, then runs the integration crate's binary `bin` with `extra`
/// arguments and `env`: the demo and the bench start the same way.
fn run_release_bin(bin: &str, extra: &[String], env: Vec<(String, PathBuf)>) -> Result<(), String> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "ptnet-backend",
        "-p",
        "ptnet-driver-tools",
        "-p",
        "ptnet-integration",
        "--bins",
    ]))?;
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-q",
        "-p",
        "ptnet-integration",
        "--bin",
        bin,
        "--",
    ])
    .args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

fn demo(extra: &[String]) -> Result<(), String> {
    deps()?;
    let env = vm_prereqs()?;
    run_release_bin("ptnet-demo", extra, env)
}

fn bench(extra: &[String]) -> Result<(), String> {
    deps()?;
    run_release_bin("ptnet-bench", extra, Vec::new())
}

/// `cargo xtask soak --minutes N [--ports 64] ...`: ptnet-soak (not in CI; see README).
fn soak(extra: &[String]) -> Result<(), String> {
    run_release_bin("ptnet-soak", extra, Vec::new())
}

const USAGE: &str =
    "usage: cargo xtask <test|ci|demo|bench|bench-table|soak|build-qemu|guest-image|stock-qemu|deps|man|fuzz> [ARGS...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let r = match cmd.as_str() {
        "test" => test(rest),
        "ci" => ci(),
        "demo" => demo(rest),
        "bench" => bench(rest),
        "bench-table" => bench_table::bench_table(&root(), rest),
        "soak" => soak(rest),
        "build-qemu" => build_qemu().map(|p| println!("{}", p.display())),
        "guest-image" => guest_image().map(|p| println!("{}", p.display())),
        "stock-qemu" => stock_qemu().map(|p| println!("{}", p.display())),
        "deps" => deps(),
        "man" => man(),
        "fuzz" => fuzz::fuzz(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown command '{other}'\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_args;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vm_tests_are_included_unless_skipped() {
        assert_eq!(
            test_args(&[], false),
            args(&["test", "--workspace", "--", "--include-ignored"])
        );
        assert_eq!(test_args(&[], true), args(&["test", "--workspace", "--"]));
    }

    #[test]
    fn extra_arguments_go_to_cargo_and_to_the_tests() {
        assert_eq!(
            test_args(&args(&["-p", "ptnet-integration", "--", "vm_boot"]), false),
            args(&[
                "test",
                "--workspace",
                "-p",
                "ptnet-integration",
                "--",
                "--include-ignored",
                "vm_boot"
            ])
        );
    }
}
