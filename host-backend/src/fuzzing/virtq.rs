//! The `virtq` target: a virtio-net guest's virtqueue, split or packed (the first byte's top
//! bit), every byte of it from the input (descriptor table or ring, indirect tables, avail ring
//! or wrap bits and buffer ids, event suppression, header settings, the frame a port delivers),
//! through the virtio-net frontend's TX and RX paths.

use super::input::Input;
use crate::frontend::virtio_net::packed::{encode, PackedQueue, F_AVAIL, F_USED};
use crate::frontend::virtio_net::queue::{
    tx_chain, HdrConf, RxOutcome, RxWriter, TxFrame, MAX_MERGE,
};
use crate::frontend::virtio_net::ring::VirtQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};

const SIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const INDIRECT: u64 = 0x4000;
const DATA: u64 = 0x10000;
const MEM: usize = 0x40000;

/// One guest's queue, then TX or RX over it: never a panic, never a length past the buffers
/// given, never more chains than were made available, and RX that waits for buffers takes none.
pub fn virtq(data: &[u8]) {
    match data.split_first() {
        Some((b, rest)) if b & 0x80 != 0 => packed(rest),
        _ => split(data),
    }
}

fn split(data: &[u8]) {
    let mut inp = Input::new(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let mut q = Queue::new(SIZE).expect("queue");
    q.set_size(SIZE);
    q.set_desc_table_address(Some(DESC as u32), Some((DESC >> 32) as u32));
    q.set_avail_ring_address(Some(AVAIL as u32), Some((AVAIL >> 32) as u32));
    q.set_used_ring_address(Some(USED as u32), Some((USED >> 32) as u32));
    q.set_event_idx(inp.bool());
    q.set_ready(true);
    for i in 0..SIZE + 4 {
        let (a, l) = (addr(&mut inp), len(&mut inp));
        let (flags, next) = (inp.below(8) as u16, inp.below(u32::from(SIZE) + 4) as u16);
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&a.to_le_bytes());
        entry[8..12].copy_from_slice(&l.to_le_bytes());
        entry[12..14].copy_from_slice(&flags.to_le_bytes());
        entry[14..].copy_from_slice(&next.to_le_bytes());
        if i < SIZE {
            let _ = mem.write_slice(&entry, GuestAddress(DESC + 16 * u64::from(i)));
        }
        let _ = mem.write_slice(&entry, GuestAddress(INDIRECT + 16 * u64::from(i % 8)));
    }
    // The avail ring: any heads (inside and outside the table), any index.
    let heads = inp.below(u32::from(SIZE) + 1) as u16;
    for k in 0..SIZE {
        let h = inp.below(u32::from(SIZE) + 4) as u16;
        let _ = mem.write_obj(h, GuestAddress(AVAIL + 4 + 2 * u64::from(k)));
    }
    let _ = mem.write_obj(heads, GuestAddress(AVAIL + 2));
    run(&mut inp, &mem, &mut VirtQueue::Split(q), SIZE);
}

/// A packed ring: descriptors with any flags (wrap bits weighted towards available), any buffer
/// ids, any base, any driver event suppression.
fn packed(data: &[u8]) {
    let mut inp = Input::new(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let event_idx = inp.bool();
    let base = match inp.below(4) {
        0 => inp.u16(),
        _ => encode(inp.below(u32::from(SIZE)) as u16, inp.below(4) != 0),
    };
    for i in 0..SIZE + 8 {
        let (a, l) = (addr(&mut inp), len(&mut inp));
        let avail = match inp.below(8) {
            0 => 0,
            1 => F_USED,
            2 => F_AVAIL | F_USED,
            3 => F_USED,
            _ => F_AVAIL,
        };
        let flags = inp.below(8) as u16 | avail;
        let id = inp.below(u32::from(SIZE) + 4) as u16;
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&a.to_le_bytes());
        entry[8..12].copy_from_slice(&l.to_le_bytes());
        entry[12..14].copy_from_slice(&id.to_le_bytes());
        entry[14..].copy_from_slice(&flags.to_le_bytes());
        if i < SIZE {
            let _ = mem.write_slice(&entry, GuestAddress(DESC + 16 * u64::from(i)));
        }
        let _ = mem.write_slice(&entry, GuestAddress(INDIRECT + 16 * u64::from(i % 8)));
    }
    let _ = mem.write_obj(inp.u16(), GuestAddress(AVAIL));
    let _ = mem.write_obj(inp.below(4) as u16, GuestAddress(AVAIL + 2));
    let Ok(q) = PackedQueue::new(&mem, SIZE, (DESC, AVAIL, USED), event_idx, base) else {
        return;
    };
    run(&mut inp, &mem, &mut VirtQueue::Packed(q), 2 * SIZE);
}

