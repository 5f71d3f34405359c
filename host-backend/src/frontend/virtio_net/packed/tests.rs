//! Packed rings built by hand over a real `GuestMemoryMmap` (the driver's side written here),
//! through the same TX and RX code the split queue takes; one exact error per malformed input.

use super::super::mem::MemCache;
use super::*;
use crate::frontend::virtio_net::queue::{tx_chain_to_buf, HdrConf, RxOutcome, RxWriter, TxDrop};
use crate::frontend::virtio_net::ring::VirtQueue;
use vm_memory::VolatileSlice;

const SIZE: u16 = 8;
const RING: u64 = 0x1000;
const DRIVER: u64 = 0x2000;
const DEVICE: u64 = 0x3000;
const TABLE: u64 = 0x4000;
const DATA: u64 = 0x10000;
const MEM: usize = 0x40000;

/// The driver's side of a packed ring.
struct Driver {
    mem: GuestMemoryMmap,
    q: VirtQueue,
    pos: u16,
    wrap: bool,
}

impl Driver {
    fn new(event_idx: bool) -> Self {
        Self::at(event_idx, encode(0, true))
    }

    fn at(event_idx: bool, base: u16) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let q = PackedQueue::new(&mem, SIZE, (RING, DRIVER, DEVICE), event_idx, base).unwrap();
        let (pos, wrap) = decode(base);
        Self {
            mem,
            q: VirtQueue::Packed(q),
            pos,
            wrap,
        }
    }

    fn raw(&self, pos: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let at = GuestAddress(RING + 16 * u64::from(pos));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(id, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(14)).unwrap();
    }

    /// Makes one descriptor available at the driver's position (its wrap bits added).
    fn put(&mut self, addr: u64, len: u32, id: u16, flags: u16) {
        let bits = if self.wrap { F_AVAIL } else { F_USED };
        self.raw(self.pos, addr, len, id, flags | bits);
        self.pos += 1;
        if self.pos == SIZE {
            self.pos = 0;
            self.wrap = !self.wrap;
        }
    }

    fn table(&self, k: u64, addr: u64, len: u32, flags: u16) {
        let at = GuestAddress(TABLE + 16 * k);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(14)).unwrap();
    }

    /// The used descriptor at `pos`: (id, len, flags).
    fn used(&self, pos: u16) -> (u16, u32, u16) {
        let at = GuestAddress(RING + 16 * u64::from(pos));
        (
            self.mem.read_obj(at.unchecked_add(12)).unwrap(),
            self.mem.read_obj(at.unchecked_add(8)).unwrap(),
            self.mem.read_obj(at.unchecked_add(14)).unwrap(),
        )
    }

    /// TX of the next chain: the copy's result, and the chain's head.
    fn tx(&mut self) -> Option<(Result<usize, TxDrop>, Head)> {
        let mut buf = vec![0u8; 2048];
        let chain = self.q.pop(&self.mem)?;
        let head = chain.head();
        let r = tx_chain_to_buf(
            &self.mem,
            chain,
            &conf(),
            &VolatileSlice::from(&mut buf[..]),
        );
        self.q.add_used(&self.mem, head, 0).unwrap();
        Some((r, head))
    }

    fn error(&self) -> Option<VqError> {
        self.q.check(&self.mem).err()
    }
}

fn conf() -> HdrConf {
    HdrConf {
        guest_len: 12,
        port_len: 12,
        csum: false,
        guest_csum: false,
        mrg_rxbuf: true,
        tso4: false,
        tso6: false,
    }
}

/// A 12-byte header and a 60-byte frame at `at`.
fn frame(d: &Driver, at: u64) {
    d.mem.write_slice(&[0u8; 12], GuestAddress(at)).unwrap();
    d.mem
        .write_slice(&[0xab; 60], GuestAddress(at + 12))
        .unwrap();
}

