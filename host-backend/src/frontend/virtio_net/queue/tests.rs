//! Chains over a real `GuestMemoryMmap` with split rings built by hand (descriptor table, avail
//! ring, used ring at fixed addresses), including the hostile ones.

mod gso;

use super::*;
use crate::frontend::virtio_net::ring::{Head, VirtQueue, VqError};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes};

const SIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const INDIRECT: u64 = 0x4000;
const DATA: u64 = 0x10000;
const MEM: usize = 0x40000;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

struct Ring {
    mem: GuestMemoryMmap,
    q: VirtQueue,
    avail: u16,
}

impl Ring {
    fn new() -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.try_set_size(SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
        q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&mem));
        Self {
            mem,
            q: VirtQueue::Split(q),
            avail: 0,
        }
    }

    fn desc_at(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(table + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.desc_at(DESC, i, addr, len, flags, next);
    }

    /// Makes chain head `head` available.
    fn push(&mut self, head: u16) {
        let slot = GuestAddress(AVAIL + 4 + 2 * u64::from(self.avail % SIZE));
        self.mem.write_obj(head, slot).unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem
            .write_obj(self.avail, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn used(&self, k: u16) -> (u32, u32) {
        let at = GuestAddress(USED + 4 + 8 * u64::from(k % SIZE));
        (
            self.mem.read_obj(at).unwrap(),
            self.mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }

    fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Pops the next chain and copies it as TX into a 2048-byte "netmap buffer".
    fn tx(&mut self, conf: &HdrConf) -> (Result<usize, TxDrop>, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        let chain = self.q.pop(&self.mem).expect("a chain");
        let r = tx_chain_to_buf(&self.mem, chain, conf, &VolatileSlice::from(&mut buf[..]));
        (r, buf)
    }
}

fn conf(port_len: usize) -> HdrConf {
    HdrConf {
        guest_len: 12,
        port_len,
        csum: false,
        guest_csum: false,
        mrg_rxbuf: true,
        tso4: false,
        tso6: false,
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn hdr(flags: u8, gso: u8, csum_start: u16, csum_offset: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    VnetHeader {
        flags,
        gso_type: gso,
        csum_start,
        csum_offset,
        ..Default::default()
    }
    .emit(&mut h, 12)
    .unwrap();
    h
}

#[test]
fn tx_one_descriptor_keeps_the_header_in_the_port_form() {
    let mut r = Ring::new();
    let f = frame(60);
    r.write(DATA, &hdr(0, 0, 0, 0));
    r.write(DATA + 12, &f);
    r.desc(0, DATA, 72, 0, 0);
    r.push(0);
    let (res, buf) = r.tx(&conf(12));
    assert_eq!(res, Ok(72));
    let h = VnetHeader::parse(&buf[..12], 12).unwrap();
    assert_eq!(h.num_buffers, 1, "one slot, as netmap's 12-byte form says");
    assert_eq!(&buf[12..72], &f[..]);
}

#[test]
fn tx_header_and_frame_split_across_descriptors_header_dropped_for_a_port_without_one() {
    let mut r = Ring::new();
    let f = frame(100);
    let h = hdr(0, 0, 0, 0);
    // 5 header bytes, then 7 header bytes + 30 frame bytes, then 70 frame bytes.
    r.write(DATA, &h[..5]);
    r.write(DATA + 0x100, &h[5..]);
    r.write(DATA + 0x100 + 7, &f[..30]);
    r.write(DATA + 0x200, &f[30..]);
    r.desc(0, DATA, 5, F_NEXT, 3);
    r.desc(3, DATA + 0x100, 37, F_NEXT, 7);
    r.desc(7, DATA + 0x200, 70, 0, 0);
    r.push(0);
    let (res, buf) = r.tx(&conf(0));
    assert_eq!(res, Ok(100));
    assert_eq!(&buf[..100], &f[..]);
}

#[test]
fn tx_indirect_table() {
    let mut r = Ring::new();
    let f = frame(64);
    r.write(DATA, &hdr(0, 0, 0, 0));
    r.write(DATA + 0x100, &f);
    r.desc_at(INDIRECT, 0, DATA, 12, F_NEXT, 1);
    r.desc_at(INDIRECT, 1, DATA + 0x100, 64, 0, 0);
    r.desc(2, INDIRECT, 32, F_INDIRECT, 0);
    r.push(2);
    let (res, buf) = r.tx(&conf(12));
    assert_eq!(res, Ok(76));
    assert_eq!(&buf[12..76], &f[..]);
}

#[test]
fn tx_nested_indirect_is_refused() {
    let mut r = Ring::new();
    r.write(DATA, &hdr(0, 0, 0, 0));
    r.desc_at(INDIRECT, 0, DATA, 12, F_NEXT, 1);
    r.desc_at(INDIRECT, 1, INDIRECT + 0x100, 16, F_INDIRECT, 0);
    r.desc(0, INDIRECT, 32, F_INDIRECT, 0);
    r.push(0);
    // virtio-queue ends the chain at the nested table: a header and no frame.
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooShort));
}

#[test]
fn tx_descriptor_loops_end_at_the_queue_size() {
    let mut r = Ring::new();
    r.write(DATA, &hdr(0, 0, 0, 0));
    // 0 -> 1 -> 0 -> ...: at most SIZE descriptors are followed.
    r.desc(0, DATA, 100, F_NEXT, 1);
    r.desc(1, DATA + 0x100, 100, F_NEXT, 0);
    r.push(0);
    let (res, _) = r.tx(&conf(12));
    assert_eq!(
        res,
        Ok(usize::from(SIZE) * 100),
        "bounded by the queue size"
    );
    // Longer descriptors: the bound is the netmap buffer.
    r.desc(0, DATA, 300, F_NEXT, 1);
    r.desc(1, DATA + 0x200, 300, F_NEXT, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooLong));
}

#[test]
fn tx_hostile_descriptors() {
    let mut r = Ring::new();
    r.write(DATA, &hdr(0, 0, 0, 0));
    // Outside guest memory.
    r.desc(0, MEM as u64 + 0x1000, 100, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::BadAddress));
    // Straddling the end of guest memory.
    r.desc(0, MEM as u64 - 10, 100, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::BadAddress));
    // Address + length wrapping around.
    r.desc(0, u64::MAX - 10, 100, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::BadAddress));
    // A device-writable descriptor in a TX chain.
    r.desc(0, DATA, 100, F_WRITE, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::Writable));
    // Longer than a netmap buffer.
    r.desc(0, DATA, 12 + 2049, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(0)).0, Err(TxDrop::TooLong));
    // Huge length (over 4 GiB together).
    r.desc(0, DATA, u32::MAX, F_NEXT, 1);
    r.desc(1, DATA, u32::MAX, 0, 0);
    r.push(0);
    assert!(r.tx(&conf(0)).0.is_err());
    // Shorter than a header, or than an Ethernet header after it.
    r.desc(0, DATA, 8, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooShort));
    r.desc(0, DATA, 12 + 13, 0, 0);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooShort));
    // A next index outside the table: the chain ends there.
    r.desc(0, DATA, 12, F_NEXT, 999);
    r.push(0);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooShort));
    // A head outside the table: no descriptor at all, and no used entry can be written.
    r.push(200);
    assert_eq!(r.tx(&conf(12)).0, Err(TxDrop::TooShort));
    assert!(r.q.add_used(&r.mem, Head { id: 200, ndesc: 1 }, 0).is_err());
}

