//! A hostile (or merely broken) frontend, operator or second daemon must not hold a port, wedge
//! the daemon or take its sockets (issue 10, rows 7, 9, 10, 13, 14, 15): silent and half-open
//! connections are cut and a real frontend is served within the deadline, a newer frontend takes
//! a port over from an idle one, a second daemon on the same directory exits 2 and leaves the
//! first serving, SIGTERM completes with the socket file removed, PORT integers that overflow are
//! refused, sockets are private whatever the umask, and the driver's reply timeout bounds every
//! wait (a refused GET_CONFIG is an error at once, a silent daemon one after the timeout).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_integration::host::{pkt_gen, run_with_timeout, wait_deadline};
use ptnet_integration::{bins, json_num, Backend, TempDir};
use ptnet_protocol::device::CONFIG_SIZE;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tx pkt-gen of 1000 frames on `sock`: succeeds, and within `within`.
fn served_within(sock: &Path, within: Duration) {
    let t = Instant::now();
    let out = pkt_gen(
        &[
            "-i",
            &format!("vhost-user:{}", sock.display()),
            "-f",
            "tx",
            "-n",
            "1000",
        ],
        Duration::from_secs(30),
    )
    .expect("pkt-gen runs");
    assert!(out.success(), "pkt-gen not served: {out:?}");
    assert!(t.elapsed() < within, "served only after {:?}", t.elapsed());
}

#[test]
fn a_silent_connection_does_not_hold_the_port() {
    let (_d, b) = Backend::in_temp_dir("hl-silent", &["null:silent"]);
    let sock = b.socket("null:silent");
    let _silent = UnixStream::connect(&sock).unwrap();
    // The handshake deadline (5 s) cuts it; the driver waits up to 10 s for a reply.
    served_within(&sock, Duration::from_secs(10));
    assert!(b.log_text().contains("null:silent"), "{}", b.log_text());
}

#[test]
fn half_a_header_or_half_a_message_does_not_hold_the_port() {
    let (_d, b) = Backend::in_temp_dir("hl-half", &["null:half"]);
    let sock = b.socket("null:half");
    // Half a header.
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(&[1, 0, 0, 0, 1, 0]).unwrap();
    served_within(&sock, Duration::from_secs(10));
    // A whole header (GET_FEATURES) announcing a body that never comes.
    let mut partial = UnixStream::connect(&sock).unwrap();
    let mut msg = Vec::new();
    for w in [1u32, 1, 8] {
        msg.extend_from_slice(&w.to_le_bytes());
    }
    msg.extend_from_slice(&[0, 0, 0]);
    partial.write_all(&msg).unwrap();
    served_within(&sock, Duration::from_secs(10));
    drop((half, partial));
}

#[test]
fn a_newer_frontend_takes_over_from_an_idle_one() {
    let (_d, b) = Backend::in_temp_dir("hl-takeover", &["null:take"]);
    let sock = b.socket("null:take");
    // A frontend that finished its set-up and then went quiet while still connected (a frozen
    // QEMU, a leaked descriptor): the next frontend gets the port within the idle timeout.
    let old = VhostUserTransport::open(&sock).expect("first frontend attaches");
    served_within(&sock, Duration::from_secs(10));
    assert!(
        b.log_text().contains("takes the port over"),
        "{}",
        b.log_text()
    );
    drop(old);
}

#[test]
fn a_frontend_whose_rings_run_keeps_its_port() {
    let (_d, b) = Backend::in_temp_dir("hl-keep", &["netmap:hk{1", "netmap:hk}1"]);
    let sock = b.socket("netmap:hk{1");
    // A guest that started its rings (CREATE) and then talks only through shared memory, as
    // QEMU does: a second frontend must not take its port.
    let mut running = ptnet_driver::Port::open(&format!("vhost-user:{}", sock.display()))
        .expect("first frontend attaches");
    let out = pkt_gen(
        &[
            "-i",
            &format!("vhost-user:{}", sock.display()),
            "-f",
            "tx",
            "-n",
            "10",
        ],
        Duration::from_secs(30),
    )
    .expect("pkt-gen runs");
    assert!(
        !out.success(),
        "a second frontend took a running port: {out:?}"
    );
    assert!(
        b.log_text().contains("refusing a second frontend"),
        "{}",
        b.log_text()
    );
    // The first one still works: its frames reach the other end.
    let mut tx = running.tx_ring(0);
    assert!(tx.send(&[0xff; 60]));
    tx.txsync().unwrap();
    let rx = pkt_gen(
        &[
            "-i",
            &b.interface("netmap:hk}1"),
            "-f",
            "rx",
            "-n",
            "1",
            "--timeout",
            "5",
            "--json",
        ],
        Duration::from_secs(30),
    )
    .expect("rx runs");
    // (Not a pkt-gen test frame: counted as received, with a payload error.)
    let packets = rx.last_line().and_then(|l| json_num(l, "packets"));
    assert_eq!(packets, Some(1.0), "{rx:?}\n{}", b.log_text());
}

