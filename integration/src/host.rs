//! Host-side processes: building and locating binaries, the daemon, host pkt-gen runs.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration crate lives in the workspace")
        .to_path_buf()
}

/// The cache the build scripts share (`PTNET_CACHE_DIR`, default `~/.cache/ptnet`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("PTNET_CACHE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/ptnet"),
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/ptnet-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ptnet-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Output of a process run to completion (or killed at its deadline).
#[derive(Debug)]
pub struct RunOutput {
    /// Exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl RunOutput {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The last non-empty line of stdout.
    pub fn last_line(&self) -> Option<&str> {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty())
    }
}

fn reader<R: Read + Send + 'static>(r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            s.push_str(&String::from_utf8_lossy(&buf));
            buf.clear();
        }
        s
    })
}

/// Runs `cmd` with captured stdout/stderr; kills it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::io::Result<RunOutput> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    let status = wait_deadline(&mut child, Instant::now() + timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(RunOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child` until `deadline`; `None` if it is still running then.
pub fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a build script whose last stdout line is the artifact path; its stderr goes to ours.
pub fn run_build_script(script: &Path, timeout: Duration) -> Result<PathBuf, String> {
    if !script.exists() {
        return Err(format!("{} is missing", script.display()));
    }
    let mut child = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let out = reader(child.stdout.take().expect("piped"));
    let status = wait_deadline(&mut child, Instant::now() + timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = out.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("{} failed: {s}", script.display())),
        None => return Err(format!("{} timed out after {timeout:?}", script.display())),
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| format!("{} printed nothing", script.display()))?;
    let p = PathBuf::from(last.trim());
    if !p.exists() {
        return Err(format!(
            "{} printed {}, which does not exist",
            script.display(),
            p.display()
        ));
    }
    Ok(p)
}

/// The workspace's host binaries.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `ptnet-backend`.
    pub backend: PathBuf,
    /// `ptnet-pkt-gen` for the host (dynamically linked is fine).
    pub pkt_gen: PathBuf,
    /// `ptnet-bridge` for the host.
    pub bridge: PathBuf,
}

/// Builds (once per process) and locates `ptnet-backend`, `ptnet-pkt-gen` and `ptnet-bridge`.
///
/// Runs `cargo build -p ptnet-backend -p ptnet-driver-tools --bins --message-format=json` with the cargo
/// that runs the tests (`$CARGO`), so the paths are the ones cargo itself reports, whatever the
/// target directory. `PTNET_BACKEND`, `PTNET_PKTGEN_HOST` and `PTNET_BRIDGE_HOST` override (with the
/// first two set and not the third, the `ptnet-bridge` next to that pkt-gen). `PTNET_HOST_PROFILE=release`
/// builds optimised binaries.
pub fn bins() -> Result<Bins, String> {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(build_bins).clone()
}

fn build_bins() -> Result<Bins, String> {
    let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if let (Some(backend), Some(pkt_gen)) =
        (env_path("PTNET_BACKEND"), env_path("PTNET_PKTGEN_HOST"))
    {
        let bridge =
            env_path("PTNET_BRIDGE_HOST").unwrap_or_else(|| pkt_gen.with_file_name("ptnet-bridge"));
        return Ok(Bins {
            backend,
            pkt_gen,
            bridge,
        });
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "ptnet-backend",
        "-p",
        "ptnet-driver-tools",
        "--bins",
        "--message-format=json",
    ]);
    if std::env::var("PTNET_HOST_PROFILE").is_ok_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(1200))
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.success() {
        return Err(format!(
            "cargo build of the host binaries failed:\n{}",
            out.stderr
        ));
    }
    let found = |name: &str| -> Option<PathBuf> {
        out.stdout
            .lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
            .filter_map(|l| {
                let key = "\"executable\":\"";
                let s = l.find(key)? + key.len();
                let e = l[s..].find('"')?;
                Some(PathBuf::from(&l[s..s + e]))
            })
            .find(|p| p.file_name().is_some_and(|f| f == name))
    };
    let backend = env_path("PTNET_BACKEND")
        .or_else(|| found("ptnet-backend"))
        .ok_or("cargo did not report a ptnet-backend executable")?;
    let pkt_gen = env_path("PTNET_PKTGEN_HOST")
        .or_else(|| found("ptnet-pkt-gen"))
        .ok_or("cargo did not report a ptnet-pkt-gen executable")?;
    let bridge = env_path("PTNET_BRIDGE_HOST")
        .or_else(|| found("ptnet-bridge"))
        .ok_or("cargo did not report a ptnet-bridge executable")?;
    Ok(Bins {
        backend,
        pkt_gen,
        bridge,
    })
}