#[test]
fn tx_headers_are_checked_against_the_features() {
    let mut r = Ring::new();
    let mut tcp = frame(80);
    tcp[12] = 0x08; // IPv4
    tcp[13] = 0x00;
    let cases = [
        (
            hdr(vnet::flags::NEEDS_CSUM, 0, 34, 16),
            false,
            Err(TxDrop::BadHeader),
        ),
        (hdr(vnet::flags::NEEDS_CSUM, 0, 34, 16), true, Ok(92)),
        (hdr(0, vnet::gso::TCPV4, 0, 0), true, Err(TxDrop::BadHeader)),
        (hdr(0x40, 0, 0, 0), true, Err(TxDrop::BadHeader)),
        (
            hdr(vnet::flags::DATA_VALID, 0, 0, 0),
            true,
            Err(TxDrop::BadHeader),
        ),
        (hdr(0, 0x7f, 0, 0), true, Err(TxDrop::BadHeader)),
    ];
    for (h, csum, want) in cases {
        r.write(DATA, &h);
        r.write(DATA + 12, &tcp);
        r.desc(0, DATA, 92, 0, 0);
        r.push(0);
        let c = HdrConf { csum, ..conf(12) };
        assert_eq!(r.tx(&c).0, want, "header {h:?}, csum {csum}");
    }
}

