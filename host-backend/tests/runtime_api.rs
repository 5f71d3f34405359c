//! Ports added and removed through the library (`Daemon::add_ports` / `remove_ports`, what the
//! control socket's `add` and `remove` run): typed refusals, and a VALE switch whose port table
//! changes 60 times while two of its ports exchange verified frames, windowed so that the switch
//! never finds the receiver's ring full: every frame arrives, in order, intact.

mod support;

use ptnet_backend::daemon::control::protocol::RequestError;
use ptnet_backend::daemon::{Daemon, DaemonConfig};
use ptnet_driver::{Port, RingId};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use support::TempDir;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn refusals_are_typed_and_change_nothing() {
    let dir = TempDir::new("refuse");
    let config = DaemonConfig::in_dir(&dir.0, &["vale5:a", "netmap:r{1", "netmap:r}1"]).unwrap();
    let d = Daemon::start(&config).expect("daemon");
    let add = |v: &[&str]| d.add_ports(&strings(v));
    let remove = |v: &[&str]| d.remove_ports(&strings(v));
    assert!(matches!(
        add(&["vale5:a"]),
        Err(RequestError::PortExists(_))
    ));
    assert!(matches!(
        add(&["netmap:r}1"]),
        Err(RequestError::PortExists(_))
    ));
    assert!(matches!(add(&["vale5:"]), Err(RequestError::BadPort(_))));
    assert!(
        matches!(add(&["x".repeat(3000).as_str()]), Err(RequestError::BadPort(e)) if e.len() < 300)
    );
    assert!(matches!(add(&[]), Err(RequestError::BadPort(_))));
    assert!(matches!(
        add(&["null:z", "null:z"]),
        Err(RequestError::Duplicate(_))
    ));
    assert!(matches!(
        remove(&["vale5:zz"]),
        Err(RequestError::NoSuchPort(_))
    ));
    assert!(
        matches!(remove(&["netmap:r{1"]), Err(RequestError::PipePeer { peer, .. }) if peer == "netmap:r}1")
    );
    assert!(matches!(
        remove(&["vale5:a", "vale5:a"]),
        Err(RequestError::Duplicate(_))
    ));
    let many: Vec<String> = (0..65).map(|i| format!("null:m{i}")).collect();
    assert!(matches!(d.add_ports(&many), Err(RequestError::BadPort(_))));
    for bad in [
        "vale5:../x",
        "vale5:a b",
        "null:\u{0}",
        "netmap:p{99999999999",
        "tap:",
    ] {
        assert!(
            matches!(add(&[bad]), Err(RequestError::BadPort(_))),
            "{bad:?}"
        );
    }
    // Valid, but its socket path is longer than a unix socket's: refused, and the VALE port it
    // built leaves the switch again (the next one joins as usual).
    let long = format!("vale5:{}", "l".repeat(200));
    assert!(matches!(
        add(&[long.as_str()]),
        Err(RequestError::Refused(_))
    ));
    assert_eq!(add(&["vale5:b"]).unwrap(), strings(&["vale5:b"]));
    assert_eq!(remove(&["vale5:b"]).unwrap(), strings(&["vale5:b"]));
    // A request with one bad port adds none of the others.
    assert!(add(&["null:fine", "vale5:a"]).is_err());
    assert_eq!(d.ports().len(), 3);
    assert!(!dir.0.join("null:fine.sock").exists());
    // Done whole: the pipe goes with both ends named.
    assert_eq!(
        remove(&["netmap:r{1", "netmap:r}1"]).unwrap(),
        strings(&["netmap:r{1", "netmap:r}1"])
    );
    assert!(!dir.0.join("netmap:r{1.sock").exists());
    d.stop();
}

const N: u32 = 200_000;
const WINDOW: u32 = 512;

fn frame(dst: [u8; 6], src: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x88b6u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((0..46u32).map(|i| (i ^ seq) as u8));
    f
}

#[test]
fn a_switch_changing_ports_under_traffic_loses_nothing() {
    let dir = TempDir::new("churn");
    let config = DaemonConfig::in_dir(&dir.0, &["vale6:a", "vale6:b"]).unwrap();
    let d = Daemon::start(&config).expect("daemon");
    let open = |n: &str| Port::open(&format!("vhost-user:{}", d.socket(n).unwrap().display()));
    let (mut a, mut b) = (open("vale6:a").unwrap(), open("vale6:b").unwrap());
    let (am, bm) = (a.mac(), b.mac());
    let got = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    let mut changes = 0;
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while n < N && Instant::now() < deadline {
                let mut r = b.rx_ring(0);
                r.rxsync().unwrap();
                while let Some(len) = r.recv(&mut buf) {
                    assert_eq!(buf[..len], frame(bm, am, n)[..], "frame {n}");
                    n += 1;
                }
                got.store(n, Ordering::Release);
                r.rxsync().unwrap();
                if n < N {
                    b.wait(RingId::Rx(0), Some(Duration::from_millis(5)))
                        .unwrap();
                }
            }
            n
        });
        let tx = s.spawn(|| {
            let mut i = 0;
            while i < N {
                let mut t = a.tx_ring(0);
                while i < N && i < got.load(Ordering::Acquire) + WINDOW && t.send(&frame(bm, am, i))
                {
                    i += 1;
                }
                t.txsync().unwrap();
                if i < N {
                    a.wait(RingId::Tx(0), Some(Duration::from_millis(1)))
                        .unwrap();
                }
            }
            done.store(true, Ordering::Release);
        });
        // Ports join and leave the running switch meanwhile (some of them with a frontend).
        let mut k = 0;
        while changes < 60 || !done.load(Ordering::Acquire) {
            if changes >= 60 && tx.is_finished() {
                break;
            }
            let names = [format!("vale6:x{k}"), format!("vale6:y{k}")];
            d.add_ports(&names).expect("add");
            let p = open(&names[0]).expect("frontend on an added port");
            d.remove_ports(&names).expect("remove");
            drop(p);
            changes += 2;
            k += 1;
        }
        tx.join().unwrap();
        assert_eq!(rx.join().unwrap(), N);
    });
    let s = d.stop();
    let pa = s.port("vale6:a").unwrap();
    assert_eq!(pa.tx_packets, u64::from(N));
    assert_eq!(pa.drops, 0, "the switch dropped frames: {pa:?}");
    assert_eq!(s.port("vale6:b").unwrap().rx_packets, u64::from(N));
    assert_eq!(s.ports.len(), 2);
    eprintln!("{changes} port changes during {N} frames");
}