/// A running `ptnet-backend`, killed on drop. Its stderr goes to `log`.
#[derive(Debug)]
pub struct Backend {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    ports: Vec<String>,
    extra: Vec<String>,
    bin: PathBuf,
    /// A command the daemon runs under (`ip netns exec NS`), which must exec it (same pid).
    wrapper: Vec<String>,
}

impl Backend {
    /// Starts `ptnet-backend --socket-dir DIR EXTRA... PORTS...` and waits for every socket.
    pub fn start(dir: &Path, ports: &[&str], extra: &[&str]) -> Result<Self, String> {
        Self::start_under(&[], dir, ports, extra)
    }

    /// [`Backend::start`] under `wrapper`, a command that execs the daemon in place (so its pid
    /// is the daemon's), such as `ip netns exec NS`.
    pub fn start_under(
        wrapper: &[&str],
        dir: &Path,
        ports: &[&str],
        extra: &[&str],
    ) -> Result<Self, String> {
        let bins = bins()?;
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let mut b = Backend {
            child: None,
            dir: dir.to_path_buf(),
            log: dir.join("backend.log"),
            ports: owned(ports),
            extra: owned(extra),
            bin: bins.backend,
            wrapper: owned(wrapper),
        };
        b.spawn()?;
        Ok(b)
    }

