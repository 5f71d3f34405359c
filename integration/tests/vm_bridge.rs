//! The NFV middlebox end to end: a guest with two ptnet NICs (patched QEMU, pci transport) runs
//! the static `ptnet-bridge` between them, a bump in the wire between two switches of one
//! `ptnet-backend`; host `ptnet-pkt-gen`s (vhost-user transport) send into one side and receive
//! and verify on the other. KVM where it works and TCG otherwise, as `vm_ptnet.rs`
//! (`PTNET_ACCEL=tcg|kvm` to choose).
//!
//! QEMU (`qemu-patches/build`) and the guest image (`integration/guest/build-image.sh`, which
//! holds `ptnet-bridge`) are built by their scripts on first use (cached), `PTNET_QEMU` /
//! `PTNET_GUEST_DIR` override them; the host binaries come from `cargo build`. A missing or failing
//! piece fails these tests; they are `#[ignore]`d (they boot QEMU) and run by `cargo xtask test`. `PTNET_VM_LOG=1` prints the guest's
//! serial console and QEMU log.

use ptnet_integration::host::{finish, spawn_pkt_gen, Backend, RunOutput, TempDir};
use ptnet_integration::vm::{vm_lock, Nic, Vm, VmConfig, VmResult};
use ptnet_integration::{json_bool, json_num, vm_test_rate};
use std::time::Duration;

/// Packets per direction.
const COUNT: u64 = 20_000;
/// Host transmit rate (pps), below what a TCG guest forwards on 2 busy cores (VALE drops what a
/// full ring cannot take). Override with PTNET_VM_RATE (0 = unlimited).
const RATE: u64 = 20_000;

fn rate() -> u64 {
    vm_test_rate(RATE)
}

/// What the bridge prints on stderr once both ports are open.
const READY: &str = "ptnet-bridge: ready";

fn num(line: &str, key: &str) -> u64 {
    json_num(line, key).unwrap_or_else(|| panic!("no {key} in {line}")) as u64
}

/// The bridge's summary line (the last JSON line with "mode":"bridge").
fn summary(r: &VmResult) -> String {
    r.json
        .iter()
        .rev()
        .find(|l| l.contains("\"mode\":\"bridge\""))
        .cloned()
        .unwrap_or_else(|| panic!("no ptnet-bridge JSON line\n{}", r.report()))
}

/// A guest bridging its two NICs (`ptnet0` on `a`, `ptnet1` on `b`) until it has forwarded
/// `count` packets; returned once the bridge has opened both ports.
fn bridge_guest(tag: &str, be: &Backend, a: &str, b: &str, count: u64) -> Vm {
    let cmd = format!("ptnet-bridge -i ptnet0 -i ptnet1 -n {count} --timeout-ms 60000 --json");
    let cfg = VmConfig {
        timeout: Duration::from_secs(240),
        ..VmConfig::new(tag, &cmd)
    }
    .nic(Nic::new(be.socket(a)))
    .nic(Nic::new(be.socket(b)));
    let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    if !vm.wait_for(READY, Duration::from_secs(120)) {
        let r = vm.wait().unwrap();
        panic!(
            "the bridge never opened its ports\n{}\n--- backend ---\n{}",
            r.report(),
            be.log_text()
        );
    }
    vm
}

/// One direction through the guest: a host receiver on `rx_port`, `n` packets sent into
/// `tx_port` at `rate` pps in bursts of 32; asserts all arrived in order and intact. Returns the
/// receiver's summary.
fn leg(be: &Backend, vm: &Vm, tx_port: &str, rx_port: &str, n: u64, rate: u64) -> String {
    let (rx_sock, tx_sock) = (be.interface(rx_port), be.interface(tx_port));
    let (ns, rs) = (n.to_string(), rate.to_string());
    let rx = spawn_pkt_gen(&[
        "-i",
        &rx_sock,
        "-f",
        "rx",
        "-n",
        &ns,
        "--timeout",
        "30",
        "-T",
        "0",
        "--json",
    ])
    .unwrap();
    // Let the receiver attach before anything is sent.
    std::thread::sleep(Duration::from_millis(500));
    let tx = ptnet_integration::host::pkt_gen(
        &[
            "-i", &tx_sock, "-f", "tx", "-n", &ns, "-R", &rs, "-b", "32", "-T", "0", "--json",
        ],
        Duration::from_secs(120),
    )
    .unwrap();
    let rx = finish(rx, Duration::from_secs(120));
    let ctx = |what: &str, o: &RunOutput| {
        format!(
            "{what} {tx_port} -> {rx_port}: {:?}\n{}\n{}\n--- guest ---\n{}\n--- backend ---\n{}",
            o.status,
            o.stdout,
            o.stderr,
            vm.serial(),
            be.log_text()
        )
    };
    assert!(tx.success(), "{}", ctx("tx", &tx));
    assert!(rx.success(), "{}", ctx("rx", &rx));
    let s = rx.last_line().unwrap_or_default().to_string();
    assert_eq!(num(&s, "packets"), n, "{}", ctx("rx", &rx));
    assert_eq!(num(&s, "errors"), 0, "payload errors\n{}", ctx("rx", &rx));
    assert_eq!(num(&s, "lost"), 0, "{}", ctx("rx", &rx));
    assert_eq!(num(&s, "out_of_order"), 0, "{}", ctx("rx", &rx));
    s
}

