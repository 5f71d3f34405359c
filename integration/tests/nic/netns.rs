//! Network namespaces, the daemon inside one, and what the tests measure on it.

use nix::sched::{setns, CloneFlags};
use ptnet_driver::Port;
use ptnet_integration::{bins, Backend, PortCounters, TempDir};
use std::fs::File;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Numbers the namespaces of this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `args` (a program and its arguments), which must succeed.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name (`ip netns`).
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "ptnet-test-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        sh(&v);
    }

    /// Runs `f` in a thread that entered this namespace (sockets it opens stay in it).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // Changes only this thread's network namespace; the thread ends with the closure.
                if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
                    panic!("setns {path}: {}", std::io::Error::from(e));
                }
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", dev])
            .output()
            .expect("ip link show");
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let m = s
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC for {dev}: {s}"));
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(m.split(':')) {
            *b = u8::from_str_radix(p, 16).unwrap();
        }
        mac
    }

    pub fn wait_for_link(&self, dev: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = Command::new("ip")
                .args(["-n", &self.name, "link", "show", dev])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "{dev} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The daemon serving one port inside a namespace (the library's [`Backend`] under
/// `ip netns exec`), stopped with SIGTERM when dropped.
pub struct Daemon {
    b: Backend,
    port: String,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `ptnet-backend PORT` in `ns` and waits for its socket.
    pub fn start(ns: &Netns, port: &str) -> Self {
        let dir = TempDir::new(&ns.name).expect("temp dir");
        let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
        let b = Backend::start_under(&wrapper, dir.path(), &[port], &[])
            .unwrap_or_else(|e| panic!("{port}: {e}"));
        Self {
            b,
            port: port.to_string(),
            _dir: dir,
        }
    }

    /// What a driver opens to attach: `vhost-user:<socket>`.
    pub fn interface(&self) -> String {
        self.b.interface(&self.port)
    }

    /// Attaches a driver.
    pub fn open(&self) -> Port {
        Port::open(&self.interface()).expect("driver attaches")
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.b.pid()
    }

    /// Is it still running?
    pub fn running(&mut self) -> bool {
        self.b.running()
    }

    /// Sends it `sig` without waiting for it.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.b.signal(sig)
    }

    /// Stops it (SIGTERM) and returns how it exited (`None`: it had to be killed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.b.terminate(Duration::from_secs(5))
    }

    /// Stops it (SIGTERM) and returns the counters it logged last (at exit), with its log for
    /// messages.
    pub fn stop(mut self) -> (PortCounters, String) {
        self.terminate();
        let log = self.b.log_text();
        // The daemon names a port without its `@conf:` part.
        let name = self.port.split("@conf:").next().unwrap_or(&self.port);
        let c = PortCounters::last(&log, Some(name))
            .unwrap_or_else(|| panic!("no counters for {} in the daemon log:\n{log}", self.port));
        (c, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A clean stop: the daemon removes what it set up (its tap, its XDP program).
        self.b.stop();
    }
}

/// Runs `ptnet-backend PORT` in `ns` to completion (it is expected to refuse the port).
pub fn run_daemon_in(ns: &Netns, port: &str) -> Output {
    let backend = bins().expect("ptnet-backend").backend;
    let dir = TempDir::new(&format!("{}-refused", ns.name)).expect("temp dir");
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(backend)
        .arg("--socket-dir")
        .arg(dir.path())
        .arg(port)
        .output()
        .expect("run ptnet-backend")
}

/// `ptnet-backend PORT` in a new namespace exits with status 2, its message naming every one
/// of `needles`.
pub fn daemon_refuses(port: &str, needles: &[&str]) {
    daemon_refuses_in(&Netns::new("bad"), port, needles)
}

/// [`daemon_refuses`] in `ns`.
pub fn daemon_refuses_in(ns: &Netns, port: &str, needles: &[&str]) {
    let out = run_daemon_in(ns, port);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{port}: {err}");
    for n in needles {
        assert!(err.contains(n), "{port}: '{n}' not in: {err}");
    }
}

/// CPU time (user + system, in clock ticks: 100 a second) of the daemon's thread named `thread`,
/// or of the whole daemon.
pub fn cpu_ticks(d: &Daemon, thread: Option<&str>) -> u64 {
    let pid = d.pid();
    let stat = match thread {
        None => format!("/proc/{pid}/stat"),
        Some(name) => {
            let task = std::fs::read_dir(format!("/proc/{pid}/task"))
                .expect("daemon tasks")
                .filter_map(|e| e.ok())
                .find(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
                .unwrap_or_else(|| panic!("no daemon thread named {name}"));
            task.path().join("stat").display().to_string()
        }
    };
    let s = std::fs::read_to_string(&stat).unwrap_or_else(|e| panic!("{stat}: {e}"));
    // Fields after the command name (which ends with the last ')'): state is field 3, utime 14,
    // stime 15.
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 1..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU the daemon (or its thread `thread`) uses over the next second: far below a second when
/// its rings sleep, about a whole one when one spins.
pub fn cpu_over_a_second(d: &Daemon, thread: Option<&str>) -> Duration {
    let t0 = cpu_ticks(d, thread);
    std::thread::sleep(Duration::from_secs(1));
    Duration::from_millis((cpu_ticks(d, thread) - t0) * 10)
}

/// Most CPU a sleeping daemon may use in a second (a spinning ring uses about all of it).
pub const IDLE_CPU: Duration = Duration::from_millis(200);