fn addr(inp: &mut Input) -> u64 {
    match inp.below(4) {
        0 => inp.u64(),
        1 => MEM as u64 - u64::from(inp.below(128)),
        2 => INDIRECT + 16 * u64::from(inp.below(4)),
        _ => DATA + u64::from(inp.below(0x8000)),
    }
}

fn len(inp: &mut Input) -> u32 {
    match inp.below(4) {
        0 => inp.u32(),
        1 => 16 * inp.below(6),
        _ => inp.below(3000),
    }
}

/// TX or RX over `q`; at most `most` chains may be taken (a packed ring's descriptors the driver
/// marked available for both wrap counter values can be taken twice).
fn run(inp: &mut Input, mem: &GuestMemoryMmap, q: &mut VirtQueue, most: u16) {
    let guest_len = if inp.below(4) == 0 { 10 } else { 12 };
    let c = HdrConf {
        guest_len,
        port_len: [0, 10, 12][inp.below(3) as usize].min(guest_len),
        csum: inp.bool(),
        guest_csum: inp.bool(),
        mrg_rxbuf: inp.below(3) != 0,
        tso4: inp.bool(),
        tso6: inp.bool(),
    };
    if inp.bool() {
        let mut buf = vec![0u8; 2048];
        // The worker's GSO scratch buffer, when TSO was negotiated.
        let mut scratch = vec![0u8; if c.tso4 || c.tso6 { 65536 + 256 } else { 0 }];
        let mut chains = 0;
        while let Some(chain) = q.pop(mem) {
            let head = chain.head();
            let dst = VolatileSlice::from(&mut buf[..]);
            match tx_chain(mem, chain, &c, &dst, &mut scratch) {
                Ok(TxFrame::Slot(n)) => assert!(n <= dst.len(), "a frame longer than its buffer"),
                Ok(TxFrame::Gso(h, n)) => {
                    assert!(c.tso4 || c.tso6, "a GSO frame without TSO");
                    assert!(n <= scratch.len());
                    // Cut as the worker does: every segment fits a buffer or is refused.
                    if let Ok(g) = ptnet_protocol::vnet::Gso::new(&h, &scratch[..n]) {
                        let mut seg = vec![0u8; 2048 - c.port_len];
                        for i in 0..g.count() {
                            if let Ok(l) = g.write_segment(&scratch[..n], i, &mut seg) {
                                assert!(l <= seg.len());
                            }
                        }
                    }
                }
                Err(_) => {}
            }
            let _ = q.add_used(mem, head, 0);
            chains += 1;
            assert!(chains <= most, "more chains than were made available");
        }
    } else {
        let mut w = RxWriter::new(2048);
        let flen = inp.below(2048) as usize;
        let mut slot = inp.bytes(flen).to_vec();
        slot.resize(flen, 0);
        for _ in 0..4 {
            let before = q.next_avail();
            let out = w.deliver(mem, q, &VolatileSlice::from(&mut slot[..]), &c);
            let taken = q.next_avail().wrapping_sub(before);
            match out {
                RxOutcome::Delivered(n) => assert!(n >= 1 && usize::from(n) <= MAX_MERGE),
                RxOutcome::NoBuffers | RxOutcome::Gso => {
                    assert_eq!(taken, 0, "chains given back, or none taken")
                }
                RxOutcome::Dropped(_) => {}
            }
            assert!(usize::from(taken) <= MAX_MERGE || matches!(q, VirtQueue::Packed(_)));
        }
    }
    // The interrupt and kick paths over whatever the rings hold now.
    let _ = q.needs_notification(mem);
    let _ = q.enable_notification(mem);
    let mark = q.avail_mark(mem);
    let _ = q.arm_avail_past(mem, mark);
    let _ = q.check(mem);
}
