//! What the daemon's tests share (`mod support;` in each): a fresh directory, a daemon started
//! in-process with its control socket, the binary exec'd and stopped with SIGTERM, frames moved
//! through a pipe by the driver, and waiting for the counters to say something.

// Each test crate uses its part of it.
#![allow(dead_code)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ptnet_backend::ctl::request;
use ptnet_backend::daemon::control::protocol::{Command, Response};
use ptnet_backend::daemon::{Daemon, DaemonConfig, DaemonStats};
use ptnet_driver::{Port, RingId};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long a control request may take.
pub const T: Duration = Duration::from_secs(5);
/// How long a test waits for the daemon to get somewhere.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the temp dir (`ptnet-TEST-TAG-PID`), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// The path, emptied but not created (the daemon creates its socket directory).
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ptnet-{}-{tag}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }

    /// The same, created.
    pub fn created(tag: &str) -> Self {
        let d = Self::new(tag);
        std::fs::create_dir_all(&d.0).unwrap();
        d
    }

    /// The vhost-user address of port `port`'s socket in this directory.
    pub fn vhost_user(&self, port: &str) -> String {
        vhost_user(&self.0.join(format!("{port}.sock")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The driver's vhost-user address of a socket.
pub fn vhost_user(sock: &Path) -> String {
    format!("vhost-user:{}", sock.display())
}

/// Polls `get` every `every` until `ok` holds of what it gives (for up to [`WAIT`]); returns
/// that.
pub fn wait_for<S: Debug>(
    what: &str,
    every: Duration,
    mut get: impl FnMut() -> S,
    ok: impl Fn(&S) -> bool,
) -> S {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = get();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#?}");
        std::thread::sleep(every);
    }
}

/// Waits until `f` holds of the in-process daemon's counters; returns them.
pub fn wait_stats(d: &Daemon, what: &str, f: impl Fn(&DaemonStats) -> bool) -> DaemonStats {
    wait_for(what, Duration::from_millis(10), || d.stats(), f)
}

/// A daemon started in-process, serving `specs` in `dir`, with its control socket at
/// `dir/ptnet-backend.ctl`.
pub fn daemon_with_control(dir: &Path, specs: &[&str]) -> (Daemon, PathBuf) {
    let mut config = DaemonConfig::in_dir(dir, specs).expect("config");
    let ctl = dir.join("ptnet-backend.ctl");
    config.control_socket = Some(ctl.clone());
    let d = Daemon::start(&config).expect("daemon");
    assert_eq!(d.control_socket(), Some(ctl.as_path()));
    (d, ctl)
}

/// The control socket's answer to `cmd`, which must be a success.
pub fn ask(ctl: &Path, cmd: Command) -> Response {
    let r = request(ctl, &cmd, T).expect("request");
    assert!(r.ok, "{r:?}");
    r
}

/// Every port's counters, asked of the control socket.
pub fn ctl_stats(ctl: &Path) -> DaemonStats {
    ask(ctl, Command::Stats { port: None })
        .stats
        .expect("stats")
}

/// Waits until `f` holds of the counters the control socket gives; returns them.
pub fn ctl_stats_until(ctl: &Path, what: &str, f: impl Fn(&DaemonStats) -> bool) -> DaemonStats {
    wait_for(what, Duration::from_millis(20), || ctl_stats(ctl), f)
}

/// Sends `n` frames of 60 bytes from `tx` to `rx` (the two ends of a pipe), each received
/// whole.
pub fn move_frames(tx: &mut Port, rx: &mut Port, n: u64) {
    let deadline = Instant::now() + WAIT;
    let (mut sent, mut got) = (0, 0);
    let mut buf = [0u8; 2048];
    while got < n {
        assert!(Instant::now() < deadline, "sent {sent}, received {got}");
        {
            let mut t = tx.tx_ring(0);
            while sent < n && t.send(&[0x5a; 60]) {
                sent += 1;
            }
            t.txsync().expect("txsync");
        }
        rx.wait(RingId::Rx(0), Some(Duration::from_millis(50)))
            .expect("wait");
        let mut r = rx.rx_ring(0);
        while let Some(len) = r.recv(&mut buf) {
            assert_eq!(len, 60);
            got += 1;
        }
        r.rxsync().expect("rxsync");
    }
}

/// The daemon binary, its socket directory `dir`.
pub fn backend(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ptnet-backend"));
    c.arg("--socket-dir").arg(dir);
    c
}

/// Waits until `path` exists (a daemon's socket, once it serves).
pub fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM to a daemon, and the time it took to exit (successfully).
pub fn terminate(mut child: Child) -> Duration {
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let st = child.wait().unwrap();
    let took = t.elapsed();
    assert!(st.success(), "{st}");
    took
}