#[test]
fn a_second_daemon_on_the_same_dir_exits_2_and_the_first_keeps_serving() {
    let (d, b) = Backend::in_temp_dir("hl-second", &["null:one", "vale7:a"]);
    let out = run_with_timeout(
        Command::new(bins().unwrap().backend)
            .arg("--socket-dir")
            .arg(d.path())
            .args(["null:one", "vale7:a"]),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("null:one.sock") && out.stderr.contains("in use"),
        "{}",
        out.stderr
    );
    assert!(b.socket("null:one").exists() && b.socket("vale7:a").exists());
    served_within(&b.socket("null:one"), Duration::from_secs(10));
    served_within(&b.socket("vale7:a"), Duration::from_secs(10));
}

/// Starts the daemon on `dir` with `args` under `umask`, and waits for `sock`.
fn spawn_daemon(umask: &str, args: &[&str], sock: &Path, log: &Path) -> std::process::Child {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(bins().unwrap().backend)
        .args(args)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sock.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn sigterm_within(child: &mut std::process::Child, within: Duration) {
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_deadline(child, t + within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM did not complete within {within:?}: {status:?}"
    );
}

#[test]
fn sigterm_completes_when_the_socket_file_was_removed() {
    let d = TempDir::new("hl-rmsock").unwrap();
    let dir = d.path().join("s");
    let sock = dir.join("null:gone.sock");
    let log = d.path().join("log");
    let dir_s = dir.to_str().unwrap();
    let mut child = spawn_daemon("022", &["--socket-dir", dir_s, "null:gone"], &sock, &log);
    // A connected frontend too: stopping must end it as well.
    let t = VhostUserTransport::open(&sock).expect("attach");
    std::fs::remove_file(&sock).unwrap();
    sigterm_within(&mut child, Duration::from_secs(5));
    drop(t);
    // And a socket of someone else's at the path is not removed by the one that stops.
    let mut child = spawn_daemon("022", &["--socket-dir", dir_s, "null:gone"], &sock, &log);
    std::fs::remove_file(&sock).unwrap();
    let other = UnixListener::bind(&sock).unwrap();
    sigterm_within(&mut child, Duration::from_secs(5));
    assert!(sock.exists(), "the daemon removed a socket it did not bind");
    drop(other);
}

#[test]
fn ring_counts_that_overflow_exit_2_with_a_message() {
    let d = TempDir::new("hl-overflow").unwrap();
    for bad in [
        "vale0:1@conf:tx-rings=4294967295,rx-rings=1",
        "vale0:1@conf:tx-rings=2147483648,rx-rings=2147483648",
        "xdp:eth0@4294967295@conf:rings=2",
    ] {
        let out = run_with_timeout(
            Command::new(bins().unwrap().backend)
                .arg("--socket-dir")
                .arg(d.path())
                .arg(bad),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{bad}: {out:?}");
        assert!(out.stderr.contains(&format!("'{bad}'")), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn sockets_are_private_whatever_the_umask() {
    let d = TempDir::new("hl-umask").unwrap();
    let log = d.path().join("log");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // Default: socket 0600, a directory the daemon creates 0700.
    let dir = d.path().join("private");
    let sock = dir.join("null:m.sock");
    let mut child = spawn_daemon(
        "000",
        &["--socket-dir", dir.to_str().unwrap(), "null:m"],
        &sock,
        &log,
    );
    assert_eq!(mode(&sock), 0o600, "socket");
    assert_eq!(mode(&dir), 0o700, "socket dir");
    sigterm_within(&mut child, Duration::from_secs(5));
    // --socket-group: 0660 with that group, the directory 0710 with it.
    let dir = d.path().join("group");
    let sock = dir.join("null:g.sock");
    let mut child = spawn_daemon(
        "000",
        &[
            "--socket-dir",
            dir.to_str().unwrap(),
            "--socket-group",
            "root",
            "null:g",
        ],
        &sock,
        &log,
    );
    assert_eq!(mode(&sock), 0o660, "socket with a group");
    assert_eq!(std::fs::metadata(&sock).unwrap().gid(), 0);
    assert_eq!(mode(&dir), 0o710, "socket dir with a group");
    sigterm_within(&mut child, Duration::from_secs(5));
    // --socket PATH too.
    let sock = d.path().join("single.sock");
    let mut child = spawn_daemon(
        "000",
        &["--socket", sock.to_str().unwrap(), "null:s"],
        &sock,
        &log,
    );
    assert_eq!(mode(&sock), 0o600, "--socket");
    sigterm_within(&mut child, Duration::from_secs(5));
}

#[test]
fn a_refused_get_config_is_an_error_at_once_and_the_connection_goes_on() {
    let (_d, b) = Backend::in_temp_dir("hl-getconfig", &["null:cfg"]);
    let mut t = VhostUserTransport::open(&b.socket("null:cfg")).expect("attach");
    let start = Instant::now();
    let e = t
        .read_config(CONFIG_SIZE as u32 - 4, 8)
        .expect_err("GET_CONFIG past the config space is refused");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("refused"), "{e}");
    // The daemon answered correctly: the same connection goes on.
    assert_eq!(t.read_config(0, 4).expect("GET_CONFIG").len(), 4);
}

#[test]
fn a_silent_daemon_is_an_error_within_the_reply_timeout() {
    let d = TempDir::new("hl-mute").unwrap();
    let sock = d.path().join("mute.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Accepts, reads everything, never answers.
    let _mute = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let start = Instant::now();
    let e = VhostUserTransport::open(&sock)
        .err()
        .expect("a daemon that never answers");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("no reply"), "{e}");
}
