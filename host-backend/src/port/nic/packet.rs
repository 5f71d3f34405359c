//! `packet:IFNAME`: a host interface through AF_PACKET sockets with TPACKET_V2 mmap'ed rings.
//!
//! * TX ring i: a socket bound to the interface for protocol 0 (it receives nothing) with a TX
//!   ring of as many frames as the netmap ring has slots; a sync copies each slot into the next
//!   free frame and makes one `sendto(MSG_DONTWAIT)` for the batch. PACKET_QDISC_BYPASS is on
//!   (like netmap, frames go straight to the driver) and PACKET_LOSS too (a frame the kernel
//!   refuses is skipped rather than blocking the ring).
//! * RX ring i: a socket bound for ETH_P_ALL with an RX ring, ignoring outgoing frames; with more
//!   than one RX ring the sockets join one PACKET_FANOUT_HASH group, so a flow stays on one ring.
//!   VLAN tags the kernel took out (TP_STATUS_VLAN_VALID) are put back into the frame.
//!
//! Unlike kernel netmap, AF_PACKET does not take the interface away from the host stack: the
//! stack still receives what arrives, and the port sees a copy.

use super::common::{link_error, require_if, NicError, NicParts, PortBufs};
use super::sys;
use crate::port::built::BuiltPort;
use crate::port::ring::{BatchCounts, RingStats, RingSync, TxBatch, Wake};
use crate::portspec::PortSpec;
use ptnet_protocol::netmap::{ring_add, RingView};
use ptnet_protocol::shmem::SharedMem;
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Bytes per kernel ring frame: the tpacket2 header, the link address, alignment and a full
/// netmap buffer fit in a page.
const FRAME_SIZE: usize = 4096;
/// Where TX frame data starts: TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) = 52 - 20.
const TX_DATA_OFS: usize = 32;

// struct tpacket2_hdr fields.
const TP_STATUS: usize = 0;
const TP_LEN: usize = 4;
const TP_SNAPLEN: usize = 8;
const TP_MAC: usize = 12;
const TP_VLAN_TCI: usize = 24;
const TP_VLAN_TPID: usize = 26;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;

const ETH_P_ALL: u16 = 0x0003;
const ETH_HLEN: usize = 14;

/// Fanout group ids: one per port, distinct within the daemon.
static NEXT_FANOUT: AtomicU32 = AtomicU32::new(0);

/// One socket with one mmap'ed ring.
struct RingSocket {
    // Field order: unmap before closing.
    ring: sys::Mapping,
    fd: OwnedFd,
    frames: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

fn ring_socket(
    port: &str,
    ifindex: u32,
    tx: bool,
    frames: u32,
    fanout: Option<u32>,
) -> Result<RingSocket, NicError> {
    let io = |what: &str, e| NicError::io(port, what.to_string(), e);
    let proto = if tx { 0 } else { ETH_P_ALL };
    let fd = sys::socket(libc::AF_PACKET, i32::from(proto.to_be()))
        .map_err(|e| io("creating an AF_PACKET socket", e))?;
    let raw = fd.as_raw_fd();
    let v2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
    sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &v2)
        .map_err(|e| io("PACKET_VERSION TPACKET_V2", e))?;
    let one: libc::c_int = 1;
    if tx {
        sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_LOSS, &one)
            .map_err(|e| io("PACKET_LOSS", e))?;
        // Best effort: without it frames go through the qdisc, which is correct too.
        let _ = sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one);
    } else {
        let _ = sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
    }
    let req = TpacketReq {
        block_size: FRAME_SIZE as u32,
        block_nr: frames,
        frame_size: FRAME_SIZE as u32,
        frame_nr: frames,
    };
    let opt = if tx {
        libc::PACKET_TX_RING
    } else {
        libc::PACKET_RX_RING
    };
    sys::setsockopt(raw, libc::SOL_PACKET, opt, &req)
        .map_err(|e| io("setting up the packet ring", e))?;
    let ring = sys::Mapping::shared(
        fd.as_fd(),
        0,
        FRAME_SIZE * frames as usize,
        libc::MAP_POPULATE,
    )
    .map_err(|e| io("mapping the packet ring", e))?;
    sys::bind_packet(raw, ifindex, proto).map_err(|e| io("binding to the interface", e))?;
    if let Some(group) = fanout {
        let arg: libc::c_int =
            (group & 0xffff) as libc::c_int | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
        sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
            .map_err(|e| io("joining the PACKET_FANOUT group", e))?;
    }
    Ok(RingSocket { ring, fd, frames })
}