/// A netmap slot as the port holds it: header form `port_len`, then `f`.
fn slot(port_len: usize, h: [u8; 12], f: &[u8]) -> Vec<u8> {
    let mut v = h[..port_len].to_vec();
    v.extend_from_slice(f);
    v
}

fn deliver(r: &mut Ring, w: &mut RxWriter, s: &mut [u8], c: &HdrConf) -> RxOutcome {
    let Ring { mem, q, .. } = r;
    w.deliver(mem, q, &VolatileSlice::from(s), c)
}

#[test]
fn rx_mergeable_frame_spans_chains_with_num_buffers() {
    let mut r = Ring::new();
    let mut w = RxWriter::new(2048);
    let f = frame(1600);
    for i in 0..3u16 {
        r.desc(i, DATA + 0x1000 * u64::from(i), 1024, F_WRITE, 0);
        r.push(i);
    }
    let mut s = slot(12, hdr(0, 0, 0, 0), &f);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Delivered(2)
    );
    assert_eq!(r.used_idx(), 2);
    assert_eq!(r.used(0), (0, 1024));
    assert_eq!(r.used(1), (1, 12 + 1600 - 1024));
    let h = VnetHeader::parse(&r.read(DATA, 12), 12).unwrap();
    assert_eq!(h.num_buffers, 2);
    let mut got = r.read(DATA + 12, 1012);
    got.extend(r.read(DATA + 0x1000, 1600 - 1012));
    assert_eq!(got, f);
}

#[test]
fn rx_without_enough_buffers_keeps_the_frame_and_the_chains() {
    let mut r = Ring::new();
    let mut w = RxWriter::new(2048);
    r.desc(0, DATA, 1024, F_WRITE, 0);
    r.push(0);
    let mut s = slot(12, hdr(0, 0, 0, 0), &frame(1600));
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::NoBuffers
    );
    assert_eq!((r.q.next_avail(), r.used_idx()), (0, 0), "nothing consumed");
    // The guest posts another buffer: now it fits.
    r.desc(1, DATA + 0x1000, 1024, F_WRITE, 0);
    r.push(1);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Delivered(2)
    );
}

#[test]
fn rx_without_mergeable_buffers_one_chain_or_the_frame_is_dropped() {
    let mut r = Ring::new();
    let mut w = RxWriter::new(2048);
    let c = HdrConf {
        mrg_rxbuf: false,
        ..conf(0)
    };
    // A chain of a header descriptor then data ("big packets" layout).
    r.desc(0, DATA, 12, F_WRITE | F_NEXT, 1);
    r.desc(1, DATA + 0x100, 1500, F_WRITE, 0);
    r.push(0);
    let f = frame(200);
    let mut s = f.clone();
    assert_eq!(deliver(&mut r, &mut w, &mut s, &c), RxOutcome::Delivered(1));
    let h = VnetHeader::parse(&r.read(DATA, 12), 12).unwrap();
    assert_eq!(h.num_buffers, 1);
    assert_eq!(r.read(DATA + 0x100, 200), f);
    assert_eq!(r.used(0), (0, 212));
    // Too small a chain: dropped, the chain stays for the next frame.
    r.desc(2, DATA, 100, F_WRITE, 0);
    r.push(2);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &c),
        RxOutcome::Dropped(RxDrop::NoRoom)
    );
    assert_eq!((r.q.next_avail(), r.used_idx()), (1, 1));
}

#[test]
fn rx_hostile_chains_go_back_empty() {
    let mut r = Ring::new();
    let mut w = RxWriter::new(2048);
    let mut s = slot(12, hdr(0, 0, 0, 0), &frame(100));
    // A device-readable descriptor in an RX chain.
    r.desc(0, DATA, 1024, 0, 0);
    r.push(0);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Dropped(RxDrop::BadChain)
    );
    assert_eq!((r.used_idx(), r.used(0)), (1, (0, 0)));
    // Outside guest memory.
    r.desc(1, MEM as u64, 1024, F_WRITE, 0);
    r.push(1);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Dropped(RxDrop::BadChain)
    );
    // Zero-length descriptors only.
    r.desc(2, DATA, 0, F_WRITE, 0);
    r.push(2);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Dropped(RxDrop::BadChain)
    );
    // A head outside the table.
    r.push(300);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Dropped(RxDrop::BadChain)
    );
    // Tiny buffers: more than MAX_MERGE chains needed.
    for i in 0..SIZE {
        r.desc(i, DATA + 0x100 * u64::from(i), 8, F_WRITE, 0);
    }
    for i in 0..SIZE {
        r.push(i);
    }
    let mut big = slot(12, hdr(0, 0, 0, 0), &frame(1000));
    assert!(matches!(
        deliver(&mut r, &mut w, &mut big, &conf(12)),
        RxOutcome::NoBuffers | RxOutcome::Dropped(_)
    ));
}

