//! Chains of netmap slots (NS_MOREFRAG) toward a virtio-net guest (`rxchain`): the other end
//! of a pipe is driven by hand as netmap's stock Linux ptnet driver sends its TSO frames (a
//! 12-byte header, then the frame across as many slots as it needs).

use super::*;
use crate::port::ring::RingWorker;
use crate::served::Datapath;
use ptnet_protocol::netmap::{ring_add, slot_flags, BufPool, RingView};

/// RFC 1071 over `parts`, one byte pair at a time.
fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP/IPv4 frame from `src` to `dst` with `payload` bytes, its TCP checksum left partial
/// (the pseudo-header's sum), as an offloading sender leaves it.
fn tcp_frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0, 0x45, 0]);
    f.extend_from_slice(&((40 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 7, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[
        0x1f, 0x90, 0xc3, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0x50, 0x18,
    ]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    let pseudo = [
        &f[26..34],
        &[0, 6],
        &((20 + payload) as u16).to_be_bytes()[..],
    ]
    .concat();
    let seed = !inet_checksum(&[&pseudo]);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    f
}

/// The stock driver's 12-byte header: NEEDS_CSUM at the TCP checksum, GSO TCPv4 of `mss`
/// (none if 0).
fn header(mss: u16) -> Vec<u8> {
    let mut h = vec![1, u8::from(mss > 0)];
    for v in [54u16, mss, 34, 16, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// The pipe end without a frontend, its TX ring driven by hand.
struct Sender {
    worker: RingWorker,
    view: RingView,
    bufs: BufPool,
}

impl Sender {
    fn new(port: &Port) -> Self {
        port.vnet_hdr_len().unwrap().store(12, Ordering::Relaxed);
        let bufs = match port.datapath() {
            Datapath::Threads { memory, .. } => memory.bufs().clone(),
            Datapath::Kernel(_) => unreachable!(),
        };
        let mut workers = port.take_workers().unwrap();
        Self {
            worker: workers.swap_remove(0),
            view: port.ring_view(0).unwrap(),
            bufs,
        }
    }

    /// Puts `frame` in the next slots (MOREFRAG on all but the last unless `open`), and syncs.
    fn send(&mut self, frame: &[u8], open: bool) {
        let k = &mut self.worker.kring;
        let size = self.bufs.buf_size() as usize;
        let parts: Vec<&[u8]> = frame.chunks(size).collect();
        let mut i = k.rhead;
        for (n, part) in parts.iter().enumerate() {
            assert!(self.bufs.write(self.view.buf_idx(i), 0, part));
            self.view.set_len(i, part.len() as u16);
            let last = n + 1 == parts.len() && !open;
            self.view
                .set_flags(i, if last { 0 } else { slot_flags::MOREFRAG });
            i = ring_add(i, 1, k.num_slots);
        }
        k.rhead = i;
        k.rcur = i;
        self.worker.sync.sync(k, 0);
    }
}

#[test]
fn chains_of_slots_reach_the_guest_as_segments_and_whole_frames() {
    let ports = switch(&["netmap:vch{1", "netmap:vch}1@conf:frontend=virtio-net"]);
    let mut tx = Sender::new(&ports[0]);
    let mut b = Guest::new(ports[1].clone());
    let (ma, mb) = ([2, 0, 0, 0, 0, 0xaa], ports[1].mac());
    for i in 0..12u16 {
        b.desc(0, i, 0x10000 + 0x800 * u64::from(i), 2048, 2);
        b.push(0, i);
    }
    // A GSO frame of 4000 bytes in 1000-byte segments: two slots, four segments.
    let frame = tcp_frame(mb, ma, 4000);
    tx.send(&[&header(1000)[..], &frame].concat(), false);
    assert!(b.wait_used(0, 4), "four segments: {}", b.dev.stats_line());
    let mut joined = Vec::new();
    for i in 0..4u16 {
        let (id, len) = b.used(0, i);
        assert_eq!((id, len), (u32::from(i), 12 + 54 + 1000), "segment {i}");
        let mut got = vec![0u8; len as usize];
        let at = GuestAddress(0x10000 + 0x800 * u64::from(id));
        b.mem.read_slice(&mut got, at).unwrap();
        let h = VnetHeader::parse(&got[..12], 12).unwrap();
        assert!(
            !h.is_gso() && !h.needs_csum() && h.num_buffers == 1,
            "{h:?}"
        );
        let s = &got[12..];
        assert_eq!(inet_checksum(&[&s[14..34]]), 0, "segment {i}: IP checksum");
        let pseudo = [
            &s[26..34],
            &[0, 6],
            &((s.len() - 34) as u16).to_be_bytes()[..],
        ]
        .concat();
        assert_eq!(
            inet_checksum(&[&pseudo, &s[34..]]),
            0,
            "segment {i}: TCP checksum"
        );
        let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
        assert_eq!(seq, 1000 + 1000 * u32::from(i));
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, frame[54..], "the payload, in order");
    // A frame longer than a buffer without GSO: whole, over two mergeable buffers, its
    // checksum completed (the header asks for nothing).
    let long = tcp_frame(mb, ma, 2500);
    tx.send(&[&header(0)[..], &long].concat(), false);
    assert!(
        b.wait_used(0, 6),
        "used {}: {}",
        b.used_idx(0),
        b.dev.stats_line()
    );
    let mut got = Vec::new();
    for i in 4..6u16 {
        let (id, len) = b.used(0, i);
        let mut part = vec![0u8; len as usize];
        let at = GuestAddress(0x10000 + 0x800 * u64::from(id));
        b.mem.read_slice(&mut part, at).unwrap();
        got.extend_from_slice(&part);
    }
    let h = VnetHeader::parse(&got[..12], 12).unwrap();
    assert_eq!((h.num_buffers, h.needs_csum()), (2, false));
    let s = &got[12..];
    assert_eq!(s.len(), long.len());
    let pseudo = [
        &s[26..34],
        &[0, 6],
        &((s.len() - 34) as u16).to_be_bytes()[..],
    ]
    .concat();
    assert_eq!(
        inet_checksum(&[&pseudo, &s[34..]]),
        0,
        "TCP checksum completed"
    );
    assert_eq!(s[54..], long[54..]);
    // A chain still arriving waits for its last slot.
    let frame = tcp_frame(mb, ma, 3000);
    let sent = [&header(1500)[..], &frame].concat();
    tx.send(&sent[..2048], true);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.used_idx(0), 6, "nothing before the chain ends");
    tx.send(&sent[2048..], false);
    assert!(b.wait_used(0, 8), "{}", b.dev.stats_line());
    // A GSO frame that fits one slot (the stock driver's TSO of a short send): its segments.
    let frame = tcp_frame(mb, ma, 1800);
    tx.send(&[&header(1000)[..], &frame].concat(), false);
    assert!(b.wait_used(0, 10), "{}", b.dev.stats_line());
    let lens: Vec<u32> = (8..10).map(|i| b.used(0, i).1).collect();
    assert_eq!(lens, [12 + 54 + 1000, 12 + 54 + 800]);
    let st = &b.dev.vrings[0].stats;
    assert_eq!(st.packets.load(Ordering::Relaxed), 9);
    assert_eq!(st.bad_headers.load(Ordering::Relaxed), 0);
    b.dev.disconnect();
}