#[test]
fn tx_chains_and_used_descriptors_across_the_wrap() {
    let mut d = Driver::new(false);
    frame(&d, DATA);
    // Five one-descriptor chains, then a two-descriptor chain over the wrap (positions 5, 6),
    // then one at 7, then one at 0 with the flipped wrap counter.
    for id in 0..5 {
        d.put(DATA, 72, id, 0);
    }
    for _ in 0..5 {
        assert_eq!(d.tx().unwrap().0, Ok(72));
    }
    assert_eq!(d.used(0), (0, 0, F_AVAIL | F_USED));
    d.put(DATA, 12, 0, F_NEXT);
    d.put(DATA + 12, 60, 5, 0);
    d.put(DATA, 72, 6, 0);
    let (r, head) = d.tx().unwrap();
    assert_eq!((r, head), (Ok(72), Head { id: 5, ndesc: 2 }));
    assert_eq!(d.used(5), (5, 0, F_AVAIL | F_USED));
    assert_eq!(d.tx().unwrap().1, Head { id: 6, ndesc: 1 });
    assert_eq!(d.q.next_avail(), encode(0, false), "wrapped");
    assert!(d.tx().is_none(), "position 0 still says the old wrap");
    d.put(DATA, 72, 3, 0);
    assert_eq!(d.tx().unwrap(), (Ok(72), Head { id: 3, ndesc: 1 }));
    assert_eq!(d.used(0), (3, 0, 0), "used with wrap counter 0");
    assert_eq!(d.q.next_used(), encode(1, false));
    assert_eq!(d.error(), None);
}

#[test]
fn in_order_tx_chains_go_used_as_one_descriptor_a_batch_across_the_wrap() {
    let mut d = Driver::at(false, encode(5, true));
    let VirtQueue::Packed(q) = &mut d.q else {
        unreachable!()
    };
    q.set_in_order(true);
    // Chains at 5, 6-7 (two descriptors, ids as an in-order driver gives them), then 0.
    d.put(DATA, 72, 5, 0);
    d.put(DATA, 12, 6, F_NEXT);
    d.put(DATA + 12, 60, 6, 0);
    d.put(DATA, 72, 0, 0);
    let mut mc = MemCache::new(&d.mem);
    let mut heads = Vec::new();
    while let Some(c) = d.q.pop_in(&mut mc) {
        heads.push(c.head());
    }
    assert_eq!(heads.len(), 3);
    for &h in &heads {
        d.q.add_used_tx(&mut mc, h).unwrap();
    }
    assert_eq!(
        d.q.next_used(),
        encode(5, true),
        "nothing used before the flush"
    );
    assert_eq!(
        d.q.add_used_tx(&mut mc, Head { id: SIZE, ndesc: 1 }),
        Err(VqError::IdOutOfRange { id: SIZE }),
        "a bad head is refused, not batched"
    );
    d.q.flush_used(&mut mc).unwrap();
    // One used descriptor at the batch's first position, the last chain's id, the old wrap.
    assert_eq!(d.used(5), (0, 0, F_AVAIL | F_USED));
    assert_eq!(d.q.next_used(), encode(1, false));
    assert_eq!(
        d.used(6).2 & F_USED,
        0,
        "positions inside the batch not written"
    );
    d.q.flush_used(&mut mc).unwrap();
    assert_eq!(
        d.q.next_used(),
        encode(1, false),
        "an empty flush writes nothing"
    );
    // Without IN_ORDER each chain is used at once.
    let VirtQueue::Packed(q) = &mut d.q else {
        unreachable!()
    };
    q.set_in_order(false);
    d.put(DATA, 72, 1, 0);
    let mut mc = MemCache::new(&d.mem);
    let h = d.q.pop_in(&mut mc).unwrap().head();
    d.q.add_used_tx(&mut mc, h).unwrap();
    assert_eq!((d.used(1), d.q.next_used()), ((1, 0, 0), encode(2, false)));
    assert_eq!(d.error(), None);
}

