//! What a run needs before it starts (DPDK, hugepages, release binaries) and what it records
//! about the machine (load, time, commit).

use crate::{dpdk, proc};
use ptnet_integration::host::workspace_root;
use ptnet_integration::Bins;

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn utc_now() -> String {
    proc::sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The commit, plus "+dirty" and the modified paths of the measured crates, if any.
pub fn git_head() -> String {
    let root = workspace_root();
    let r = root.display().to_string();
    let head = proc::sh("git", &["-C", &r, "rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = proc::sh(
        "git",
        &[
            "-C",
            &r,
            "status",
            "--porcelain",
            "--",
            "host-backend",
            "guest-driver",
            "protocol",
        ],
    )
    .unwrap_or_default();
    let files: Vec<&str> = dirty.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
    if files.is_empty() {
        head.trim().to_string()
    } else {
        format!("{}+dirty ({})", head.trim(), files.join(", "))
    }
}

const HUGEPAGES: u64 = 1024;

pub fn setup_hugepages() -> Result<(), String> {
    let nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let cur: u64 = std::fs::read_to_string(nr)
        .map_err(|e| format!("{nr}: {e}"))?
        .trim()
        .parse()
        .unwrap_or(0);
    if cur < HUGEPAGES {
        std::fs::write(nr, HUGEPAGES.to_string()).map_err(|e| format!("{nr}: {e}"))?;
        let now: u64 = std::fs::read_to_string(nr)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        eprintln!("bench: hugepages {cur} -> {now} (2 MB)");
        if now < HUGEPAGES / 2 {
            return Err(format!("could only reserve {now} hugepages"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        std::fs::create_dir_all("/dev/hugepages").map_err(|e| e.to_string())?;
        proc::sh("mount", &["-t", "hugetlbfs", "nodev", "/dev/hugepages"])?;
        eprintln!("bench: mounted hugetlbfs on /dev/hugepages");
    }
    Ok(())
}

fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// testpmd, and what P8 builds its paced DPDK sender with (`cc`, `pkg-config libdpdk`).
fn dpdk_ready() -> bool {
    have(dpdk::TESTPMD) && have("cc") && proc::sh("pkg-config", &["--exists", "libdpdk"]).is_ok()
}

/// The Debian packages [`dpdk_ready`] needs.
const DPDK_PACKAGES: [&str; 4] = ["dpdk", "dpdk-dev", "pkg-config", "gcc"];

pub fn setup_dpdk() -> Result<(), String> {
    if dpdk_ready() {
        return Ok(());
    }
    eprintln!(
        "bench: installing {} (apt-get install -y)",
        DPDK_PACKAGES.join(" ")
    );
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y"])
            .args(DPDK_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))
    };
    let mut st = install()?;
    if !st.success() {
        // Stale or missing package lists: refresh them once.
        let _ = std::process::Command::new("apt-get")
            .args(["update", "-q"])
            .status();
        st = install()?;
    }
    if !st.success() || !dpdk_ready() {
        return Err(format!(
            "apt-get install {} did not provide dpdk-testpmd, cc and pkg-config libdpdk",
            DPDK_PACKAGES.join(" ")
        ));
    }
    Ok(())
}

pub fn setup_bins() -> Result<Bins, String> {
    if std::env::var_os("PTNET_HOST_PROFILE").is_none() {
        // Safe in edition 2021; done while still single-threaded, so nothing reads the
        // environment concurrently.
        std::env::set_var("PTNET_HOST_PROFILE", "release");
    }
    ptnet_integration::bins()
}