pub(crate) fn build(spec: &PortSpec, ifname: &str) -> Result<BuiltPort, NicError> {
    let ifindex = require_if(&spec.name, ifname)?;
    let parts = NicParts::new(spec)?;
    let (t, r) = (parts.spec.tx_rings, parts.spec.rx_rings);
    let fanout = (r > 1).then(|| {
        (std::process::id() as u32
            ^ NEXT_FANOUT
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(7919))
            & 0xffff
    });
    let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
    for i in 0..t {
        let s = ring_socket(&spec.name, ifindex, true, parts.spec.tx_slots, None)?;
        let room = sys::EdgeWait::writable(s.fd.as_raw_fd(), None)
            .map_err(|e| NicError::io(&spec.name, "watching the TX socket (epoll)", e))?;
        syncs.push(Box::new(PacketTx {
            sock: s,
            room,
            blocked: false,
            next: 0,
            tx: parts.ring(i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[i as usize].clone(),
        }));
    }
    for i in 0..r {
        let s = ring_socket(&spec.name, ifindex, false, parts.spec.rx_slots, fanout)?;
        syncs.push(Box::new(PacketRx {
            sock: s,
            next: 0,
            rx: parts.ring(t + i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[(t + i) as usize].clone(),
            want_wake: false,
            scratch: Box::new([0; FRAME_SIZE]),
        }));
    }
    tracing::info!(
        port = spec.name,
        ifname,
        ifindex,
        "AF_PACKET rings attached"
    );
    Ok(parts.into_port(&spec.name, syncs, None))
}

/// TX ring i through its socket's TX ring.
pub struct PacketTx {
    sock: RingSocket,
    /// Wake-ups of the socket for room (frames completed), while the kernel ring is full.
    room: sys::EdgeWait,
    /// Slots are pending and the kernel ring is full: wake on `room`.
    blocked: bool,
    /// Next kernel frame to fill.
    next: u32,
    tx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
}

impl PacketTx {
    fn kmem(&self) -> SharedMem {
        self.sock.ring.mem().clone()
    }

    /// Hands the queued frames to the kernel. On a link error, the frames it did not take are
    /// given back (and counted as dropped) so a link that is down never fills the ring.
    fn flush(&mut self, dontwait: bool) -> u64 {
        match sys::kick_tx(self.sock.fd.as_raw_fd(), dontwait) {
            Ok(_) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => {
                if !link_error(&e) {
                    tracing::debug!("packet TX: {e}");
                }
                // The kernel's ring head is at the oldest frame still asking to be sent: the
                // run of SEND_REQUEST frames just behind `next`. Take them back and rewind, so
                // the kernel's head and ours agree again (it stops at the first frame that does
                // not ask to be sent, so a hole would stall the ring).
                let m = self.kmem();
                let frames = self.sock.frames;
                let mut dropped = 0;
                while dropped < u64::from(frames) {
                    let prev = (self.next + frames - 1) % frames;
                    let o = prev as usize * FRAME_SIZE + TP_STATUS;
                    if m.load_u32(o, Ordering::Acquire) != TP_STATUS_SEND_REQUEST {
                        break;
                    }
                    m.store_u32(o, TP_STATUS_AVAILABLE, Ordering::Release);
                    self.next = prev;
                    dropped += 1;
                }
                dropped
            }
        }
    }
}

impl PortSync for PacketTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let m = self.kmem();
        let mut queued = 0u32;
        let mut kicked = false;
        let mut b = TxBatch::new(k);
        while let Some(j) = b.slot() {
            let f = self.next as usize * FRAME_SIZE;
            let st = m.load_u32(f + TP_STATUS, Ordering::Acquire);
            if st == TP_STATUS_WRONG_FORMAT {
                // The kernel refused the frame that was here: counted, and the frame reused.
                b.counts.bad_slots += 1;
            } else if st != TP_STATUS_AVAILABLE {
                // The kernel still holds this frame: in flight (the interface is slower than
                // us), or still asking to be sent (an earlier send found the socket's send
                // buffer full). Push what is queued, and what is left, once per sync; if that
                // frees nothing the rest waits for room (see `arm`).
                if kicked {
                    break;
                }
                kicked = true;
                b.counts.drops += self.flush(true);
                queued = 0;
                continue;
            }
            let (idx, len) = (self.tx.buf_idx(j), usize::from(self.tx.len(j)));
            match self.bufs.offset(idx) {
                Some(off) if (ETH_HLEN..=self.bufs.buf_size()).contains(&len) => {
                    m.copy_from(f + TX_DATA_OFS, self.bufs.pool(), off, len);
                    m.store_u32(f + TP_LEN, len as u32, Ordering::Relaxed);
                    m.store_u32(f + TP_STATUS, TP_STATUS_SEND_REQUEST, Ordering::Release);
                    self.next = (self.next + 1) % self.sock.frames;
                    queued += 1;
                    b.counts.moved(len);
                }
                _ => b.counts.bad_slots += 1,
            }
            b.next();
        }
        if queued > 0 {
            b.counts.drops += self.flush(true);
        }
        // Frames the kernel gave back were counted as sent: they are drops.
        b.counts.packets = b.counts.packets.saturating_sub(b.counts.drops);
        b.finish(k, &self.stats);
    }
}

