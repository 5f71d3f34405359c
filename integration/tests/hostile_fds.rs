//! Frontend descriptors as weapons (issue 10, rows 4-6): a frontend hands the daemon its kick and
//! interrupt descriptors, and shares their open file descriptions with it, so it can send something
//! that is not an eventfd, clear O_NONBLOCK after the daemon set it, read its own kicks, or
//! saturate its interrupt counter. None of that may block or spin a daemon thread: other tenants'
//! traffic goes on, verified packet by packet, the daemon's CPU stays low, and SIGTERM still stops
//! it in time.
//!
//! The attacker is the driver's vhost-user transport with its descriptors replaced
//! (`VhostUserTransport::send_raw_vring_fd`) before the rings start.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::Transport;
use ptnet_driver::Port;
use ptnet_integration::host::{cpu_time, finish, spawn_pkt_gen};
use ptnet_integration::{json_num, Backend, TempDir};
use ptnet_protocol::regs::ptnet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// How long SIGTERM may take to stop the daemon.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Most CPU the daemon may use in a second while only hostile frontends are attached (a spinning
/// ring thread uses about all of one).
const IDLE_CPU: Duration = Duration::from_millis(200);

/// The pid of the daemon serving the socket directory `dir` (its command line names it).
fn daemon_pid(dir: &Path) -> u32 {
    let needle = dir.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"--socket-dir" && w[1] == needle)
        {
            return pid;
        }
    }
    panic!("no ptnet-backend serving {}", dir.display());
}

/// A descriptor of the open file description behind `fd`, passed through a socket as a frontend
/// passes it to the daemon.
fn file_of(fd: RawFd) -> File {
    let (a, b) = UnixStream::pair().expect("socket pair");
    a.send_with_fd(&[0u8][..], fd).expect("pass the descriptor");
    let (_, f) = b
        .recv_with_fd(&mut [0u8; 1])
        .expect("receive the descriptor");
    f.expect("a descriptor came")
}

/// Sets or clears O_NONBLOCK on the open file description of `f`, which the daemon shares
/// (FIONBIO works on any descriptor; the standard library issues it for sockets).
fn set_nonblocking(f: &File, on: bool) {
    let s = UnixStream::from(OwnedFd::from(f.try_clone().expect("dup")));
    s.set_nonblocking(on).expect("FIONBIO");
}

