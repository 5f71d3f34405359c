//! The virtio-net frontend end to end: Debian's unpatched QEMU (`qemu-system-x86` from
//! bookworm-backports, 10.0.2) booting the test guest with the stock `virtio_net` driver, on
//! `PORT@conf:frontend=virtio-net` ports of one VALE switch.
//!
//! * two virtio guests ping each other (ARP, ICMP both ways through the switch, small and
//!   near-MTU frames), echo 300 KiB over TCP (checksum offload), then go on pinging across a
//!   restart of the daemon (QEMU's `reconnect-ms`: the new daemon serves the reconnected
//!   frontends from their vring bases);
//! * two virtio guests with their `virtio_net`'s checksum offload and GSO off (one on packed
//!   rings) move a 300 KiB TCP stream each way, its md5 taken by sender and receiver;
//! * a virtio guest and a ptnet guest (our patched QEMU, `ptnet-pkt-gen -f pong`) on one switch:
//!   the virtio guest's frames reach the ptnet guest, which reflects them, and come back;
//! * the same pair exchanging `ptnet-pkt-gen`'s numbered, payload-verified frames both ways (the
//!   virtio guest's pkt-gen over `packet:eth0`, an AF_PACKET socket on its virtio NIC).
//!
//! Stock QEMU: `PTNET_STOCK_QEMU`, else `/usr/bin/qemu-system-x86_64` (`cargo xtask stock-qemu`
//! installs it). A missing QEMU fails the tests. They boot QEMU, so they are `#[ignore]`d:
//! `cargo xtask test` runs them (`-- --include-ignored`), as does
//! `cargo test -p ptnet-integration --test vm_virtio -- --include-ignored`.

use ptnet_driver::summary::PktGenSummary;
use ptnet_integration::host::{Backend, TempDir};
use ptnet_integration::json_num;
use ptnet_integration::vm::{reports, stock_qemu, vm_lock, Nic, Vm, VmConfig, VmResult};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

/// How a virtio guest's NIC is set up beyond the defaults.
#[derive(Default)]
struct Nic0 {
    /// Extra `virtio-net-pci` properties (`,packed=on`).
    device: &'static str,
    /// Extra kernel command-line words (`virtio_net.csum=0 virtio_net.gso=0`).
    append: &'static str,
}

/// A guest of these tests.
struct Guest {
    name: &'static str,
    /// Its NIC's MAC (a ptnet NIC's default without one).
    mac: Option<&'static str>,
    /// Stock QEMU with one virtio-net NIC set up so; `None`: our QEMU with one ptnet NIC.
    virtio: Option<Nic0>,
    /// How long it may run, boot included.
    timeout_s: u64,
}

impl Guest {
    /// A virtio guest on stock QEMU, its NIC at the defaults.
    fn virtio(name: &'static str, mac: &'static str, timeout_s: u64) -> Self {
        Self {
            name,
            mac: Some(mac),
            virtio: Some(Nic0::default()),
            timeout_s,
        }
    }

    /// A ptnet guest on our QEMU.
    fn ptnet(name: &'static str, timeout_s: u64) -> Self {
        Self {
            name,
            mac: None,
            virtio: None,
            timeout_s,
        }
    }

    fn config(&self, cmd: &str, sock: &Path) -> VmConfig {
        let timeout = Duration::from_secs(self.timeout_s);
        let Some(nic) = &self.virtio else {
            return VmConfig {
                timeout,
                ..VmConfig::new(self.name, cmd)
            }
            .nic(Nic {
                mac: self.mac.map(Into::into),
                ..Nic::new(sock)
            });
        };
        let mac = self.mac.expect("a virtio guest's MAC");
        VmConfig {
            timeout,
            qemu: Some(stock_qemu()),
            extra_args: vec![
                "-chardev".into(),
                format!("socket,id=c0,path={},reconnect-ms=1000", sock.display()),
                "-netdev".into(),
                "vhost-user,id=n0,chardev=c0".into(),
                "-device".into(),
                // No option ROM: Debian's ipxe files are not needed to boot a kernel directly.
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile={}", nic.device),
            ],
            extra_append: nic.append.into(),
            ..VmConfig::new(self.name, cmd)
        }
    }
}