impl RingSync for PacketTx {
    fn arm(&mut self, k: &HostKring) -> bool {
        // Slots are left only while the kernel ring is full. The socket's POLLOUT cannot say
        // when it has room again: it holds while the send buffer is under half full, which a
        // ring of fewer frames than that holds (a small ring, every frame in flight) would spin
        // on. Its wake-ups can: the kernel wakes the socket (write space) as sent frames
        // complete, and when an error is reported. So forget the wake-ups so far, look at the
        // frame the next slot goes to, and sleep until the next wake-up if the kernel still
        // holds it (a wake-up in between is kept).
        self.blocked = false;
        if k.hwcur == k.rhead {
            return false;
        }
        self.room.clear();
        // A pending error would be reported again at every wake-up.
        let _ = sys::take_socket_error(self.sock.fd.as_raw_fd());
        let st = self.kmem().load_u32(
            self.next as usize * FRAME_SIZE + TP_STATUS,
            Ordering::Acquire,
        );
        if st == TP_STATUS_AVAILABLE || st == TP_STATUS_WRONG_FORMAT {
            return true;
        }
        self.blocked = true;
        false
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.blocked.then(|| Wake::readable(self.room.fd()))
    }
}

/// RX ring i from its socket's RX ring.
pub struct PacketRx {
    sock: RingSocket,
    /// Next kernel frame to look at.
    next: u32,
    rx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
    want_wake: bool,
    /// Room to finish a checksum in (allocated once).
    scratch: Box<[u8; FRAME_SIZE]>,
}

impl PacketRx {
    /// Copies kernel frame `f` into buffer offset `off`; returns the length, or None when it does
    /// not fit a buffer.
    fn copy_frame(&mut self, m: &SharedMem, f: usize, status: u32, off: usize) -> Option<usize> {
        let snap = m.load_u32(f + TP_SNAPLEN, Ordering::Relaxed) as usize;
        let len = m.load_u32(f + TP_LEN, Ordering::Relaxed) as usize;
        let mac = usize::from(m.load_u16(f + TP_MAC));
        let vlan = status & TP_STATUS_VLAN_VALID != 0;
        let total = snap + if vlan { 4 } else { 0 };
        if snap < len || total > self.bufs.buf_size() || mac + snap > FRAME_SIZE {
            return None;
        }
        let pool = self.bufs.pool();
        if vlan && snap >= 12 {
            // Put the tag the kernel took out back after the MAC addresses.
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                m.load_u16(f + TP_VLAN_TPID)
            } else {
                0x8100
            };
            let tci = m.load_u16(f + TP_VLAN_TCI);
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            pool.copy_from(off, m, f + mac, 12);
            pool.write(off + 12, &tag);
            pool.copy_from(off + 16, m, f + mac + 12, snap - 12);
        } else {
            pool.copy_from(off, m, f + mac, snap);
        }
        if status & TP_STATUS_CSUMNOTREADY != 0 {
            // A frame of the local stack (over veth, say) whose TCP/UDP checksum was left for
            // the hardware: finish it, the guest gets complete frames.
            let frame = &mut self.scratch[..total];
            if pool.read(off, frame) {
                if let Some((at, sum)) = l4_checksum(frame) {
                    pool.write(off + at, &sum.to_be_bytes());
                }
            }
        }
        Some(total)
    }
}

/// The checksum a TCP or UDP packet (IPv4, or IPv6 without extension headers) should carry, and
/// where it goes, when its checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL).
pub fn l4_checksum(f: &[u8]) -> Option<(usize, u16)> {
    let mut l3 = 14;
    let mut ty = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if ty == 0x8100 || ty == 0x88a8 {
        ty = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        l3 = 18;
    }
    let (proto, l4, end) = match ty {
        0x0800 => {
            let ihl = usize::from(f.get(l3)? & 0xf) * 4;
            let tot = usize::from(u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?]));
            (*f.get(l3 + 9)?, l3 + ihl, l3 + tot)
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([*f.get(l3 + 4)?, *f.get(l3 + 5)?]));
            (*f.get(l3 + 6)?, l3 + 40, l3 + 40 + plen)
        }
        _ => return None,
    };
    let at = l4
        + match proto {
            6 => 16,
            17 => 6,
            _ => return None,
        };
    let seg = f.get(l4..end)?;
    if at + 2 > end {
        return None;
    }
    let mut sum: u64 = 0;
    for c in seg.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    Some((at, if proto == 17 && c == 0 { 0xffff } else { c }))
}

