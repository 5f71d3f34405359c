//! A virtio guest (Debian's unpatched QEMU, the guest's own `virtio_net`) reaches the host's
//! network stack through a `tap:` port served as a virtio-net device: the daemon runs in a
//! network namespace of the test's, creates the tap there, and the namespace's kernel answers
//! the guest's pings and echoes a TCP stream of 300 KiB back to it (the guest compares it with
//! what it sent; checksum offload and TSO on: the tap carries the virtio-net header both ways,
//! and the device cuts the guest's GSO frames into segments).
//!
//! Twice: split rings with the guest's offloads on (TSO negotiated), and QEMU's packed rings
//! with the guest's checksum offload and GSO off.
//!
//! Boots QEMU, so `#[ignore]`d: `cargo xtask test` runs it (`-- --include-ignored`).

use ptnet_integration::host::{Backend, TempDir};
use ptnet_integration::vm::{vm_lock, Vm, VmConfig};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "ptvtap";
const TAP: &str = "ptvtap0";
const MAC: &str = "52:54:00:00:03:0a";
const STREAM: usize = 300 * 1024;

/// The test's namespace, deleted on drop (with what runs in it gone first).
struct Netns;

impl Netns {
    fn new() -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", NS])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", NS])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {NS} (root needed)");
        Netns
    }

    fn exec(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", NS])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
    }
}

/// A TCP echo server in the namespace: echoes one connection's first `STREAM` bytes, then
/// closes it, and exits.
fn echo_server() -> Child {
    let script = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('10.0.3.1', 5000)); s.listen(1); s.settimeout(280)\n\
         c, _ = s.accept(); c.settimeout(60); n = 0\n\
         while n < {STREAM}:\n\
         \x20   b = c.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   c.sendall(b); n += len(b)\n\
         print('ECHOED', n, flush=True); c.close()\n"
    );
    Command::new("ip")
        .args(["netns", "exec", NS, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in the namespace")
}

fn stock_qemu() -> PathBuf {
    let q = std::env::var_os("PTNET_STOCK_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert!(q.is_file(), "{}: `cargo xtask stock-qemu`", q.display());
    q
}

/// How the guest's NIC is set up.
struct Variant {
    /// Extra `virtio-net-pci` properties (`,packed=on`).
    device: &'static str,
    /// Extra kernel command-line words (`virtio_net.csum=0 ...`: offloads off in the guest).
    append: &'static str,
    /// Feature bits the daemon must log as negotiated.
    features: u64,
}

const HOST_TSO4: u64 = 1 << 11;
const RING_PACKED: u64 = 1 << 34;

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_virtio_guest_pings_and_streams_to_the_host_through_a_tap_port() {
    // Split rings, checksum offload and TSO on (the guest's defaults).
    ping_and_stream(&Variant {
        device: "",
        append: "",
        features: HOST_TSO4,
    });
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn vm_virtio_guest_on_packed_rings_with_offloads_off_through_a_tap_port() {
    // QEMU's packed rings, and the guest's virtio_net with checksum offload and GSO off (its
    // `csum` and `gso` module options: what `ethtool -K eth0 tx off tso off` does).
    ping_and_stream(&Variant {
        device: ",packed=on",
        append: "virtio_net.csum=0 virtio_net.gso=0",
        features: RING_PACKED,
    });
}

fn ping_and_stream(v: &Variant) {
    let _g = vm_lock();
    let ns = Netns::new();
    let dir = TempDir::new("virtio-tap").unwrap();
    let port = format!("tap:{TAP}@conf:frontend=virtio-net");
    let be = Backend::start_under(
        &["ip", "netns", "exec", NS],
        dir.path(),
        &[&port],
        &["--netmap", "user"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let until = Instant::now() + Duration::from_secs(10);
    while !ns.exec(&["ip", "link", "show", TAP]) {
        assert!(
            Instant::now() < until,
            "no {TAP} in {NS}\n{}",
            be.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ns.exec(&["ip", "addr", "add", "10.0.3.1/24", "dev", TAP]));
    assert!(ns.exec(&["ip", "link", "set", TAP, "up"]));
    let mut echo = echo_server();
    let cmd = "ip link set eth0 up && ip addr add 10.0.3.2/24 dev eth0 && \
         i=0; until ping -c 1 -W 1 10.0.3.1 >/dev/null; do i=$((i+1)); [ $i -ge 30 ] && break; done; \
         ping -c 20 -i 0.2 -W 5 10.0.3.1 && ping -c 5 -s 1400 -i 0.2 -W 5 10.0.3.1; rc=$?; \
         dd if=/dev/urandom of=/tmp/s bs=1k count=300 2>/dev/null; \
         timeout 90 nc 10.0.3.1 5000 </tmp/s >/tmp/r; cmp /tmp/s /tmp/r && echo TCP-ECHO-OK; \
         echo CSUM=$(cat /sys/module/virtio_net/parameters/csum) \
         GSO=$(cat /sys/module/virtio_net/parameters/gso); exit $rc";
    let vm = Vm::start(&VmConfig {
        timeout: Duration::from_secs(300),
        qemu: Some(stock_qemu()),
        extra_args: vec![
            "-chardev".into(),
            format!(
                "socket,id=c0,path={},reconnect-ms=1000",
                be.socket(&port).display()
            ),
            "-netdev".into(),
            "vhost-user,id=n0,chardev=c0".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={MAC},romfile={}", v.device),
        ],
        extra_append: v.append.into(),
        ..VmConfig::new("virtio-tap", cmd)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait().unwrap();
    let _ = echo.kill();
    let echoed = echo
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ctx = format!(
        "{}\n--- echo server ---\n{echoed}\n--- backend ---\n{}",
        r.report(),
        be.log_text()
    );
    assert_eq!(r.rc, Some(0), "pings to the host lost\n{ctx}");
    assert!(
        r.serial
            .contains("20 packets transmitted, 20 packets received"),
        "{ctx}"
    );
    assert!(
        r.serial
            .contains("5 packets transmitted, 5 packets received"),
        "{ctx}"
    );
    assert!(echoed.contains(&format!("ECHOED {STREAM}")), "{ctx}");
    // The options took: the module's, and the features (with TSO negotiated the device cut
    // the guest's 64 KiB frames into segments for the tap).
    let off = !v.append.is_empty();
    let want = if off { "CSUM=N GSO=N" } else { "CSUM=Y GSO=Y" };
    assert!(r.serial.contains(want), "{want}\n{ctx}");
    let log = be.log_text();
    let features = log
        .lines()
        .filter(|l| l.contains("queue pairs running"))
        .find_map(|l| l.split("features=\"0x").nth(1)?.split('"').next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no features logged\n{ctx}"));
    assert_eq!(
        features & v.features,
        v.features,
        "features {features:#x} lack {:#x}\n{ctx}",
        v.features
    );
    assert!(r.serial.contains("TCP-ECHO-OK"), "{ctx}");
    // Every frame the host's stack handed the tap fitted a slot and was one the guest could
    // take: a GSO frame from the tap (its TSO offloads on) would be counted here.
    // (Logged when the daemon sees QEMU's connection close, just after QEMU exited.)
    let until = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = be.log_text();
        if log.contains("virtio-net frontend gone") || Instant::now() > until {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let gone = log
        .lines()
        .find(|l| l.contains("virtio-net frontend gone"))
        .unwrap_or_else(|| panic!("no final counters logged\n{ctx}"));
    assert_eq!(
        gone.matches("bad_headers=").count(),
        gone.matches("bad_headers=0 ").count(),
        "frames dropped as bad headers: {gone}"
    );
}