/// Host tx -> vale1 -> guest (ptnet0 -> ptnet-bridge -> ptnet1) -> vale2 -> host rx, then the
/// reverse: every packet arrives, in order, intact; the bridge's counts per direction agree and
/// it copied (two switches: two memories).
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_bridge_between_two_vale_switches() {
    let _g = vm_lock();
    let dir = TempDir::new("vmbridge").unwrap();
    // Room for 200 ms at the test's rate on every ring: a TCG guest can stall that long.
    let ports = [
        "vale1:1@conf:slots=4096",
        "vale1:2@conf:slots=4096",
        "vale2:1@conf:slots=4096",
        "vale2:2@conf:slots=4096",
    ];
    let be = Backend::start(dir.path(), &ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let vm = bridge_guest("bridge", &be, ports[1], ports[2], 2 * COUNT);
    let ab = leg(&be, &vm, ports[0], ports[3], COUNT, rate());
    let ba = leg(&be, &vm, ports[3], ports[0], COUNT, rate());
    let r = vm.wait().unwrap();
    let ctx = format!("{}\n--- backend ---\n{}", r.report(), be.log_text());
    assert_eq!(r.rc, Some(0), "bridge failed\n{ctx}");
    let s = summary(&r);
    assert_eq!(num(&s, "a_to_b_packets"), COUNT, "{s}\n{ctx}");
    assert_eq!(num(&s, "b_to_a_packets"), COUNT, "{s}\n{ctx}");
    assert_eq!(num(&s, "dropped"), 0, "{s}");
    assert_eq!(json_bool(&s, "zero_copy"), Some(false), "{s}");
    eprintln!(
        "vm bridge (vale, copy): a->b {:.4} Mpps, b->a {:.4} Mpps at the host receivers (rate limit {} pps)",
        json_num(&ab, "mpps").unwrap_or(0.0),
        json_num(&ba, "mpps").unwrap_or(0.0),
        rate()
    );
}

/// Between two netmap pipes (lossless: backpressure from the host receiver through the guest
/// to the host sender), unpaced: every packet arrives in order and intact however fast the
/// sender is, and the receiver's rate is what the guest forwards.
#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_bridge_between_two_pipes_unpaced() {
    let _g = vm_lock();
    let dir = TempDir::new("vmbridgep").unwrap();
    let ports = ["netmap:a{0", "netmap:a}0", "netmap:b{0", "netmap:b}0"];
    let be = Backend::start(dir.path(), &ports, &[]).unwrap_or_else(|e| panic!("{e}"));
    let n = 5 * COUNT;
    let vm = bridge_guest("bridgep", &be, ports[1], ports[2], n);
    let ab = leg(&be, &vm, ports[0], ports[3], n, 0);
    let r = vm.wait().unwrap();
    let ctx = format!("{}\n--- backend ---\n{}", r.report(), be.log_text());
    assert_eq!(r.rc, Some(0), "bridge failed\n{ctx}");
    let s = summary(&r);
    assert_eq!(num(&s, "a_to_b_packets"), n, "{s}\n{ctx}");
    assert_eq!(num(&s, "dropped"), 0, "{s}");
    eprintln!(
        "vm bridge (pipes, copy, unpaced): {:.4} Mpps at the host receiver, bridge {:.4} Mpps",
        json_num(&ab, "mpps").unwrap_or(0.0),
        json_num(&s, "mpps").unwrap_or(0.0)
    );
}
