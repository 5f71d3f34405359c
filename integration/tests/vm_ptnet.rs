//! End to end through the patched QEMU: `ptnet-backend` + `ptnet-pci` guests running the static
//! `ptnet-pkt-gen` over the pci transport (sysfs BARs, uio interrupts), under KVM where it works
//! and TCG otherwise (`PTNET_ACCEL=tcg|kvm` to choose; see `ptnet_integration::vm::Accel`).
//!
//! QEMU (`qemu-patches/build`) and the guest image (`integration/guest/build-image.sh`) are built
//! by their scripts on first use (cached); the host binaries with `cargo build` (see the crate
//! docs). A missing or failing piece fails these tests. They boot QEMU, so they are `#[ignore]`d:
//! `cargo xtask test` runs them (`-- --include-ignored`), as does
//! `cargo test -p ptnet-integration --test vm_ptnet -- --include-ignored`.
//! `PTNET_VM_LOG=1` prints every guest's serial console and QEMU log.

use ptnet_integration::host::{finish, spawn_pkt_gen, Backend, RunOutput, TempDir};
use ptnet_integration::vm::{vm_lock, Nic, Vm, VmConfig, VmResult};
use ptnet_integration::{json_num, vm_test_rate};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Packets per guest-to-guest run.
const COUNT: u64 = 100_000;
/// Transmit rate (pps) a TCG guest keeps up with on 2 busy cores, with the receiver in another
/// TCG guest. Override with PTNET_VM_RATE (0 = unlimited).
const RATE: u64 = 20_000;

fn rate() -> u64 {
    vm_test_rate(RATE)
}

/// Marker pkt-gen prints on stderr once its port is open (and the host loops started).
const READY: &str = "ptnet-pkt-gen: pci:";

fn guest(name: &str, cmd: &str, nic: Nic, timeout_s: u64) -> VmConfig {
    VmConfig {
        timeout: Duration::from_secs(timeout_s),
        ..VmConfig::new(name, cmd)
    }
    .nic(nic)
}

/// The pkt-gen summary line of a guest (the last JSON line with "mode").
fn summary(r: &VmResult) -> String {
    r.json
        .iter()
        .rev()
        .find(|l| l.contains("\"mode\""))
        .cloned()
        .unwrap_or_else(|| panic!("no pkt-gen JSON line\n{}", r.report()))
}

fn num(line: &str, key: &str) -> u64 {
    json_num(line, key).unwrap_or_else(|| panic!("no {key} in {line}")) as u64
}

/// A host pkt-gen (vhost-user transport) sending `n` packets to `port` at `rate` pps in bursts of
/// 32; `extra`: more options.
fn host_tx(port: &str, n: u64, rate: u64, extra: &[&str], timeout: Duration) -> RunOutput {
    let (n, rate) = (n.to_string(), rate.to_string());
    let mut args = vec!["-i", port, "-f", "tx", "-n", &n, "-R", &rate, "-b", "32"];
    args.extend_from_slice(extra);
    ptnet_integration::host::pkt_gen(&args, timeout).unwrap()
}