#[test]
fn an_in_order_batch_is_written_once_it_would_pass_its_bound() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let mut q = PackedQueue::new(&mem, 64, (RING, DRIVER, DEVICE), false, encode(0, true)).unwrap();
    q.set_in_order(true);
    let mut mc = MemCache::new(&mem);
    for id in 0..USED_BATCH {
        q.defer_used(&mut mc, Head { id, ndesc: 1 }).unwrap();
    }
    assert_eq!(q.next_used(), encode(0, true), "a full batch waits");
    q.defer_used(
        &mut mc,
        Head {
            id: USED_BATCH,
            ndesc: 1,
        },
    )
    .unwrap();
    assert_eq!(
        q.next_used(),
        encode(USED_BATCH, true),
        "written before the next chain"
    );
    let id: u16 = mem.read_obj(GuestAddress(RING + 12)).unwrap();
    assert_eq!(id, USED_BATCH - 1);
    q.flush_used(&mut mc).unwrap();
    assert_eq!(q.next_used(), encode(USED_BATCH + 1, true));
}

#[test]
fn tx_indirect_table() {
    let mut d = Driver::new(false);
    frame(&d, DATA);
    d.table(0, DATA, 12, 0);
    d.table(1, DATA + 12, 60, F_NEXT); // NEXT means nothing in a packed table
    d.put(TABLE, 32, 2, F_INDIRECT | F_WRITE); // (WRITE on the indirect one is ignored)
    assert_eq!(d.tx().unwrap(), (Ok(72), Head { id: 2, ndesc: 1 }));
}

#[test]
fn vring_base_carries_the_wrap_counter_in_bit_15() {
    assert_eq!(encode(3, true), 0x8003);
    assert_eq!(decode(0x8003), (3, true));
    assert_eq!(decode(0x0007), (7, false));
    let mut d = Driver::at(false, 0x0007);
    frame(&d, DATA);
    d.put(DATA, 72, 1, 0);
    assert_eq!(d.tx().unwrap().0, Ok(72));
    assert_eq!((d.q.next_avail(), d.q.next_used()), (0x8000, 0x8000));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let q = |base, ring: u64| PackedQueue::new(&mem, SIZE, (ring, DRIVER, DEVICE), false, base);
    assert_eq!(
        q(encode(SIZE, true), RING).unwrap_err(),
        VqError::BaseBeyondQueue { base: 0x8008 }
    );
    assert_eq!(q(0, MEM as u64 - 64).unwrap_err(), VqError::RingOutside);
    assert_eq!(q(0, RING + 8).unwrap_err(), VqError::RingOutside);
    let q = PackedQueue::new(&mem, 0, (RING, DRIVER, DEVICE), false, 0);
    assert_eq!(q.unwrap_err(), VqError::BadSize { size: 0 });
}

#[test]
fn a_buffer_id_beyond_the_queue_breaks_it() {
    let mut d = Driver::new(false);
    d.put(DATA, 72, SIZE, 0);
    assert!(d.tx().is_none());
    assert_eq!(d.error(), Some(VqError::IdOutOfRange { id: SIZE }));
    assert_eq!(d.q.next_avail(), encode(0, true), "nothing taken");
}

#[test]
fn a_chain_longer_than_the_queue_breaks_it() {
    let mut d = Driver::new(false);
    for _ in 0..SIZE {
        d.put(DATA, 12, 0, F_NEXT);
    }
    assert!(d.tx().is_none());
    assert_eq!(d.error(), Some(VqError::ChainTooLong));
}

#[test]
fn a_chain_whose_next_descriptor_is_not_available_breaks_it() {
    let mut d = Driver::new(false);
    d.put(DATA, 12, 0, F_NEXT);
    // Position 1 with the wrong wrap bits (as if written for the next lap).
    d.raw(1, DATA, 60, 0, F_USED);
    assert!(d.tx().is_none());
    assert_eq!(d.error(), Some(VqError::ChainNotAvailable { at: 1 }));
}