#[test]
fn rx_slot_headers_are_checked_and_checksums_completed_for_a_guest_without_guest_csum() {
    let mut r = Ring::new();
    let mut w = RxWriter::new(2048);
    // An IPv4/UDP frame with a partial checksum (the field holds the pseudo-header sum: 0 here,
    // which the completion covers whatever it is).
    let mut f = frame(80);
    f[12] = 0x08;
    f[13] = 0x00;
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    let h = hdr(vnet::flags::NEEDS_CSUM, 0, 34, 6);
    let mut want = f.clone();
    vnet::complete_checksum(&VnetHeader::parse(&h, 12).unwrap(), &mut want).unwrap();
    r.desc(0, DATA, 1024, F_WRITE, 0);
    r.push(0);
    let mut s = slot(12, h, &f);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Delivered(1)
    );
    let got = VnetHeader::parse(&r.read(DATA, 12), 12).unwrap();
    assert_eq!(
        (got.flags, got.num_buffers),
        (0, 1),
        "no partial checksum handed on"
    );
    assert_eq!(r.read(DATA + 12, 80), want);
    // With GUEST_CSUM the partial checksum goes on as it is.
    r.desc(1, DATA + 0x1000, 1024, F_WRITE, 0);
    r.push(1);
    let c = HdrConf {
        guest_csum: true,
        ..conf(12)
    };
    assert_eq!(deliver(&mut r, &mut w, &mut s, &c), RxOutcome::Delivered(1));
    let got = VnetHeader::parse(&r.read(DATA + 0x1000, 12), 12).unwrap();
    assert!(got.needs_csum());
    assert_eq!(r.read(DATA + 0x1000 + 12, 80), f);
    // A GSO frame: handed back to be segmented (`rxchain`), the chain kept; an unknown flag
    // from the port: dropped, the chain kept.
    for (bad, want) in [
        (hdr(0, vnet::gso::TCPV4, 0, 0), RxOutcome::Gso),
        (hdr(0x40, 0, 0, 0), RxOutcome::Dropped(RxDrop::BadFrame)),
    ] {
        let mut s = slot(12, bad, &f);
        assert_eq!(deliver(&mut r, &mut w, &mut s, &c), want);
    }
    // A checksum position outside the frame, for a guest that needs it completed.
    let mut s = slot(12, hdr(vnet::flags::NEEDS_CSUM, 0, 70, 60), &f);
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Dropped(RxDrop::BadFrame)
    );
    assert_eq!(r.used_idx(), 2);
}

#[test]
fn avail_index_more_than_a_queue_ahead_is_out_of_range() {
    let mut r = Ring::new();
    assert!(r.q.check(&r.mem).is_ok());
    r.mem.write_obj(SIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
    assert_eq!(r.q.check(&r.mem), Err(VqError::AvailOutOfRange));
    assert!(r.q.pop(&r.mem).is_none());
    r.mem.write_obj(SIZE, GuestAddress(AVAIL + 2)).unwrap();
    assert!(r.q.check(&r.mem).is_ok());
    r.avail = 0;
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mut r = Ring::new();
    let VirtQueue::Split(q) = &mut r.q else {
        unreachable!()
    };
    q.set_event_idx(true);
    let mut w = RxWriter::new(2048);
    // used_event (after the avail ring) = 1: interrupt once the used index passes 1.
    r.mem
        .write_obj(1u16, GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE)))
        .unwrap();
    let mut s = slot(12, hdr(0, 0, 0, 0), &frame(60));
    for i in 0..3u16 {
        r.desc(i, DATA + 0x1000 * u64::from(i), 1024, F_WRITE, 0);
        r.push(i);
    }
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Delivered(1)
    );
    assert!(
        !r.q.needs_notification(&r.mem),
        "used 1: not past used_event 1"
    );
    assert_eq!(
        deliver(&mut r, &mut w, &mut s, &conf(12)),
        RxOutcome::Delivered(1)
    );
    assert!(
        r.q.needs_notification(&r.mem),
        "used 2 crosses used_event 1"
    );
    // Kick suppression: avail_event is what we consumed once notifications are enabled.
    assert!(r.q.enable_notification(&r.mem), "one chain still available");
    let avail_event: u16 = r
        .mem
        .read_obj(GuestAddress(USED + 4 + 8 * u64::from(SIZE)))
        .unwrap();
    assert_eq!(avail_event, 2);
}