impl PortSync for PacketRx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        k.hwcur = k.rhead;
        let stop = ring_prev(k.hwcur, n);
        let m = self.sock.ring.mem().clone();
        let mut c = BatchCounts::default();
        while k.hwtail != stop {
            let f = self.next as usize * FRAME_SIZE;
            let status = m.load_u32(f + TP_STATUS, Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let slot = k.hwtail;
            match self.bufs.offset(self.rx.buf_idx(slot)) {
                Some(off) => match self.copy_frame(&m, f, status, off) {
                    Some(len) => {
                        self.rx.set_len(slot, len as u16);
                        self.rx.set_flags(slot, 0);
                        c.moved(len);
                        k.hwtail = ring_add(slot, 1, n);
                    }
                    None => c.drops += 1,
                },
                None => {
                    // The guest put a bad buffer in a free slot: it gets the slot back empty
                    // and the frame is lost.
                    self.rx.set_len(slot, 0);
                    self.rx.set_flags(slot, 0);
                    c.bad_slots += 1;
                    k.hwtail = ring_add(slot, 1, n);
                }
            }
            m.store_u32(f + TP_STATUS, TP_STATUS_KERNEL, Ordering::Release);
            self.next = (self.next + 1) % self.sock.frames;
        }
        self.stats.add_batch(&c);
    }
}

impl RingSync for PacketRx {
    fn arm(&mut self, k: &HostKring) -> bool {
        let fd = self.sock.fd.as_raw_fd();
        // Before sleeping: collect the kernel's drops (its ring was full) and clear a pending
        // socket error (ENETDOWN when the link went down), which would otherwise keep poll
        // reporting POLLERR.
        let mut st = sys::TpacketStats::default();
        if sys::getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st).is_ok() {
            RingStats::add(&self.stats.drops, u64::from(st.drops));
        }
        let _ = sys::take_socket_error(fd);
        self.want_wake = k.hwtail != ring_prev(k.hwcur, k.num_slots);
        if !self.want_wake {
            return false;
        }
        let f = self.next as usize * FRAME_SIZE;
        self.sock
            .ring
            .mem()
            .load_u32(f + TP_STATUS, Ordering::Acquire)
            & TP_STATUS_USER
            != 0
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.want_wake
            .then(|| Wake::readable(self.sock.fd.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::l4_checksum;

    #[test]
    fn partial_udp_and_tcp_checksums_are_completed() {
        // IPv4 UDP 10.0.0.2:20000 -> 10.0.0.1:5555, payload "abc", padded to 60 bytes; the
        // checksum field holds the pseudo-header sum as the kernel leaves it.
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&31u16.to_be_bytes());
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[34..36].copy_from_slice(&20000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5555u16.to_be_bytes());
        f[38..40].copy_from_slice(&11u16.to_be_bytes());
        f[42..45].copy_from_slice(b"abc");
        // Pseudo-header sum: addresses, protocol, UDP length.
        let pseudo: u32 = 0x0a00 + 0x0002 + 0x0a00 + 0x0001 + 17 + 11;
        f[40..42].copy_from_slice(&(pseudo as u16).to_be_bytes());
        let (at, c) = l4_checksum(&f).unwrap();
        assert_eq!(at, 40);
        // Check: the full checksum over pseudo-header + segment with `c` in place is 0.
        f[40..42].copy_from_slice(&c.to_be_bytes());
        let mut v: Vec<u8> = Vec::new();
        v.extend_from_slice(&f[26..34]);
        v.extend_from_slice(&[0, 17, 0, 11]);
        v.extend_from_slice(&f[34..45]);
        let mut s: u32 = v
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(s, 0xffff);
        // TCP goes at offset 16 of its header; other protocols are left alone.
        f[23] = 6;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(l4_checksum(&f).unwrap().0, 50);
        f[23] = 1;
        assert!(l4_checksum(&f).is_none());
        f[12] = 0x86;
        f[13] = 0xdd;
        f[20] = 58;
        assert!(l4_checksum(&f).is_none());
    }
}