#[test]
fn a_head_with_nonsense_wrap_bits_is_not_available() {
    let mut d = Driver::new(false);
    d.raw(0, DATA, 72, 0, F_AVAIL | F_USED);
    assert!(d.tx().is_none());
    d.raw(0, DATA, 72, 0, 0);
    assert!(d.tx().is_none());
    assert_eq!(d.error(), None, "simply nothing there");
}

#[test]
fn bad_indirect_tables_drop_the_frame_one_error_each() {
    let cases: [(&str, u64, u32, u16, VqError); 5] = [
        (
            "length not a multiple of 16",
            TABLE,
            20,
            0,
            VqError::IndirectLen { len: 20 },
        ),
        ("empty", TABLE, 0, 0, VqError::IndirectLen { len: 0 }),
        (
            "outside memory",
            MEM as u64 - 16,
            32,
            0,
            VqError::IndirectOutside,
        ),
        ("with NEXT", TABLE, 32, F_NEXT, VqError::IndirectInChain),
        ("nested", TABLE, 32, 0, VqError::NestedIndirect),
    ];
    for (what, addr, len, extra, want) in cases {
        let mut d = Driver::new(false);
        frame(&d, DATA);
        d.table(0, DATA, 12, 0);
        d.table(1, TABLE, 16, if what == "nested" { F_INDIRECT } else { 0 });
        d.put(addr, len, 1, F_INDIRECT | extra);
        if extra & F_NEXT != 0 {
            d.put(DATA, 60, 1, 0);
        }
        let chain = d.q.pop(&d.mem).expect(what);
        let got: Vec<_> = chain.filter_map(Result::err).collect();
        assert_eq!(got, vec![want], "{what}");
        assert_eq!(d.error(), None, "{what}: the queue goes on");
    }
    // Through the TX copy: the frame is dropped as a bad chain, the chain returned.
    let mut d = Driver::new(false);
    d.put(TABLE, 20, 4, F_INDIRECT);
    assert_eq!(
        d.tx().unwrap(),
        (Err(TxDrop::BadChain), Head { id: 4, ndesc: 1 })
    );
    assert_eq!(d.used(0).0, 4);
}

#[test]
fn a_descriptor_outside_memory_is_the_copys_business() {
    let mut d = Driver::new(false);
    d.put(MEM as u64 - 8, 72, 0, 0);
    assert_eq!(d.tx().unwrap().0, Err(TxDrop::BadAddress));
    assert_eq!(d.error(), None);
}

#[test]
fn rx_mergeable_and_no_buffers_give_the_chains_back_across_the_wrap() {
    let mut d = Driver::at(false, encode(SIZE - 1, true));
    let mut w = RxWriter::new(2048);
    let mut slot = vec![0u8; 12 + 1000];
    let deliver = |d: &mut Driver, w: &mut RxWriter, s: &mut [u8]| {
        let Driver { mem, q, .. } = d;
        w.deliver(mem, q, &VolatileSlice::from(s), &conf())
    };
    // One 600-byte buffer (position 7), then nothing: not enough; given back.
    d.put(DATA, 600, 3, F_WRITE);
    assert_eq!(deliver(&mut d, &mut w, &mut slot), RxOutcome::NoBuffers);
    assert_eq!(d.q.next_avail(), encode(SIZE - 1, true), "given back");
    assert_eq!(
        d.q.avail_mark(&d.mem),
        encode(0, false),
        "where it found nothing"
    );
    // A second (position 0, the next lap): two chains, num_buffers 2.
    d.put(DATA + 0x1000, 600, 5, F_WRITE);
    assert_eq!(deliver(&mut d, &mut w, &mut slot), RxOutcome::Delivered(2));
    assert_eq!(d.used(SIZE - 1), (3, 600, F_AVAIL | F_USED | F_WRITE));
    assert_eq!(d.used(0), (5, 1012 - 600, F_WRITE));
    let nb: u16 = d.mem.read_obj(GuestAddress(DATA + 10)).unwrap();
    assert_eq!(nb, 2);
}

