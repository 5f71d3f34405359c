//! P8's DPDK sender: `ptb-paced-tx` ([`SOURCE`], our own C program against DPDK's libraries),
//! built by the bench into `target/bench/` and run like a testpmd. testpmd's txonly cannot pace
//! in software (its rate settings are hardware queue limits, which virtio-user lacks); this
//! sender paces on the TSC exactly as `ptnet-pkt-gen -R` does (chunks of min(512, rate/1000),
//! sleeping between them), so both sides' senders pay for the same work.

use crate::dpdk::{cleanup_prefix, eal_args, file_prefix, Config};
use crate::proc::{sh, Proc};
use nix::sys::signal::Signal;
use ptnet_integration::host::workspace_root;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The sender's source, compiled by [`build`].
pub const SOURCE: &str = include_str!("paced_tx.c");

/// Compiles [`SOURCE`] (when the copy beside the binary differs) with `cc` and `pkg-config
/// libdpdk` (the `dpdk-dev` package); returns the binary.
pub fn build() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("ptb-paced-tx.c");
    let bin = dir.join("ptb-paced-tx");
    if bin.is_file() && std::fs::read_to_string(&src).is_ok_and(|s| s == SOURCE) {
        return Ok(bin);
    }
    std::fs::write(&src, SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let flags = sh("pkg-config", &["--cflags", "--libs", "libdpdk"])
        .map_err(|e| format!("pkg-config libdpdk (is dpdk-dev installed?): {e}"))?;
    let mut args: Vec<String> = vec![
        "-O2".into(),
        "-Wall".into(),
        "-o".into(),
        bin.display().to_string(),
        src.display().to_string(),
    ];
    args.extend(flags.split_whitespace().map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A half-written binary must not pass for a built one next time.
    let _ = std::fs::remove_file(&bin);
    sh("cc", &args).map_err(|e| format!("building ptb-paced-tx: {e}"))?;
    eprintln!("bench: built {}", bin.display());
    Ok(bin)
}

/// A running paced sender.
pub struct PacedTx {
    /// The process.
    pub proc: Proc,
    prefix: String,
}

impl PacedTx {
    /// Starts `bin` on `cpu` with the virtio-user port `vdev`, sending `rate` frames of `len`
    /// bytes a second; waits until its port started.
    pub fn start(
        bin: &Path,
        cfg: &Config,
        cpu: usize,
        vdev: String,
        rate: u64,
        len: usize,
    ) -> Result<Self, String> {
        let name = "ptb-paced";
        let prefix = file_prefix(name);
        cleanup_prefix(&prefix);
        let mut a = eal_args(cfg, name, cpu, &[vdev]);
        a.extend(["--".into(), rate.to_string(), len.to_string(), "500".into()]);
        let mut proc = Proc::spawn(name, None, bin, &a)?;
        proc.wait_line(Duration::from_secs(60), |l| {
            l.contains("ptb-paced-tx: port") && l.contains("started")
        })?;
        Ok(Self { proc, prefix })
    }
}

impl Drop for PacedTx {
    fn drop(&mut self) {
        self.proc.stop(Signal::SIGINT, Duration::from_secs(5));
        cleanup_prefix(&self.prefix);
    }
}