/// The VM lock, then a directory `tag` and a daemon (`--netmap user`) serving `ports` in it: keep
/// all three for the test (dropped in reverse, the daemon first).
fn daemon(tag: &str, ports: &[&str]) -> (MutexGuard<'static, ()>, TempDir, Backend) {
    let lock = vm_lock();
    let dir = TempDir::new(tag).unwrap();
    let be =
        Backend::start(dir.path(), ports, &["--netmap", "user"]).unwrap_or_else(|e| panic!("{e}"));
    (lock, dir, be)
}

/// Boots `guest` on port `port` of `be`, running `cmd`. With `ready` (a line and seconds), waits
/// for the guest to print that line: one that does not in time fails the test with its serial
/// output and the daemon's log.
fn boot(be: &Backend, port: &str, cmd: &str, guest: &Guest, ready: Option<(&str, u64)>) -> Vm {
    let mut vm = Vm::start(&guest.config(cmd, &be.socket(port))).unwrap_or_else(|e| panic!("{e}"));
    if let Some((line, secs)) = ready {
        assert!(
            vm.wait_for(line, Duration::from_secs(secs)),
            "{}: no {line:?} in {secs} s\n{}\n--- backend ---\n{}",
            guest.name,
            vm.serial(),
            be.log_text()
        );
    }
    vm
}

/// Shell: bring eth0 up as `ip`/24.
fn net_up(ip: &str) -> String {
    format!(
        "ip link set eth0 up && ip addr add {ip}/24 dev eth0 && \
         echo VIRTIO-UP $(cat /sys/class/net/eth0/address)"
    )
}