/// Attaches to `sock` as a frontend that sends `fd` as the kick (`kick`) or the interrupt
/// descriptor of every ring, then starts the rings (CREATE) as a driver does. `Err` when the
/// daemon refused the descriptor (it then closes the connection) or the port did not start.
fn attach_with(sock: &Path, kick: bool, fd: &File) -> Result<Port, String> {
    let mut t = VhostUserTransport::open(sock).map_err(|e| e.to_string())?;
    let n = t.read_reg(ptnet::NUM_TX_RINGS).map_err(|e| e.to_string())?
        + t.read_reg(ptnet::NUM_RX_RINGS).map_err(|e| e.to_string())?;
    for r in 0..n {
        match t.send_raw_vring_fd(r, kick, fd.as_fd()) {
            Ok(true) => {}
            Ok(false) => return Err(format!("the daemon refused the descriptor of ring {r}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Port::attach(Box::new(t)).map_err(|e| e.to_string())
}

/// Sends SIGTERM and waits up to [`STOP_LIMIT`] for the daemon to exit (a zombie, or gone: the
/// [`Backend`] reaps it when it drops). How long it took, `None` when it did not stop.
fn stop_time(pid: u32) -> Option<Duration> {
    let t0 = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    while t0.elapsed() < STOP_LIMIT {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        if matches!(state, None | Some("Z")) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Does a ring thread of `port` (threads are named `<port>-tx0`, `<port>-rx1`...) sleep in
/// `read(2)` right now?
fn ring_thread_in_read(pid: u32, port: &str) -> bool {
    let read_nr = if cfg!(target_arch = "aarch64") {
        "63"
    } else {
        "0"
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let sys = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        comm.starts_with(&format!("{port}-")) && sys.split_whitespace().next() == Some(read_nr)
    })
}

/// `count` packets from a tx pkt-gen on `tx` to an rx pkt-gen on `rx` at 100 kpps; asserts every
/// one arrived, in order and intact.
fn verified_traffic(b: &Backend, tx: &str, rx: &str, count: u64) {
    let n = count.to_string();
    let (rxi, txi) = (b.interface(rx), b.interface(tx));
    let rxp = spawn_pkt_gen(&[
        "-i",
        &rxi,
        "-f",
        "rx",
        "-n",
        &n,
        "--timeout",
        "10",
        "--json",
    ])
    .expect("rx starts");
    std::thread::sleep(Duration::from_millis(500));
    let txp = spawn_pkt_gen(&[
        "-i",
        &txi,
        "-f",
        "tx",
        "-n",
        &n,
        "-l",
        "60",
        "-R",
        "100000",
        "--timeout",
        "10",
        "--json",
    ])
    .expect("tx starts");
    let tx_out = finish(txp, Duration::from_secs(30));
    let rx_out = finish(rxp, Duration::from_secs(30));
    let summary = rx_out.last_line().unwrap_or_default().to_string();
    let field = |k: &str| json_num(&summary, k).map(|v| v as u64);
    assert!(
        rx_out.success()
            && field("packets") == Some(count)
            && field("errors") == Some(0)
            && field("lost") == Some(0)
            && field("out_of_order") == Some(0),
        "{tx} -> {rx}: not every packet arrived verified\nrx: {summary}\n{}\ntx: {}\n{}\ndaemon:\n{}",
        rx_out.stderr,
        tx_out.last_line().unwrap_or_default(),
        tx_out.stderr,
        b.log_text()
    );
}

/// Ports of the interrupt and kick tests: two tenants with traffic, the attacker's port.
const PORTS: [&str; 3] = [
    "vale0:1@conf:slots=4096",
    "vale0:2@conf:slots=4096",
    "vale0:3",
];

/// Row 4: the attacker's interrupt descriptor is `call`. VALE floods the tenants' broadcast frames
/// to it, so the tenant's TX thread runs the attacker's RX pass and raises its interrupt (direct
/// delivery): that write must not block, or the tenant's traffic stops and SIGTERM hangs.
fn interrupt_descriptor_holds_no_one(tag: &str, call: &File) {
    let dir = TempDir::new(tag).expect("temp dir");
    let b = Backend::start(dir.path(), &PORTS, &[]).expect("ptnet-backend starts");
    let pid = daemon_pid(dir.path());
    let attacker = attach_with(&b.socket("vale0:3"), false, call);
    // Whatever O_NONBLOCK the daemon set on the description, the attacker clears it again.
    set_nonblocking(call, false);
    eprintln!(
        "{tag}: attacker {}",
        attacker
            .as_ref()
            .map_or_else(|e| e.clone(), |_| "attached".into())
    );
    verified_traffic(&b, "vale0:1", "vale0:2", 100_000);
    let took = stop_time(pid);
    assert!(
        took.is_some(),
        "{tag}: SIGTERM did not stop the daemon within {STOP_LIMIT:?}\n{}",
        b.log_text()
    );
    eprintln!("{tag}: stopped in {took:?}");
    drop(attacker);
}

#[test]
fn a_full_blocking_pipe_as_interrupt_descriptor_holds_no_tenant() {
    let (r, w) = std::io::pipe().expect("pipe");
    let w = File::from(OwnedFd::from(w));
    // Fill it without blocking ourselves, then make it blocking: the next write waits for ever.
    set_nonblocking(&w, true);
    while (&w).write(&[0u8; 4096]).is_ok() {}
    set_nonblocking(&w, false);
    interrupt_descriptor_holds_no_one("hfd-pipe", &w);
    // Kept open to the end: a pipe without a reader would raise SIGPIPE instead.
    drop(r);
}

#[test]
fn a_saturated_eventfd_as_interrupt_descriptor_holds_no_tenant() {
    // Blocking, and its counter at the most it holds: a write of 1 waits until someone reads.
    let e = EventFd::new(0).expect("eventfd");
    e.write(u64::MAX - 1).expect("saturate");
    let call = file_of(e.as_raw_fd());
    interrupt_descriptor_holds_no_one("hfd-sat", &call);
    // Nothing took the counter while the daemon raised interrupts: they were dropped.
    assert_eq!(e.read().expect("counter"), u64::MAX - 1);
}

#[test]
fn a_kick_descriptor_made_blocking_and_drained_by_its_frontend_wedges_nothing() {
    let dir = TempDir::new("hfd-kick").expect("temp dir");
    let b = Backend::start(dir.path(), &PORTS, &[]).expect("ptnet-backend starts");
    let pid = daemon_pid(dir.path());
    let e = EventFd::new(0).expect("eventfd");
    let kick = file_of(e.as_raw_fd());
    let _attacker = attach_with(&b.socket("vale0:3"), true, &kick).expect("an eventfd is taken");
    // The daemon made the shared description non-blocking; the attacker undoes it and reads
    // every kick itself, racing the ring threads for each.
    set_nonblocking(&kick, false);
    let thief = kick.try_clone().expect("dup");
    std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        while (&thief).read(&mut buf).is_ok() {}
    });
    // Kick until a ring thread is seen asleep in read(2) on its kick (it then waits for a kick
    // that the attacker will never send), or for 3 s.
    let t0 = Instant::now();
    let mut caught = false;
    let mut kicks = 0u64;
    while !caught && t0.elapsed() < Duration::from_secs(3) {
        let _ = e.write(1);
        kicks += 1;
        std::thread::sleep(Duration::from_micros(200));
        caught = kicks.is_multiple_of(8) && ring_thread_in_read(pid, "vale0:3");
    }
    eprintln!(
        "{kicks} kicks in {:?}; a ring thread asleep in read(2): {caught}",
        t0.elapsed()
    );
    // The other tenants are served, and the daemon stops.
    verified_traffic(&b, "vale0:1", "vale0:2", 20_000);
    let took = stop_time(pid);
    assert!(
        took.is_some(),
        "SIGTERM did not stop the daemon within {STOP_LIMIT:?}\n{}",
        b.log_text()
    );
    // Its own port: no ring thread waits in a read that only the attacker can end.
    assert!(
        !caught,
        "a ring thread of vale0:3 sleeps in a blocking read of its kick"
    );
}

#[test]
fn kick_descriptors_that_are_not_eventfds_are_refused_and_spin_nothing() {
    let dir = TempDir::new("hfd-spin").expect("temp dir");
    let ports = [
        "vale0:1@conf:slots=4096",
        "vale0:2@conf:slots=4096",
        "vale0:3@conf:rings=4",
        "vale0:4@conf:rings=4",
    ];
    let b = Backend::start(dir.path(), &ports, &[]).expect("ptnet-backend starts");
    let pid = daemon_pid(dir.path());
    // Always readable (/dev/zero), always hung up (a pipe whose writer is gone).
    let zero = File::open("/dev/zero").expect("/dev/zero");
    let (r, w) = std::io::pipe().expect("pipe");
    drop(w);
    let hung = File::from(OwnedFd::from(r));
    let a = attach_with(&b.socket("vale0:3"), true, &zero);
    let c = attach_with(&b.socket("vale0:4"), true, &hung);
    eprintln!(
        "/dev/zero: {}; hung-up pipe: {}",
        a.as_ref().map_or_else(|e| e.clone(), |_| "attached".into()),
        c.as_ref().map_or_else(|e| e.clone(), |_| "attached".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    let t0 = cpu_time(pid).expect("daemon CPU time");
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(pid).expect("daemon CPU time") - t0;
    assert!(
        used < IDLE_CPU,
        "the daemon used {used:?} of CPU in a second with 8 rings on bad kick descriptors\n{}",
        b.log_text()
    );
    // Refused, each with its reason in the log (or, had it got through, the ring stopped).
    let log = b.log_text();
    for what in ["/dev/zero", "pipe:"] {
        assert!(
            log.lines()
                .any(|l| l.contains(what) && l.contains("not an eventfd")),
            "no refusal naming {what} in the log:\n{log}"
        );
    }
    // The tenants are served, and the daemon stops.
    verified_traffic(&b, "vale0:1", "vale0:2", 20_000);
    assert!(stop_time(pid).is_some(), "SIGTERM did not stop the daemon");
    drop((a, c));
}
