//! A daemon restarted under running guests: the port memory comes back (vhost-user
//! SET_INFLIGHT_FD: for ptnet the "inflight" region is the port memory). The daemon as a
//! process, frontends through the driver's vhost-user transport, as our QEMU reconnects.

use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::Transport;
use ptnet_integration::{Backend, TempDir};
use ptnet_protocol::regs::memdev;
use std::time::{Duration, Instant};

const MARK: &[u8] = b"a frame the guest wrote once and keeps sending";

/// Where buffer 7 of the port's pool lies in its netmap memory.
fn buffer_7(t: &mut VhostUserTransport) -> usize {
    let ofs = t.read_memdev(memdev::BUF_POOL_OFS).unwrap() as usize;
    let size = t.read_memdev(memdev::BUF_POOL_OBJSZ).unwrap() as usize;
    ofs + 7 * size
}

fn wait_for_log(b: &Backend, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if b.log_text().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_restarted_daemon_takes_the_port_memory_back() {
    let dir = TempDir::new("restore").unwrap();
    let ports = ["vale6:r", "vale6:s"];
    let mut b = Backend::start(dir.path(), &ports, &[]).unwrap();
    let sock = b.socket(ports[0]);
    let mut t1 = VhostUserTransport::open(&sock).unwrap();
    let at = buffer_7(&mut t1);
    assert!(t1.netmap_mem().unwrap().write(at, MARK));
    let (old, size) = t1.port_memory_file().unwrap();
    drop(t1);
    b.restart().unwrap();

    let mut t2 = VhostUserTransport::open(&sock).unwrap();
    let fresh = t2.netmap_mem().unwrap();
    let mut got = vec![0u8; MARK.len()];
    assert!(fresh.read(at, &mut got));
    assert_ne!(got, MARK, "a new daemon starts with a new memory");
    t2.give_back_port_memory(&old, size).unwrap();
    assert!(wait_for_log(&b, "port memory restored"), "{}", b.log_text());
    assert!(fresh.read(at, &mut got));
    assert_eq!(got, MARK, "the guest's buffer is back");
    // Once restored the memory is live: nothing given back later overwrites it.
    assert!(fresh.write(at, b"newer"));
    t2.give_back_port_memory(&old, size).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut now = [0u8; 5];
    assert!(fresh.read(at, &mut now));
    assert_eq!(&now, b"newer");
}

#[test]
fn memory_of_another_layout_or_a_live_port_is_not_taken() {
    let dir = TempDir::new("restore2").unwrap();
    let mut b = Backend::start(dir.path(), &["vale6:a", "vale6:b@conf:slots=512"], &[]).unwrap();
    // Port b's memory (other geometry) given to a: refused, logged, nothing copied.
    let mut tb = VhostUserTransport::open(&b.socket("vale6:b")).unwrap();
    let (b_mem, b_size) = tb.port_memory_file().unwrap();
    drop(tb);
    let mut ta = VhostUserTransport::open(&b.socket("vale6:a")).unwrap();
    let (_, a_size) = ta.port_memory_file().unwrap();
    let zeros = ptnet_integration::sys::guest_memfd(a_size, nix::libc::F_SEAL_SHRINK);
    ta.give_back_port_memory(&zeros, a_size).unwrap();
    assert!(wait_for_log(&b, "laid out otherwise"), "{}", b.log_text());
    if b_size >= a_size {
        ta.give_back_port_memory(&b_mem, b_size).unwrap();
    }
    assert!(
        !b.log_text().contains("port memory restored"),
        "{}",
        b.log_text()
    );
    // An unsealed memfd could be truncated under us: refused. (Refusals are logged at most
    // once a second per port.)
    std::thread::sleep(Duration::from_millis(1100));
    let unsealed = ptnet_integration::sys::guest_memfd(a_size, 0);
    ta.give_back_port_memory(&unsealed, a_size).unwrap();
    assert!(wait_for_log(&b, "not sealed"), "{}", b.log_text());
    b.stop();
}