    /// The command that starts the daemon: [`Backend::start_under`]'s wrapper, then the binary.
    fn command(&self) -> Command {
        match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        }
    }

    /// `--stats-format json` unless the caller chose a format: the counters tests read
    /// ([`crate::stats::PortCounters`]) then come as JSON lines.
    fn stats_format(&self) -> &'static [&'static str] {
        if self.extra.iter().any(|a| a.starts_with("--stats-format")) {
            &[]
        } else {
            &["--stats-format", "json"]
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        for p in &self.ports {
            let _ = std::fs::remove_file(self.socket(p));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = self
            .command()
            .arg("--socket-dir")
            .arg(&self.dir)
            .args(self.stats_format())
            .args(&self.extra)
            .args(&self.ports)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        // Generous: a daemon serving many ports (ptnet-soak's 64) on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        // The control socket is bound after the ports': ptnet-ctl run at once must find it.
        let control = self.control_socket();
        loop {
            let up = self.ports.iter().all(|p| self.socket(p).exists())
                && control.as_ref().is_none_or(|c| c.exists());
            if up {
                return Ok(());
            }
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("ptnet-backend exited ({s}):\n{}", self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ptnet-backend sockets did not appear:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control socket the daemon serves: `DIR/ptnet-backend.ctl` unless the extra flags
    /// name another (`--control-socket PATH`) or none (`none`).
    fn control_socket(&self) -> Option<PathBuf> {
        let named = self.extra.iter().enumerate().find_map(|(i, a)| {
            if a == "--control-socket" {
                self.extra.get(i + 1).cloned()
            } else {
                a.strip_prefix("--control-socket=").map(str::to_string)
            }
        });
        match named {
            Some(p) if p == "none" => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(self.dir.join("ptnet-backend.ctl")),
        }
    }

    /// Starts `ptnet-backend` serving `ports` in a new temporary directory named after `tag`
    /// (removed when the returned [`TempDir`] drops).
    pub fn in_temp_dir(tag: &str, ports: &[&str]) -> (TempDir, Backend) {
        let dir = TempDir::new(tag).expect("temp dir");
        let b = Backend::start(dir.path(), ports, &[]).expect("ptnet-backend starts");
        (dir, b)
    }

    /// What a driver opens to attach to `port`: `vhost-user:<socket>`.
    pub fn interface(&self, port: &str) -> String {
        format!("vhost-user:{}", self.socket(port).display())
    }

    /// Socket path of `port` (`DIR/<port without @conf>.sock`).
    pub fn socket(&self, port: &str) -> PathBuf {
        let name = port.split("@conf:").next().unwrap_or(port);
        self.dir.join(format!("{name}.sock"))
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGTERM (then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }

    /// Sends SIGTERM and waits up to `timeout` for it to exit; returns how it exited, or `None`
    /// when it had to be killed (or was not running).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // The pid of a child we own and have not reaped.
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let status = wait_deadline(&mut c, Instant::now() + timeout);
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    /// Sends `sig` (SIGUSR1: log the counters) to the running daemon.
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            // The pid of a child we own and have not reaped.
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Its pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kills and starts it again with the same arguments.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// Is it still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a host `ptnet-pkt-gen` with `args` to completion (killed after `timeout`).
pub fn pkt_gen(args: &[&str], timeout: Duration) -> Result<RunOutput, String> {
    let b = bins()?;
    run_with_timeout(Command::new(&b.pkt_gen).args(args), timeout)
        .map_err(|e| format!("running {}: {e}", b.pkt_gen.display()))
}

/// Starts a host `ptnet-pkt-gen` in the background; collect it with [`finish`].
pub fn spawn_pkt_gen(args: &[&str]) -> Result<Spawned, String> {
    let b = bins()?;
    let mut child = Command::new(&b.pkt_gen)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", b.pkt_gen.display()))?;
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    Ok(Spawned {
        child,
        out: Some(out),
        err: Some(err),
    })
}

/// Starts a host `ptnet-bridge` in the background, its stderr going to `stderr_log` (watch it
/// with [`wait_for_text`]: the bridge prints `ptnet-bridge: ready` once both ports are open);
/// collect it with [`finish`] (stop it first with [`Spawned::terminate`] if it runs without
/// `--count` / `--timeout-ms`). The [`RunOutput`]'s `stderr` is then empty: read the log.
pub fn spawn_bridge(args: &[&str], stderr_log: &Path) -> Result<Spawned, String> {
    let b = bins()?;
    let log =
        std::fs::File::create(stderr_log).map_err(|e| format!("{}: {e}", stderr_log.display()))?;
    let mut child = Command::new(&b.bridge)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("running {}: {e}", b.bridge.display()))?;
    let out = reader(child.stdout.take().expect("piped"));
    Ok(Spawned {
        child,
        out: Some(out),
        err: None,
    })
}

/// Waits until the file at `path` contains `needle` (true) or `timeout` passes (false).
pub fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background process with captured output, killed on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

/// CPU time (user + system) the process `pid` has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz.max(1)))
}

/// Waits for a [`Spawned`] process until `timeout`, then kills it; returns its output.
pub fn finish(mut s: Spawned, timeout: Duration) -> RunOutput {
    let status = wait_deadline(&mut s.child, Instant::now() + timeout);
    if status.is_none() {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    RunOutput {
        status,
        stdout: s.out.take().and_then(|h| h.join().ok()).unwrap_or_default(),
        stderr: s.err.take().and_then(|h| h.join().ok()).unwrap_or_default(),
    }
}

impl Spawned {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a clean stop for pkt-gen and the bridge: they print their summary).
    pub fn terminate(&self) {
        // The pid of a child we own and have not reaped (reaping needs `&mut`).
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