fn stat_line(r: &VmResult, key: &str) -> u64 {
    r.serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}= line\n{}", r.report()))
}

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_two_virtio_guests_ping_on_one_switch_across_a_daemon_restart() {
    let ports = [
        "vale0:1@conf:frontend=virtio-net",
        "vale0:2@conf:frontend=virtio-net",
    ];
    let (_g, _dir, mut be) = daemon("virtio2", &ports);
    // B also echoes TCP (busybox nc running cat): checksum offload both ways, through VALE.
    let b_cmd = format!(
        "{} && (nc -ll -p 5000 -e cat &) && sleep 600",
        net_up("10.0.0.2")
    );
    let b = boot(
        &be,
        ports[1],
        &b_cmd,
        &Guest::virtio("virtio-b", MAC_B, 700),
        Some(("VIRTIO-UP", 120)),
    );
    // A: wait for B to answer, then 20 pings and 5 near-MTU ones; every one must come back.
    // Then 40 more at 2 per second, across a restart of the daemon (QEMU reconnects).
    let a_cmd = format!(
        "{} && i=0; until ping -c 1 -W 1 10.0.0.2 >/dev/null; do i=$((i+1)); \
         [ $i -ge 30 ] && break; done; \
         ping -c 20 -i 0.2 -W 5 10.0.0.2 && ping -c 5 -s 1400 -i 0.2 -W 5 10.0.0.2; rc=$?; \
         dd if=/dev/urandom of=/tmp/s bs=1k count=300 2>/dev/null; \
         timeout 60 nc 10.0.0.2 5000 </tmp/s >/tmp/r; cmp /tmp/s /tmp/r && echo TCP-ECHO-OK; \
         echo PHASE1 rc=$rc; ping -c 40 -i 0.5 -W 5 10.0.0.2 | tail -3; \
         echo RX=$(cat /sys/class/net/eth0/statistics/rx_packets); \
         echo TX=$(cat /sys/class/net/eth0/statistics/tx_packets); exit $rc",
        net_up("10.0.0.1")
    );
    let mut a = boot(
        &be,
        ports[0],
        &a_cmd,
        &Guest::virtio("virtio-a", MAC_A, 300),
        None,
    );
    let phase1 = a.wait_for("PHASE1", Duration::from_secs(150));
    if phase1 {
        std::thread::sleep(Duration::from_secs(3));
        be.kill();
        be.restart().unwrap_or_else(|e| panic!("{e}"));
    }
    let ra = a.wait().unwrap();
    drop(b);
    let ctx = reports(&[("A", &ra)], &be.log_text());
    assert!(phase1, "{ctx}");
    assert_eq!(ra.rc, Some(0), "pings lost\n{ctx}");
    assert!(
        ra.serial
            .contains("20 packets transmitted, 20 packets received"),
        "{ctx}"
    );
    assert!(
        ra.serial
            .contains("5 packets transmitted, 5 packets received"),
        "{ctx}"
    );
    assert!(
        ra.serial.contains("TCP-ECHO-OK"),
        "300 KiB echoed over TCP\n{ctx}"
    );
    // Across the restart: the pings sent while no daemon ran may be lost, the rest not.
    let across = ra
        .serial
        .lines()
        .find_map(|l| l.trim().strip_prefix("40 packets transmitted, "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no statistics of the pings across the restart\n{ctx}"));
    assert!(
        across >= 30,
        "{across} of 40 pings across the restart\n{ctx}"
    );
    assert!(stat_line(&ra, "RX") >= 55, "{ctx}");
    assert!(stat_line(&ra, "TX") >= 55, "{ctx}");
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_virtio_guest_and_ptnet_guest_on_one_switch() {
    let ports = ["vale1:v@conf:frontend=virtio-net", "vale1:p"];
    let (_g, _dir, be) = daemon("virtio-ptnet", &ports);
    // The ptnet guest reflects every frame it gets (source MAC MAC_B), until 20 s pass without.
    let pong = format!("ptnet-pkt-gen -T 0 -i ptnet0 -f pong -S {MAC_B} --timeout 20 --json");
    let p = boot(
        &be,
        ports[1],
        &pong,
        &Guest::ptnet("ptnet-pong", 300),
        Some(("ptnet-pkt-gen: pci:", 120)),
    );
    // The virtio guest pings an address whose MAC is the ptnet guest's: each echo request comes
    // back reflected (addressed to us, for 10.0.0.2: counted by the NIC, not answered).
    let v_cmd = format!(
        "{} && arp -s 10.0.0.2 {MAC_B} && \
         ping -c 30 -i 0.2 -W 2 10.0.0.2; \
         echo RX=$(cat /sys/class/net/eth0/statistics/rx_packets); \
         echo RXB=$(cat /sys/class/net/eth0/statistics/rx_bytes); \
         echo TX=$(cat /sys/class/net/eth0/statistics/tx_packets)",
        net_up("10.0.0.1")
    );
    let v = boot(
        &be,
        ports[0],
        &v_cmd,
        &Guest::virtio("virtio-v", MAC_A, 300),
        None,
    );
    let rv = v.wait().unwrap();
    let rp = p.wait().unwrap();
    let ctx = reports(&[("virtio", &rv), ("ptnet", &rp)], &be.log_text());
    assert_eq!(rv.rc, Some(0), "{ctx}");
    let rx = stat_line(&rv, "RX");
    let tx = stat_line(&rv, "TX");
    assert!(tx >= 30, "{ctx}");
    // Every echo request (98 bytes) came back through the ptnet guest.
    assert!(rx >= 30, "only {rx} frames came back\n{ctx}");
    assert!(stat_line(&rv, "RXB") >= 30 * 98, "{ctx}");
    let line = rp
        .json
        .iter()
        .rev()
        .find(|l| l.contains("\"mode\""))
        .unwrap_or_else(|| panic!("no pong summary\n{ctx}"));
    let reflected = json_num(line, "packets").unwrap_or(0.0) as u64;
    assert!(reflected >= 30, "{line}\n{ctx}");
}

/// Bytes of each TCP stream of the offloads-off test.
const STREAM: usize = 300 * 1024;

/// Shell: receive `STREAM` bytes on the standard input (a TCP connection, busybox `nc -e`) into
/// /tmp/got and its md5 into /tmp/got.md5.
fn write_receiver() -> String {
    format!("printf 'head -c {STREAM} >/tmp/got; md5sum </tmp/got >/tmp/got.md5\\n' >/tmp/rx.sh")
}

/// Shell: a random `STREAM`-byte file `path`, its md5 printed after `tag`.
fn random_file(path: &str, tag: &str) -> String {
    format!(
        "dd if=/dev/urandom of={path} bs=1k count={} 2>/dev/null; \
         echo {tag} $(md5sum <{path} | cut -d' ' -f1)",
        STREAM / 1024
    )
}

/// The md5 after `tag ` in a guest's serial output (32 hex digits).
fn md5_after(r: &VmResult, tag: &str, ctx: &str) -> String {
    r.serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{tag} ")))
        .map(|h| h.trim().to_string())
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no md5 after {tag}\n{ctx}"))
}

/// The features the daemon logged as negotiated on `port` (its last "queue pairs running").
fn logged_features(log: &str, port: &str, ctx: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("queue pairs running") && l.contains(&format!("{port}\"")))
        .filter_map(|l| l.split("features=\"0x").nth(1)?.split('"').next())
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .next_back()
        .unwrap_or_else(|| panic!("no features logged for {port}\n{ctx}"))
}

const RING_PACKED: u64 = 1 << 34;
const MAC_C: &str = "52:54:00:00:00:0c";
const MAC_D: &str = "52:54:00:00:00:0d";

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_two_virtio_guests_stream_tcp_both_ways_with_offloads_off() {
    let ports = [
        "vale2:c@conf:frontend=virtio-net",
        "vale2:d@conf:frontend=virtio-net",
    ];
    let (_g, _dir, be) = daemon("virtio-nooff", &ports);
    // Both guests' virtio_net with checksum offload and GSO off (every frame leaves complete,
    // checksummed by the guest's stack, at most MTU-sized); D on packed rings, C on split ones.
    let off = "virtio_net.csum=0 virtio_net.gso=0";
    let params = "echo CSUM=$(cat /sys/module/virtio_net/parameters/csum) \
                  GSO=$(cat /sys/module/virtio_net/parameters/gso)";
    // D: receives C's stream on port 5000, serves its own on 5001, until both are done.
    let d_cmd = format!(
        "{}; {}; {}; nc -l -p 5000 -e sh /tmp/rx.sh & \
         nc -l -p 5001 -e cat /tmp/d & srv=$!; echo D-READY; \
         i=0; until [ -s /tmp/got.md5 ] || [ $i -ge 200 ]; do sleep 1; i=$((i+1)); done; \
         echo C2D-GOT $(cut -d' ' -f1 /tmp/got.md5); wait $srv; {params}",
        net_up("10.0.2.4"),
        random_file("/tmp/d", "D-SENT"),
        write_receiver()
    );
    let d_guest = Guest {
        virtio: Some(Nic0 {
            device: ",packed=on",
            append: off,
        }),
        ..Guest::virtio("virtio-d", MAC_D, 400)
    };
    let d = boot(&be, ports[1], &d_cmd, &d_guest, Some(("D-READY", 150)));
    let c_cmd = format!(
        "{} && i=0; until ping -c 1 -W 1 10.0.2.4 >/dev/null; do i=$((i+1)); \
         [ $i -ge 30 ] && break; done; \
         ping -c 10 -i 0.2 -W 5 10.0.2.4 && ping -c 5 -s 1400 -i 0.2 -W 5 10.0.2.4; rc=$?; \
         {}; timeout 90 nc 10.0.2.4 5000 </tmp/c; \
         {}; timeout 90 nc 10.0.2.4 5001 -e sh /tmp/rx.sh; \
         echo D2C-GOT $(cut -d' ' -f1 /tmp/got.md5); {params}; exit $rc",
        net_up("10.0.2.3"),
        random_file("/tmp/c", "C-SENT"),
        write_receiver()
    );
    let c_guest = Guest {
        virtio: Some(Nic0 {
            device: "",
            append: off,
        }),
        ..Guest::virtio("virtio-c", MAC_C, 300)
    };
    let c = boot(&be, ports[0], &c_cmd, &c_guest, None);
    let rc = c.wait().unwrap();
    let rd = d.wait().unwrap();
    let log = wait_for_log(&be, "virtio-net frontend gone", 2);
    let ctx = reports(&[("C", &rc), ("D", &rd)], &log);
    assert_eq!(rc.rc, Some(0), "pings lost\n{ctx}");
    assert_eq!(rd.rc, Some(0), "{ctx}");
    for r in [&rc, &rd] {
        assert!(r.serial.contains("CSUM=N GSO=N"), "offloads not off\n{ctx}");
    }
    assert!(
        rc.serial
            .contains("5 packets transmitted, 5 packets received"),
        "{ctx}"
    );
    // Each stream's md5, computed by its sender and by its receiver.
    assert_eq!(
        md5_after(&rc, "C-SENT", &ctx),
        md5_after(&rd, "C2D-GOT", &ctx),
        "C to D\n{ctx}"
    );
    assert_eq!(
        md5_after(&rd, "D-SENT", &ctx),
        md5_after(&rc, "D2C-GOT", &ctx),
        "D to C\n{ctx}"
    );
    // D negotiated packed rings, C did not.
    assert_eq!(
        logged_features(&log, "vale2:d", &ctx) & RING_PACKED,
        RING_PACKED,
        "{ctx}"
    );
    assert_eq!(
        logged_features(&log, "vale2:c", &ctx) & RING_PACKED,
        0,
        "{ctx}"
    );
    // No frame of either guest was dropped as a bad virtio-net header.
    let gone: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("virtio-net frontend gone"))
        .collect();
    assert_eq!(gone.len(), 2, "final counters of both ports\n{ctx}");
    for l in gone {
        assert!(l.contains("bad_headers="), "{l}");
        assert_eq!(
            l.matches("bad_headers=").count(),
            l.matches("bad_headers=0 ").count(),
            "frames dropped as bad headers: {l}"
        );
    }
}

/// The daemon's log once it holds `n` lines with `needle` (logged when it sees QEMU's
/// connection close, just after QEMU exited), or after 10 s.
fn wait_for_log(be: &Backend, needle: &str, n: usize) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = be.log_text();
        if log.matches(needle).count() >= n || std::time::Instant::now() > until {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Verified frames each way between the two guests' pkt-gens.
const FRAMES: u64 = 3000;

/// The `--json` summary of the pkt-gen run in `mode` ("tx", "rx") in a guest's output.
fn summary(r: &VmResult, mode: &str, ctx: &str) -> PktGenSummary {
    r.json
        .iter()
        .filter_map(|l| serde_json::from_str::<PktGenSummary>(l).ok())
        .find(|s| serde_json::to_value(s.mode).is_ok_and(|m| m == mode))
        .unwrap_or_else(|| panic!("no {mode} summary\n{ctx}"))
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_virtio_guest_and_ptnet_guest_exchange_verified_pkt_gen_frames() {
    let ports = ["vale3:v@conf:frontend=virtio-net", "vale3:p"];
    let (_g, _dir, be) = daemon("virtio-pktgen", &ports);
    // The ptnet guest (our driver on ptnet0): receives FRAMES, then sends FRAMES to the virtio
    // guest, at a rate a TCG guest's receiver keeps up with.
    let p_cmd = format!(
        "ptnet-pkt-gen -T 0 -i ptnet0 -f rx -n {FRAMES} --timeout 60 --json; sleep 3; \
         ptnet-pkt-gen -T 0 -i ptnet0 -f tx -n {FRAMES} -R 1000 -D {MAC_A} --json"
    );
    let p_guest = Guest {
        mac: Some(MAC_B),
        ..Guest::ptnet("ptnet-pktgen", 400)
    };
    let p = boot(
        &be,
        ports[1],
        &p_cmd,
        &p_guest,
        Some(("ptnet-pkt-gen: pci:", 150)),
    );
    // The virtio guest (Debian's virtio_net, pkt-gen over an AF_PACKET socket on eth0): its
    // stack sends nothing of its own (no address, IPv6 off), so every frame either pkt-gen sees
    // is one of the other's.
    let v_cmd = format!(
        "for f in all default eth0; do echo 1 >/proc/sys/net/ipv6/conf/$f/disable_ipv6; done; \
         ip link set eth0 up && sleep 2 && \
         ptnet-pkt-gen -T 0 -i packet:eth0 -f tx -n {FRAMES} -R 1000 -D {MAC_B} --json && \
         ptnet-pkt-gen -T 0 -i packet:eth0 -f rx -n {FRAMES} --timeout 60 --json"
    );
    let v = boot(
        &be,
        ports[0],
        &v_cmd,
        &Guest::virtio("virtio-pktgen", MAC_A, 400),
        None,
    );
    let rv = v.wait().unwrap();
    let rp = p.wait().unwrap();
    let ctx = reports(&[("virtio", &rv), ("ptnet", &rp)], &be.log_text());
    assert_eq!(rv.rc, Some(0), "{ctx}");
    assert_eq!(rp.rc, Some(0), "{ctx}");
    for (who, r) in [("virtio", &rv), ("ptnet", &rp)] {
        let tx = summary(r, "tx", &ctx);
        assert_eq!(tx.packets, FRAMES, "{who} sent\n{ctx}");
        let rx = summary(r, "rx", &ctx);
        assert_eq!(
            (rx.packets, rx.errors, rx.lost, rx.out_of_order),
            (FRAMES, 0, 0, 0),
            "{who} received: {rx:?}\n{ctx}"
        );
    }
}