/// Waits up to `timeout` for the guest's console to show READY `n` times (the `n`th pkt-gen has
/// opened its port); false if it does not.
fn wait_for_ready(vm: &Vm, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while vm.serial().matches(READY).count() < n {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// For the daemon restart tests: under the VM lock, a daemon serving `ports` and a guest named
/// `tag` running `cmd` on the first one, its QEMU reconnecting every 500 ms; returned once the
/// guest's pkt-gen has opened the port, with the second port's address for a host pkt-gen.
fn guest_on_restartable_daemon(
    tag: &str,
    ports: &[&str],
    cmd: &str,
    timeout_s: u64,
) -> (MutexGuard<'static, ()>, TempDir, Backend, String, Vm) {
    let g = vm_lock();
    let dir = TempDir::new(tag).unwrap();
    let be = Backend::start(dir.path(), ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let host_port = be.interface(ports[1]);
    let mut nic = Nic::new(be.socket(ports[0]));
    nic.reconnect_ms = 500;
    let mut vm = Vm::start(&guest(tag, cmd, nic, timeout_s)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        vm.wait_for(READY, Duration::from_secs(120)),
        "{}",
        vm.serial()
    );
    (g, dir, be, host_port, vm)
}

/// Receiver guest on `rx_sock`, transmitter guest on `tx_sock`; asserts a lossless, clean run.
fn guest_to_guest(tag: &str, ports: &[&str]) {
    let _g = vm_lock();
    let dir = TempDir::new(tag).unwrap();
    let be = Backend::start(dir.path(), ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let rx_cmd = format!("ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {COUNT} --timeout 60 --json");
    let tx_cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet0 -f tx -n {COUNT} -R {} -b 64 --timeout 30 --json",
        rate()
    );
    let mut rx = Vm::start(&guest(
        &format!("{tag}-rx"),
        &rx_cmd,
        Nic::new(be.socket(ports[0])),
        300,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    if !rx.wait_for(READY, Duration::from_secs(120)) {
        let r = rx.wait().unwrap();
        panic!(
            "receiver never opened its port\n{}\n--- backend ---\n{}",
            r.report(),
            be.log_text()
        );
    }
    let tx = Vm::start(&guest(
        &format!("{tag}-tx"),
        &tx_cmd,
        Nic::new(be.socket(ports[1])),
        300,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let tr = tx.wait().unwrap();
    let rr = rx.wait().unwrap();
    let ctx = format!(
        "--- tx ---\n{}\n--- rx ---\n{}\n--- backend ---\n{}",
        tr.report(),
        rr.report(),
        be.log_text()
    );
    assert_eq!(tr.rc, Some(0), "transmitter failed\n{ctx}");
    assert_eq!(rr.rc, Some(0), "receiver failed\n{ctx}");
    let (t, r) = (summary(&tr), summary(&rr));
    assert_eq!(num(&t, "packets"), COUNT, "{ctx}");
    assert_eq!(num(&r, "packets"), COUNT, "{ctx}");
    assert_eq!(num(&r, "errors"), 0, "payload errors\n{ctx}");
    assert_eq!(num(&r, "lost"), 0, "{ctx}");
    eprintln!(
        "{tag}: guest tx {:.4} Mpps, guest rx {:.4} Mpps (TCG, rate limit {} pps)",
        json_num(&t, "mpps").unwrap_or(0.0),
        json_num(&r, "mpps").unwrap_or(0.0),
        rate()
    );
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_guest_to_guest_over_vale() {
    // VALE drops when a receiver falls a ring behind; a TCG guest can stall for tens of ms on a
    // busy host, so the rings get room for 200 ms at the test's rate.
    guest_to_guest(
        "vale",
        &["vale0:1@conf:slots=4096", "vale0:2@conf:slots=4096"],
    );
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_guest_to_guest_over_pipe() {
    guest_to_guest("pipe", &["netmap:p{1", "netmap:p}1"]);
}

/// Two TX and two RX rings per port: ring numbering, kicks and the shared INTx over several rings.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_guest_to_guest_multiring_pipe() {
    guest_to_guest(
        "mpipe",
        &["netmap:q{1@conf:rings=2", "netmap:q}1@conf:rings=2"],
    );
}

/// A guest and a host process (vhost-user transport) on one VALE switch, both directions.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_guest_and_host_process_on_vale() {
    let _g = vm_lock();
    let dir = TempDir::new("mixed").unwrap();
    let ports = ["vale1:1@conf:slots=4096", "vale1:2@conf:slots=4096"];
    let be = Backend::start(dir.path(), &ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let host_port = be.interface(ports[1]);
    let n = 20_000u64;
    // Host receives what the guest sends, then the guest receives what the host sends.
    let host_rx = spawn_pkt_gen(&[
        "-i",
        &host_port,
        "-f",
        "rx",
        "-n",
        &n.to_string(),
        "--timeout",
        "120",
        "--json",
    ])
    .unwrap();
    let cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet0 -f tx -n {n} -R {} --json || exit 1; \
         echo GUEST-RX-START; ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {n} --timeout 60 --json",
        rate()
    );
    let mut vm = Vm::start(&guest("mixed", &cmd, Nic::new(be.socket(ports[0])), 300))
        .unwrap_or_else(|e| panic!("{e}"));
    let hr = finish(host_rx, Duration::from_secs(240));
    assert!(
        hr.success(),
        "host rx failed: {:?}\n{}\n{}\n--- guest ---\n{}\n--- backend ---\n{}",
        hr.status,
        hr.stdout,
        hr.stderr,
        vm.serial(),
        be.log_text()
    );
    let l = hr.last_line().unwrap_or_default().to_string();
    assert_eq!(num(&l, "packets"), n);
    assert_eq!(num(&l, "errors"), 0);
    // Guest receiver: wait until its port is open again, then send from the host.
    assert!(
        vm.wait_for("GUEST-RX-START", Duration::from_secs(60)),
        "{}",
        vm.serial()
    );
    // The second READY line is the receiver's (the first was the transmitter's).
    wait_for_ready(&vm, 2, Duration::from_secs(60));
    // VALE drops what a full ring cannot take: small bursts at a modest rate, which a TCG guest's
    // receiver keeps up with.
    let ht = host_tx(
        &host_port,
        n,
        rate() / 4,
        &["--json"],
        Duration::from_secs(120),
    );
    assert!(ht.success(), "host tx failed: {}\n{}", ht.stdout, ht.stderr);
    let r = vm.wait().unwrap();
    assert_eq!(
        r.rc,
        Some(0),
        "{}\n--- backend ---\n{}",
        r.report(),
        be.log_text()
    );
    let s = summary(&r);
    assert_eq!(num(&s, "packets"), n, "{}", r.report());
    assert_eq!(num(&s, "errors"), 0, "{}", r.report());
}

/// The daemon dies and comes back while the guest runs; QEMU reconnects (reconnect-ms) and
/// traffic flows again without a guest reboot.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_traffic_resumes_after_daemon_restart() {
    let n = 5_000u64;
    let cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {n} --timeout 60 --json || exit 1; \
         echo FIRST-DONE; sleep 1; \
         i=0; until ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {n} --timeout 90 --json; do \
           i=$((i+1)); [ $i -lt 5 ] || exit 2; sleep 2; done"
    );
    let (_g, _dir, mut be, host_port, mut vm) =
        guest_on_restartable_daemon("restart", &["vale2:1", "vale2:2"], &cmd, 400);
    let send = |what: &str| {
        let o = host_tx(&host_port, n, rate() / 4, &[], Duration::from_secs(60));
        assert!(
            o.success(),
            "host tx ({what}) failed: {}\n{}",
            o.stdout,
            o.stderr
        );
    };
    send("before restart");
    assert!(
        vm.wait_for("FIRST-DONE", Duration::from_secs(60)),
        "{}\n--- backend ---\n{}",
        vm.serial(),
        be.log_text()
    );
    be.restart().unwrap_or_else(|e| panic!("{e}"));
    // The second receiver opens once QEMU has reconnected.
    assert!(
        wait_for_ready(&vm, 2, Duration::from_secs(120)),
        "guest never re-opened the port after the restart\n{}\n--- qemu ---\n{}\n--- backend ---\n{}",
        vm.serial(),
        vm.qemu_log(),
        be.log_text()
    );
    send("after restart");
    let r = vm.wait().unwrap();
    assert_eq!(
        r.rc,
        Some(0),
        "{}\n--- backend ---\n{}",
        r.report(),
        be.log_text()
    );
    let last = summary(&r);
    assert!(r.json.len() >= 2, "{}", r.report());
    assert_eq!(num(&last, "packets"), n, "{}", r.report());
    assert_eq!(num(&last, "errors"), 0, "{}", r.report());
}

/// QEMU pointed at a socket nobody serves fails at once, with a message naming it.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_missing_socket_is_a_clear_error() {
    let _g = vm_lock();
    let dir = TempDir::new("nosock").unwrap();
    let sock = dir.path().join("nobody-here.sock");
    let vm =
        Vm::start(&guest("nosock", "true", Nic::new(&sock), 60)).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait().unwrap();
    let status = r
        .status
        .unwrap_or_else(|| panic!("QEMU hung\n{}", r.report()));
    assert!(!status.success(), "{}", r.report());
    assert_eq!(r.rc, None, "the guest must not run\n{}", r.report());
    assert!(
        r.qemu_log.contains("nobody-here.sock"),
        "QEMU's error should name the socket\n{}",
        r.report()
    );
    assert!(
        r.elapsed < Duration::from_secs(30),
        "took {:?}\n{}",
        r.elapsed,
        r.report()
    );
}

/// One guest receiver spans a daemon restart: QEMU reconnects and replays the CSB and RESUME, the
/// restarted daemon adopts the ring positions the guest's CSB still holds, and the running guest
/// driver goes on as if nothing happened (as the stock driver must: it never reloads positions),
/// dropping nothing it had not already received. The second sender starts its sequence at 0
/// again, which pkt-gen counts as a sender restart.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_one_receiver_spans_daemon_restart() {
    let n = 2_000u64;
    let cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {} --timeout 60 --json",
        2 * n
    );
    let (_g, _dir, mut be, host_port, vm) =
        guest_on_restartable_daemon("restart1", &["vale3:1", "vale3:2"], &cmd, 240);
    let send = || host_tx(&host_port, n, 2000, &[], Duration::from_secs(60));
    assert!(send().success());
    be.restart().unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(send().success());
    let r = vm.wait().unwrap();
    let s = summary(&r);
    let ctx = format!("{}\n--- backend ---\n{}", r.report(), be.log_text());
    assert_eq!(r.rc, Some(0), "{ctx}");
    assert_eq!(num(&s, "packets"), 2 * n, "{ctx}");
    assert_eq!(num(&s, "errors"), 0, "{ctx}");
    assert_eq!(num(&s, "lost"), 0, "{ctx}");
    assert_eq!(num(&s, "out_of_order"), 0, "{ctx}");
    assert_eq!(num(&s, "sender_restarts"), 1, "{ctx}");
}

/// Both ends of one pipe in one guest, as a stock guest sees such a pair: two ptnet NICs with
/// two memdevs of one MEMID (the pipe's memory). The guest's receiver on `ptnet1` gets every
/// packet its sender on `ptnet0` sent, through buffers of the one memory both BARs map.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_one_guest_on_both_ends_of_a_pipe() {
    let _g = vm_lock();
    let dir = TempDir::new("pipe2").unwrap();
    let ports = ["netmap:b{1", "netmap:b}1"];
    let be = Backend::start(dir.path(), &ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let n = 20_000u64;
    let cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet1 -f rx -n {n} --timeout 90 --json & sleep 2; \
         ptnet-pkt-gen -T 0 -i ptnet0 -f tx -n {n} -R {} -b 32 || exit 1; wait $! || exit 2",
        rate()
    );
    let cfg =
        guest("pipe2", &cmd, Nic::new(be.socket(ports[0])), 240).nic(Nic::new(be.socket(ports[1])));
    let vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait().unwrap();
    let ctx = format!("{}\n--- backend ---\n{}", r.report(), be.log_text());
    assert_eq!(r.rc, Some(0), "{ctx}");
    let rx = r
        .json
        .iter()
        .find(|l| l.contains("\"mode\":\"rx\""))
        .unwrap_or_else(|| panic!("no rx summary\n{ctx}"));
    assert_eq!(num(rx, "packets"), n, "{ctx}");
    assert_eq!(num(rx, "errors"), 0, "{ctx}");
    assert_eq!(num(rx, "lost"), 0, "{ctx}");
    // Two memdevs, one MEMID: the guest found both NICs' memory by it.
    assert!(
        r.serial.matches("ptnet-pkt-gen: pci:").count() >= 2,
        "{ctx}"
    );
}