/// xorshift64*: a deterministic stream for the randomized rings below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random descriptor tables, indirect tables, avail rings and slot headers (addresses inside,
/// across and outside memory, lengths up to 4 GiB, any flags, loops, heads outside the table):
/// TX and RX never panic, never write outside what they were given, and every popped chain
/// either completes or is given back.
#[test]
fn random_rings_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // What the rounds ran into, so the test can tell it reached every outcome.
    let (mut tx_ok, mut tx_err, mut rx_ok, mut rx_wait, mut rx_drop) = (0, 0, 0, 0, 0);
    for round in 0..3000 {
        let mut r = Ring::new();
        let addr = |rng: &mut Rng| match rng.below(4) {
            0 => rng.next(),
            1 => MEM as u64 - rng.below(128),
            2 => INDIRECT + 16 * rng.below(4),
            _ => DATA + rng.below(0x8000),
        };
        let len = |rng: &mut Rng| match rng.below(4) {
            0 => rng.next() as u32,
            1 => 16 * rng.below(6) as u32,
            _ => rng.below(3000) as u32,
        };
        for i in 0..SIZE + 4 {
            let (a, l) = (addr(&mut rng), len(&mut rng));
            let flags = rng.below(8) as u16;
            let next = rng.below(u64::from(SIZE) + 4) as u16;
            if i < SIZE {
                r.desc(i, a, l, flags, next);
            }
            r.desc_at(INDIRECT, i % 8, a, l, flags, next);
        }
        let heads = rng.below(u64::from(SIZE) + 1) as u16;
        for _ in 0..heads {
            let h = rng.below(u64::from(SIZE) + 4) as u16;
            r.push(h);
        }
        let c = HdrConf {
            guest_len: if rng.below(4) == 0 { 10 } else { 12 },
            port_len: [0, 10, 12][rng.below(3) as usize],
            csum: rng.below(2) == 0,
            guest_csum: rng.below(2) == 0,
            mrg_rxbuf: rng.below(3) != 0,
            tso4: rng.below(2) == 0,
            tso6: rng.below(2) == 0,
        };
        let c = HdrConf {
            port_len: c.port_len.min(c.guest_len),
            ..c
        };
        if round % 2 == 0 {
            let mut buf = vec![0u8; 2048];
            let mut guard = 0;
            while let Some(chain) = r.q.pop(&r.mem) {
                let head = chain.head();
                match tx_chain_to_buf(&r.mem, chain, &c, &VolatileSlice::from(&mut buf[..])) {
                    Ok(n) => {
                        assert!(n <= buf.len());
                        tx_ok += 1;
                    }
                    Err(_) => tx_err += 1,
                }
                let _ = r.q.add_used(&r.mem, head, 0);
                guard += 1;
                assert!(guard <= SIZE, "more chains than were made available");
            }
        } else {
            let mut w = RxWriter::new(2048);
            let flen = rng.below(2048) as usize;
            let mut slot: Vec<u8> = (0..flen).map(|_| rng.next() as u8).collect();
            for _ in 0..4 {
                let before = r.q.next_avail();
                let out = {
                    let Ring { mem, q, .. } = &mut r;
                    w.deliver(mem, q, &VolatileSlice::from(&mut slot[..]), &c)
                };
                let taken = r.q.next_avail().wrapping_sub(before);
                match out {
                    RxOutcome::Delivered(n) => {
                        assert!(n >= 1 && usize::from(n) <= MAX_MERGE);
                        rx_ok += 1;
                    }
                    RxOutcome::NoBuffers => {
                        assert_eq!(taken, 0, "chains given back");
                        rx_wait += 1;
                    }
                    RxOutcome::Dropped(_) => rx_drop += 1,
                    RxOutcome::Gso => {
                        assert_eq!(taken, 0, "a GSO frame takes no chain here");
                        rx_drop += 1;
                    }
                }
                assert!(usize::from(taken) <= MAX_MERGE);
            }
        }
    }
    eprintln!(
        "tx ok {tx_ok} err {tx_err}; rx delivered {rx_ok} waiting {rx_wait} dropped {rx_drop}"
    );
    assert!(tx_ok > 0 && tx_err > 0 && rx_ok > 0 && rx_wait > 0 && rx_drop > 0);
}
