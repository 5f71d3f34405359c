use super::pcap::{self, PcapError};
use super::*;

fn frame(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| n.wrapping_add(i as u8)).collect()
}

fn push(tap: &Tap, dir: Direction, f: &[u8]) {
    let mut b = tap.batch(1).expect("capture running");
    b.push(dir, f.len(), |dst| {
        dst.copy_from_slice(&f[..dst.len()]);
        true
    });
}

#[test]
fn idle_tap_takes_nothing() {
    let tap = Tap::default();
    assert!(tap.batch(5).is_none());
    assert_eq!(tap.counts(), CaptureCounts::default());
}

#[test]
fn records_count_frames_and_stop_at_count() {
    let tap = Tap::default();
    tap.start(Some(2), DEFAULT_SNAPLEN).unwrap();
    push(&tap, Direction::FromFrontend, &frame(1, 60));
    push(&tap, Direction::ToFrontend, &frame(2, 1514));
    // The count is reached: the tap stops taking frames.
    assert!(!tap.is_active());
    assert!(tap.batch(1).is_none());
    let mut out = Vec::new();
    assert!(!tap.drain(&mut out));
    let mut seen = Vec::new();
    for_each_record(&out, |r| seen.push((r.dir, r.orig_len, r.data.to_vec())));
    assert_eq!(
        seen,
        vec![
            (Direction::FromFrontend, 60, frame(1, 60)),
            (Direction::ToFrontend, 1514, frame(2, 1514)),
        ]
    );
    assert_eq!(
        tap.stop(&mut out),
        CaptureCounts {
            captured: 2,
            missed: 0
        }
    );
}

#[test]
fn snaplen_cuts_frames_and_is_checked() {
    let tap = Tap::default();
    assert_eq!(tap.start(None, 0), Err(CaptureError::BadSnaplen(0)));
    assert_eq!(tap.start(None, 4096), Err(CaptureError::BadSnaplen(4096)));
    tap.start(None, 64).unwrap();
    assert_eq!(tap.start(None, 64), Err(CaptureError::Busy));
    push(&tap, Direction::FromFrontend, &frame(7, 1000));
    let mut out = Vec::new();
    tap.stop(&mut out);
    let mut n = 0;
    for_each_record(&out, |r| {
        assert_eq!((r.orig_len, r.data), (1000, &frame(7, 1000)[..64]));
        n += 1;
    });
    assert_eq!(n, 1);
}

#[test]
fn busy_tap_misses_and_counts_instead_of_waiting() {
    let tap = Tap::default();
    tap.start(None, DEFAULT_SNAPLEN).unwrap();
    let held = tap.batch(0).unwrap();
    // Another ring's batch of 32 frames while the tap is held: none taken, all counted.
    assert!(tap.batch(32).is_none());
    drop(held);
    assert_eq!(tap.counts().missed, 32);
}

#[test]
fn full_buffer_misses_frames() {
    let tap = Tap::default();
    tap.start(None, DEFAULT_SNAPLEN).unwrap();
    let per = RECORD_HDR + 2048;
    let fit = BUFFER_BYTES / per;
    for i in 0..fit + 3 {
        push(&tap, Direction::FromFrontend, &frame(i as u8, 2048));
    }
    assert_eq!(
        tap.counts(),
        CaptureCounts {
            captured: fit as u64,
            missed: 3
        }
    );
    // A drain makes room again.
    let mut out = Vec::new();
    assert!(tap.drain(&mut out));
    push(&tap, Direction::FromFrontend, &frame(9, 60));
    assert_eq!(tap.counts().captured, fit as u64 + 1);
}

#[test]
fn unreadable_frame_is_not_recorded() {
    let tap = Tap::default();
    tap.start(Some(1), DEFAULT_SNAPLEN).unwrap();
    tap.batch(1)
        .unwrap()
        .push(Direction::FromFrontend, 60, |_| false);
    let mut out = Vec::new();
    assert!(tap.drain(&mut out), "the one frame wanted is still wanted");
    assert!(out.is_empty());
}

#[test]
fn pcap_golden_bytes() {
    assert_eq!(
        pcap::file_header(2048),
        [0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 1, 0, 0, 0]
    );
    let mut out = Vec::new();
    let r = Record {
        ts_ns: 3_000_000_005,
        orig_len: 100,
        data: &[0xaa, 0xbb],
        dir: Direction::ToFrontend,
    };
    pcap::write_record(&mut out, &r).unwrap();
    assert_eq!(
        out,
        [3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 100, 0, 0, 0, 0xaa, 0xbb]
    );
}

#[test]
fn pcap_reads_back_what_it_wrote_and_refuses_damage() {
    let mut file = pcap::file_header(2048).to_vec();
    let frames = [frame(1, 60), frame(2, 1514)];
    for (i, f) in frames.iter().enumerate() {
        let r = Record {
            ts_ns: 10 + i as u64,
            orig_len: f.len() as u32,
            data: f,
            dir: Direction::FromFrontend,
        };
        pcap::write_record(&mut file, &r).unwrap();
    }
    let back = pcap::read(&file).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].data, frames[1]);
    assert_eq!(back[0].ts_ns, 10);
    assert_eq!(pcap::read(&file[..10]), Err(PcapError::NoHeader));
    assert_eq!(
        pcap::read(&file[..file.len() - 1]),
        Err(PcapError::Truncated(24 + 16 + 60))
    );
    let mut bad = file.clone();
    bad[0] = 0;
    assert!(matches!(pcap::read(&bad), Err(PcapError::BadMagic(_))));
}

#[test]
fn a_drain_into_an_empty_full_size_buffer_swaps_and_loses_nothing() {
    let tap = Tap::default();
    tap.start(None, DEFAULT_SNAPLEN).unwrap();
    let mut out = Vec::with_capacity(BUFFER_BYTES);
    let mut seen = Vec::new();
    for round in 0..3u8 {
        for n in 0..10u8 {
            push(&tap, Direction::FromFrontend, &frame(round * 10 + n, 100));
        }
        let before = out.as_ptr();
        assert!(tap.drain(&mut out));
        assert_ne!(out.as_ptr(), before, "swapped, not copied");
        for_each_record(&out, |r| seen.push(r.data[0]));
        out.clear();
    }
    assert_eq!(seen, (0..30).collect::<Vec<u8>>());
    // And the tap's buffer is still full size: a whole buffer's worth fits again.
    for n in 0..(BUFFER_BYTES / (RECORD_HDR + 2048)) {
        push(&tap, Direction::ToFrontend, &frame(n as u8, 2048));
    }
    assert_eq!(tap.counts().missed, 0);
    tap.stop(&mut out);
}