#[test]
fn interrupts_follow_the_driver_event_suppression() {
    let mut d = Driver::new(true);
    frame(&d, DATA);
    let flags = |d: &Driver, f: u16, off_wrap: u16| {
        d.mem.write_obj(off_wrap, GuestAddress(DRIVER)).unwrap();
        d.mem.write_obj(f, GuestAddress(DRIVER + 2)).unwrap();
    };
    for id in 0..6 {
        d.put(DATA, 72, id, 0);
    }
    flags(&d, EVENT_DISABLE, 0);
    let _ = d.tx().unwrap();
    assert!(!d.q.needs_notification(&d.mem), "disabled");
    flags(&d, EVENT_ENABLE, 0);
    let _ = d.tx().unwrap();
    assert!(d.q.needs_notification(&d.mem), "enabled");
    // Notify once descriptor 3 is used: not after 2 (position 3 used next), yes after 3.
    flags(&d, EVENT_DESC, encode(3, true));
    let _ = d.tx().unwrap();
    assert!(!d.q.needs_notification(&d.mem), "descriptor 2 used");
    let _ = d.tx().unwrap();
    assert!(d.q.needs_notification(&d.mem), "descriptor 3 used");
    assert!(!d.q.needs_notification(&d.mem), "nothing new");
    // An event on the other lap is not reached by this one.
    flags(&d, EVENT_DESC, encode(4, false));
    let _ = d.tx().unwrap();
    assert!(!d.q.needs_notification(&d.mem), "other lap");
}

#[test]
fn kicks_follow_our_device_event_suppression() {
    let mut d = Driver::new(true);
    let dev = |d: &Driver| -> (u16, u16) {
        let r = |a| d.mem.read_obj(GuestAddress(a)).unwrap();
        (r(DEVICE), r(DEVICE + 2))
    };
    d.q.disable_notification(&d.mem);
    assert_eq!(dev(&d).1, EVENT_DISABLE);
    assert!(!d.q.enable_notification(&d.mem), "nothing there");
    assert_eq!(dev(&d), (encode(0, true), EVENT_DESC));
    d.put(DATA, 72, 0, 0);
    assert!(d.q.enable_notification(&d.mem), "a chain is there");
    assert!(
        !d.q.arm_avail_past(&d.mem, encode(0, true)),
        "past it: no sleep"
    );
    assert!(d.q.arm_avail_past(&d.mem, encode(1, true)));
    assert_eq!(dev(&d), (encode(1, true), EVENT_DESC));
    let mut d = Driver::new(false);
    assert!(!d.q.enable_notification(&d.mem));
    assert_eq!(dev(&d).1, EVENT_ENABLE);
}

#[test]
fn random_rings_never_panic_nor_take_more_than_two_laps() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..2000 {
        let mut d = Driver::at(next(2) == 0, encode(next(u64::from(SIZE)) as u16, true));
        for p in 0..SIZE {
            let bits = [F_AVAIL, F_USED, 0, F_AVAIL | F_USED][next(4) as usize];
            let addr = [DATA, TABLE, MEM as u64 - 8, next(u64::MAX)][next(4) as usize];
            d.raw(
                p,
                addr,
                next(3000) as u32,
                next(12) as u16,
                next(8) as u16 | bits,
            );
            d.table(u64::from(p), DATA, next(100) as u32, next(8) as u16);
        }
        let mut taken = 0;
        while d.tx().is_some() {
            taken += 1;
            assert!(taken <= 2 * SIZE);
        }
        let mut w = RxWriter::new(2048);
        let mut s = vec![0u8; next(2000) as usize];
        let Driver { mem, q, .. } = &mut d;
        let _ = w.deliver(mem, q, &VolatileSlice::from(&mut s[..]), &conf());
        let _ = q.needs_notification(mem);
    }
}
