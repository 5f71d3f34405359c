//! Socket activation and QEMU's backend conventions, through the binary: the test binds the
//! listening sockets itself and execs the daemon with them, as systemd does (descriptors 3, 4,
//! ... and `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`) or as a VMM does with `--fd`; frontends
//! connect and move frames; SIGTERM stops the daemon at once with frontends attached, leaving
//! the inherited sockets in place for the next start; descriptors that are not listening unix
//! stream sockets, or serve no port, are exit status 2 naming them.

mod support;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use ptnet_backend::daemon::FrontendState;
use ptnet_driver::Port;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{ctl_stats_until as stats_until, move_frames, terminate, TempDir, T};

/// The daemon, exec'd by bash with `fds` as its descriptors 3, 4, ... (and, with `listen`,
/// the `LISTEN_*` variables naming them, `LISTEN_PID` being the daemon's own pid).
fn command(fds: &[BorrowedFd<'_>], listen: Option<&str>, args: &[&str]) -> Command {
    let mut script = String::new();
    // Out of the way first (an original may be 3 or 4), then into place.
    for (i, fd) in fds.iter().enumerate() {
        script += &format!("exec {}<&{}; ", 50 + i, fd.as_raw_fd());
    }
    for fd in fds {
        script += &format!("exec {}<&-; ", fd.as_raw_fd());
    }
    for i in 0..fds.len() {
        script += &format!("exec {}<&{} {}<&-; ", 3 + i, 50 + i, 50 + i);
    }
    if let Some(names) = listen {
        script += &format!(
            "export LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={names}; ",
            fds.len()
        );
    }
    script += r#"exec "$0" "$@""#;
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ptnet-backend"))
        .args(args);
    c
}

/// Runs `f` (which starts a child) with `fds` inheritable, one test at a time: no other test's
/// child inherits them meanwhile (and finds a listening socket where it expects none).
fn inheriting<R>(fds: &[BorrowedFd<'_>], f: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for fd in fds {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    }
    let r = f();
    for fd in fds {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    r
}

fn spawn(fds: &[BorrowedFd<'_>], listen: Option<&str>, args: &[&str]) -> Child {
    let mut c = command(fds, listen, args);
    inheriting(fds, || c.stderr(Stdio::null()).spawn().expect("bash"))
}

fn run(fds: &[BorrowedFd<'_>], listen: Option<&str>, args: &[&str]) -> Output {
    let mut c = command(fds, listen, args);
    inheriting(fds, || c.output().expect("bash"))
}

#[test]
fn systemd_sockets_serve_the_ports_and_sigterm_stops_at_once() {
    let dir = TempDir::created("systemd");
    let d = dir.0.to_str().unwrap();
    let paths = [
        dir.0.join("netmap:act{0.sock"),
        dir.0.join("netmap:act}0.sock"),
        dir.0.join("ptnet-backend.ctl"),
    ];
    let listeners: Vec<UnixListener> = paths
        .iter()
        .map(|p| UnixListener::bind(p).unwrap())
        .collect();
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
    let args = [
        "--socket-dir",
        d,
        "--netmap",
        "user",
        "netmap:act{0",
        "netmap:act}0",
    ];
    let sock = |i: usize| format!("vhost-user:{}", paths[i].display());
    for round in 1..=2u64 {
        // The second round is systemd restarting the service: the same sockets, still bound.
        let child = spawn(&fds, Some("a:b:control"), &args);
        let mut tx = Port::open(&sock(0)).expect("tx end");
        let mut rx = Port::open(&sock(1)).expect("rx end");
        move_frames(&mut tx, &mut rx, 200);
        let s = stats_until(&paths[2], "200 frames counted", |s| {
            s.ports[1].rx_packets == 200
        });
        assert_eq!((s.ports[0].tx_packets, s.ports[0].tx_bytes), (200, 12000));
        assert!(
            s.ports.iter().all(|p| p.frontend == FrontendState::Running),
            "{s:?}"
        );
        assert_eq!(s.ports[0].socket, paths[0]);
        // Frontends attached and running: SIGTERM stops the daemon at once.
        let took = terminate(child);
        assert!(
            took < Duration::from_secs(1),
            "round {round}: SIGTERM took {took:?}"
        );
        // The inherited sockets stay (the socket unit owns them); the locks are gone.
        for p in &paths {
            assert!(p.exists(), "{} removed", p.display());
            let mut lock = p.as_os_str().to_owned();
            lock.push(".lock");
            assert!(!Path::new(&lock).exists(), "{lock:?} left");
        }
        drop((tx, rx));
    }
}

#[test]
fn fd_serves_the_single_port_on_its_path() {
    let dir = TempDir::created("fd");
    let path = dir.0.join("custom-name.sock");
    let l = UnixListener::bind(&path).unwrap();
    let child = spawn(
        &[l.as_fd()],
        None,
        &["--fd", "3", "--netmap", "user", "netmap:fd{0"],
    );
    let ctl = dir.0.join("custom-name.sock.ctl");
    // The control socket is the daemon's own (PATH.ctl, as with --socket PATH).
    let deadline = Instant::now() + T;
    while UnixStream::connect(&ctl).is_err() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _p = Port::open(&format!("vhost-user:{}", path.display())).expect("frontend on --fd");
    let s = stats_until(&ctl, "running", |s| {
        s.ports[0].frontend == FrontendState::Running
    });
    assert_eq!(s.ports[0].socket, path);
    let took = terminate(child);
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert!(path.exists(), "the inherited socket was removed");
    assert!(!ctl.exists(), "the daemon's own control socket was left");
}

#[test]
fn descriptors_that_cannot_serve_are_exit_2_naming_them() {
    let dir = TempDir::created("bad");
    let d = dir.0.to_str().unwrap();
    let args = ["--socket-dir", d, "--netmap", "user", "null:bad"];
    let check = |out: Output, want: &[&str]| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in want {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
        assert!(!dir.0.join("null:bad.sock").exists(), "a port was served");
    };
    let file = std::fs::File::open("/dev/null").unwrap();
    check(
        run(&[file.as_fd()], Some("x"), &args),
        &["LISTEN_FDS descriptor 3 (\"x\")", "is not a socket"],
    );
    let (a, _b) = UnixStream::pair().unwrap();
    check(
        run(&[a.as_fd()], Some("conn"), &args),
        &["descriptor 3", "is not listening"],
    );
    let other = dir.0.join("other.sock");
    let l = UnixListener::bind(&other).unwrap();
    check(
        run(&[l.as_fd()], Some("a"), &args),
        &[
            "LISTEN_FDS descriptor 3 (\"a\")",
            "other.sock",
            "neither a port's socket",
            "null:bad.sock",
        ],
    );
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    check(
        run(&[tcp.as_fd()], None, &["--fd", "3", "null:bad"]),
        &["--fd 3", "is not a unix domain socket"],
    );
    check(
        run(&[l.as_fd()], None, &["--fd", "3", "null:bad", "null:bad2"]),
        &["--fd serves a single PORT (got 2)"],
    );
    check(
        run(&[], None, &["--fd", "3", "null:bad"]),
        &["--fd 3", "is not an open file descriptor"],
    );
    check(
        run(&[], None, &["--fd", "1", "null:bad"]),
        &["--fd 1", "standard streams"],
    );
    // LISTEN_FDS of another process (LISTEN_PID not ours) is not the daemon's: ignored.
    let mut c = command(&[], None, &args);
    c.env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .stderr(Stdio::null());
    let child = inheriting(&[], || c.spawn().unwrap());
    let sock = dir.0.join("null:bad.sock");
    let deadline = Instant::now() + T;
    while !sock.exists() {
        assert!(Instant::now() < deadline, "did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    terminate(child);
    assert!(!sock.exists(), "its own socket is removed at exit");
}
