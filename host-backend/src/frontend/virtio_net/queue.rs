//! Frames between virtqueue descriptor chains and netmap buffers: one copy each way, straight
//! between guest memory and the port's buffer, nothing allocated.
//!
//! * TX ([`tx_chain_to_buf`]): the readable descriptors of a chain are the guest's virtio-net
//!   header then its frame. The header is parsed and checked against what was negotiated, and
//!   rewritten in the port's header form (the length the port carries, 0 when it carries none);
//!   the frame goes into the netmap buffer after it. With TSO negotiated a GSO frame (up to 64
//!   KiB) goes into a scratch buffer instead ([`tx_chain`]) and is cut into segments of a
//!   slot each, their checksums complete: a netmap buffer holds one frame.
//! * RX ([`RxWriter::deliver`]): a netmap slot (the port's header form, then the frame) goes into
//!   one chain, or with `VIRTIO_NET_F_MRG_RXBUF` as many chains as it needs, with the guest's
//!   header (`num_buffers` the number of chains) written last into the first one.
//!
//! Everything the guest controls is checked: descriptor direction, addresses (inside guest
//! memory, each descriptor inside one region), lengths (the frame must fit a netmap buffer),
//! header fields. Both layouts ([`VirtQueue`]) bound every chain by the queue size (loops end
//! there) and refuse nested indirect tables; virtio-queue (split) ends a chain at a descriptor it
//! cannot read, the packed queue ends one with an error (the frame is dropped). What is left of
//! a chain is checked here like any other.

use super::mem::MemCache;
use super::ring::{Head, VirtQueue, VqError};
use ptnet_protocol::vnet::{self, VnetHeader};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Shortest frame accepted from a guest: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Most chains one received frame may span (mergeable buffers). A netmap buffer of 2 KiB needs
/// two of Linux's; a guest posting tiny buffers gets its frames dropped.
pub const MAX_MERGE: usize = 32;

/// The header forms on both sides, fixed at feature negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HdrConf {
    /// The guest's virtio-net header: 12 bytes (VERSION_1 or MRG_RXBUF), else 10.
    pub guest_len: usize,
    /// The header the port's netmap slots carry: the guest's length, or 0 for a port that
    /// carries none.
    pub port_len: usize,
    /// `VIRTIO_NET_F_CSUM` negotiated: the guest may send partial checksums.
    pub csum: bool,
    /// `VIRTIO_NET_F_GUEST_CSUM` negotiated: the guest takes partial checksums.
    pub guest_csum: bool,
    /// `VIRTIO_NET_F_MRG_RXBUF` negotiated.
    pub mrg_rxbuf: bool,
    /// `VIRTIO_NET_F_HOST_TSO4` negotiated: the guest may send TCP/IPv4 GSO frames (up to 64
    /// KiB), which the device cuts into segments.
    pub tso4: bool,
    /// `VIRTIO_NET_F_HOST_TSO6`: the same for TCP/IPv6.
    pub tso6: bool,
}

/// Why a TX chain's frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDrop {
    /// A device-writable descriptor in a TX chain.
    Writable,
    /// A chain the queue could not follow (a bad indirect table).
    BadChain,
    /// A descriptor outside guest memory (or across regions).
    BadAddress,
    /// Header plus frame longer than a netmap buffer.
    TooLong,
    /// No complete header, or a frame shorter than an Ethernet header.
    TooShort,
    /// A malformed header, or one asking for an offload that was not negotiated.
    BadHeader,
}

/// Why a received frame was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrop {
    /// The slot's header is malformed, or it asks for an offload the guest did not take
    /// (GSO), or its checksum cannot be completed.
    BadFrame,
    /// The frame needs more room than the guest's buffers (a chain without mergeable buffers,
    /// or more than [`MAX_MERGE`] chains).
    NoRoom,
    /// A chain with a device-readable descriptor, or a descriptor outside guest memory.
    BadChain,
}

/// What became of one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into this many chains.
    Delivered(u16),
    /// The guest has not posted enough buffers: the frame stays in the netmap ring, the chains
    /// looked at stay available.
    NoBuffers,
    /// Dropped (the slot is released anyway).
    Dropped(RxDrop),
    /// A GSO frame (the guest takes none): to be cut into segments first (`rxchain`); nothing
    /// was taken from the queue.
    Gso,
}

/// Copies the frame of a TX chain into `dst` (a netmap buffer) in the port's header form.
/// Returns the slot length. (No GSO: [`tx_chain`] with a scratch buffer takes those.)
pub fn tx_chain_to_buf<I: Iterator<Item = Result<Descriptor, VqError>>>(
    mem: &GuestMemoryMmap,
    chain: I,
    conf: &HdrConf,
    dst: &VolatileSlice<'_>,
) -> Result<usize, TxDrop> {
    match tx_chain(mem, chain, conf, dst, &mut [])? {
        TxFrame::Slot(n) => Ok(n),
        TxFrame::Gso(..) => Err(TxDrop::TooLong),
    }
}

/// What a TX chain became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxFrame {
    /// One slot of this length (header and frame) in the netmap buffer.
    Slot(usize),
    /// A GSO frame of this length in the scratch buffer, with the guest's header: the caller
    /// cuts it into segments (`vnet::Gso`), a slot each.
    Gso(VnetHeader, usize),
}

/// Copies the frame of a TX chain into `dst` (a netmap buffer) in the port's header form, or,
/// with TSO negotiated, a GSO frame into `scratch`: the chain goes into `dst` while it fits
/// (every frame that is not a super-frame pays one copy, as without TSO), and once it does not,
/// what was copied moves to `scratch` and the rest follows it there. A frame longer than a
/// buffer must be a GSO frame of a kind negotiated.
pub fn tx_chain<I: Iterator<Item = Result<Descriptor, VqError>>>(
    mem: &GuestMemoryMmap,
    chain: I,
    conf: &HdrConf,
    dst: &VolatileSlice<'_>,
    scratch: &mut [u8],
) -> Result<TxFrame, TxDrop> {
    tx_chain_in(&mut MemCache::new(mem), chain, conf, dst, scratch)
}

/// [`tx_chain`] with a round's region cache.
#[inline]
pub fn tx_chain_in<I: Iterator<Item = Result<Descriptor, VqError>>>(
    mc: &mut MemCache<'_>,
    chain: I,
    conf: &HdrConf,
    dst: &VolatileSlice<'_>,
    scratch: &mut [u8],
) -> Result<TxFrame, TxDrop> {
    let mut head = [0u8; vnet::HDR_LEN_MRG];
    let mut got_hdr = 0usize;
    let mut out = conf.port_len;
    // Frame bytes in `scratch`, once the frame outgrew the buffer.
    let mut spilled: Option<usize> = None;
    let limit = conf.guest_len + (dst.len() - conf.port_len).max(scratch.len());
    let mut total = 0usize;
    for d in chain {
        let d = d.map_err(|_| TxDrop::BadChain)?;
        if d.is_write_only() {
            return Err(TxDrop::Writable);
        }
        let len = d.len() as usize;
        if len == 0 {
            continue;
        }
        total = total.saturating_add(len);
        if total > limit {
            return Err(TxDrop::TooLong);
        }
        let mut s = mc.slice(d.addr(), len).ok_or(TxDrop::BadAddress)?;
        if got_hdr < conf.guest_len {
            let take = (conf.guest_len - got_hdr).min(len);
            let part = s.subslice(0, take).map_err(|_| TxDrop::BadAddress)?;
            part.copy_to(&mut head[got_hdr..got_hdr + take]);
            got_hdr += take;
            if take == len {
                continue;
            }
            s = s.offset(take).map_err(|_| TxDrop::BadAddress)?;
        }
        let at = match spilled {
            None if out + s.len() <= dst.len() => {
                let to = dst.subslice(out, s.len()).map_err(|_| TxDrop::TooLong)?;
                s.copy_to_volatile_slice(to);
                out += s.len();
                continue;
            }
            None if !scratch.is_empty() => move_to_scratch(dst, conf, out, scratch)?,
            None => return Err(TxDrop::TooLong),
            Some(n) => n,
        };
        let to = scratch.get_mut(at..at + s.len()).ok_or(TxDrop::TooLong)?;
        s.copy_to(to);
        spilled = Some(at + s.len());
    }
    let frame_len = spilled.unwrap_or(out - conf.port_len);
    if got_hdr < conf.guest_len || frame_len < ETH_HLEN {
        return Err(TxDrop::TooShort);
    }
    // The common header, all zeros (no offload), is the default one: no parse.
    let h = if head == [0u8; vnet::HDR_LEN_MRG] {
        VnetHeader::default()
    } else {
        VnetHeader::parse(&head[..conf.guest_len], conf.guest_len).map_err(|_| TxDrop::BadHeader)?
    };
    if h.is_gso() {
        // Only the kinds negotiated (TSO needs CSUM; no ECN, no UFO offered).
        let offered = match h.gso_kind() {
            vnet::gso::TCPV4 => conf.tso4,
            vnet::gso::TCPV6 => conf.tso6,
            _ => false,
        };
        if !offered || h.gso_type & vnet::gso::ECN != 0 || !conf.csum {
            return Err(TxDrop::BadHeader);
        }
        let n = match spilled {
            Some(n) => n,
            None => move_to_scratch(dst, conf, out, scratch).map_err(|_| TxDrop::BadHeader)?,
        };
        return Ok(TxFrame::Gso(h, n));
    }
    if spilled.is_some() {
        return Err(TxDrop::TooLong);
    }
    // A partial checksum only where CSUM was negotiated (which needs a port that carries the
    // header).
    if (h.needs_csum() && !conf.csum) || h.flags & vnet::flags::DATA_VALID != 0 {
        return Err(TxDrop::BadHeader);
    }
    emit_port_header(dst, conf, h)?;
    Ok(TxFrame::Slot(out))
}

/// Moves the frame bytes copied into the buffer so far (`out` is the end) to the start of
/// `scratch`; returns their length.
fn move_to_scratch(
    dst: &VolatileSlice<'_>,
    conf: &HdrConf,
    out: usize,
    scratch: &mut [u8],
) -> Result<usize, TxDrop> {
    let have = out - conf.port_len;
    let to = scratch.get_mut(..have).ok_or(TxDrop::TooLong)?;
    dst.subslice(conf.port_len, have)
        .map_err(|_| TxDrop::TooLong)?
        .copy_to(to);
    Ok(have)
}

/// Writes `h` in the port's header form at the start of the slot `dst` (nothing for a port
/// without a header).
pub fn emit_port_header(
    dst: &VolatileSlice<'_>,
    conf: &HdrConf,
    h: VnetHeader,
) -> Result<(), TxDrop> {
    if conf.port_len > 0 {
        let mut ph = [0u8; vnet::HDR_LEN_MRG];
        let h = VnetHeader {
            // A frame in one slot: as netmap's 12-byte form says it.
            num_buffers: u16::from(conf.port_len == vnet::HDR_LEN_MRG),
            ..h
        };
        h.emit(&mut ph, conf.port_len)
            .map_err(|_| TxDrop::BadHeader)?;
        dst.subslice(0, conf.port_len)
            .map_err(|_| TxDrop::TooLong)?
            .copy_from(&ph[..conf.port_len]);
    }
    Ok(())
}

/// Writes received frames into RX chains. Holds the scratch buffer for the rare frame whose
/// checksum must be completed for a guest that did not negotiate GUEST_CSUM.
pub struct RxWriter {
    scratch: Vec<u8>,
    /// (head, bytes written) of the chains of the frame being delivered.
    used: [(Head, u32); MAX_MERGE],
}

/// Where the guest's header goes: the first writable descriptors of the first chain.
#[derive(Clone, Copy, Default)]
struct HdrPieces {
    at: [(u64, u32); vnet::HDR_LEN_MRG],
    n: usize,
}

impl RxWriter {
    /// A writer for netmap buffers of `buf_size` bytes (allocates its scratch buffer once).
    pub fn new(buf_size: usize) -> Self {
        Self {
            scratch: vec![0; buf_size],
            used: [(Head::default(), 0); MAX_MERGE],
        }
    }

    /// Delivers the slot `frame` (the port's header form, then the frame) into the RX queue `q`.
    /// Returns what became of it; on [`RxOutcome::Delivered`] the chains are in the used ring
    /// (the caller decides on the interrupt).
    pub fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        q: &mut VirtQueue,
        frame: &VolatileSlice<'_>,
        conf: &HdrConf,
    ) -> RxOutcome {
        // The header the port wrote (its own guest's, or the switch's conversion): checked.
        let mut h = VnetHeader::default();
        if conf.port_len > 0 {
            let mut ph = [0u8; vnet::HDR_LEN_MRG];
            if frame.len() < conf.port_len {
                return RxOutcome::Dropped(RxDrop::BadFrame);
            }
            if let Ok(s) = frame.subslice(0, conf.port_len) {
                s.copy_to(&mut ph[..conf.port_len]);
            }
            match VnetHeader::parse(&ph[..conf.port_len], conf.port_len) {
                Ok(p) => h = p,
                Err(_) => return RxOutcome::Dropped(RxDrop::BadFrame),
            }
        }
        let Ok(payload) = frame.offset(conf.port_len) else {
            return RxOutcome::Dropped(RxDrop::BadFrame);
        };
        if h.is_gso() {
            return RxOutcome::Gso;
        }
        h.num_buffers = 0;
        let mut scratch_len = None;
        if !conf.guest_csum {
            if h.needs_csum() {
                let n = payload.len().min(self.scratch.len());
                payload.copy_to(&mut self.scratch[..n]);
                if vnet::complete_checksum(&h, &mut self.scratch[..n]).is_err() {
                    return RxOutcome::Dropped(RxDrop::BadFrame);
                }
                scratch_len = Some(n);
            }
            h = VnetHeader::default();
        }
        let src: VolatileSlice<'_> = match scratch_len {
            Some(n) => VolatileSlice::from(&mut self.scratch[..n]),
            None => payload,
        };
        Self::write_chains(&mut self.used, mem, q, &src, h, conf)
    }

    fn write_chains(
        used: &mut [(Head, u32); MAX_MERGE],
        mem: &GuestMemoryMmap,
        q: &mut VirtQueue,
        src: &VolatileSlice<'_>,
        mut h: VnetHeader,
        conf: &HdrConf,
    ) -> RxOutcome {
        let total = conf.guest_len + src.len();
        let mut pieces = HdrPieces::default();
        let mut pos = 0usize; // bytes of header + frame placed so far
        let mut chains = 0usize;
        let mut bad = false;
        while pos < total {
            if chains == MAX_MERGE || (chains == 1 && !conf.mrg_rxbuf) {
                // Cannot fit: give back what was taken but not yet used (nothing written is
                // visible to the guest before the used ring says so) and drop the frame.
                for &(head, _) in used[..chains].iter().rev() {
                    q.undo_pop(head);
                }
                return RxOutcome::Dropped(RxDrop::NoRoom);
            }
            let Some(chain) = q.pop(mem) else {
                for &(head, _) in used[..chains].iter().rev() {
                    q.undo_pop(head);
                }
                return RxOutcome::NoBuffers;
            };
            let head = chain.head();
            let mut written = 0u32;
            for d in chain {
                let Some(d) = d.ok().filter(Descriptor::is_write_only) else {
                    bad = true;
                    break;
                };
                let len = d.len() as usize;
                if len == 0 {
                    continue;
                }
                let Ok(dst) = mem.get_slice(d.addr(), len) else {
                    bad = true;
                    break;
                };
                let mut off = 0usize;
                // The header part: recorded, written once the chain count is known.
                if pos < conf.guest_len {
                    let take = (conf.guest_len - pos).min(len);
                    if pieces.n < pieces.at.len() {
                        pieces.at[pieces.n] = (d.addr().0, take as u32);
                        pieces.n += 1;
                    }
                    pos += take;
                    off = take;
                }
                if pos >= conf.guest_len && off < len && pos < total {
                    let from = pos - conf.guest_len;
                    let n = (len - off).min(total - pos);
                    match (dst.subslice(off, n), src.subslice(from, n)) {
                        (Ok(d), Ok(s)) => s.copy_to_volatile_slice(d),
                        _ => {
                            bad = true;
                            break;
                        }
                    }
                    pos += n;
                    off += n;
                }
                written += off as u32;
                if pos == total {
                    break;
                }
            }
            used[chains] = (head, written);
            chains += 1;
            if bad {
                break;
            }
            if written == 0 {
                // A chain with no room at all: hand it back empty rather than loop on it.
                bad = true;
                break;
            }
        }
        if bad {
            // The guest's own broken buffer: every chain taken goes back empty (a driver drops a
            // buffer shorter than a header), and the frame is dropped.
            for &(head, _) in &used[..chains] {
                let _ = q.add_used(mem, head, 0);
            }
            return RxOutcome::Dropped(RxDrop::BadChain);
        }
        h.num_buffers = chains as u16;
        let mut hb = [0u8; vnet::HDR_LEN_MRG];
        if h.emit(&mut hb, conf.guest_len).is_err() {
            return RxOutcome::Dropped(RxDrop::BadFrame);
        }
        let mut at = 0usize;
        for &(addr, len) in &pieces.at[..pieces.n] {
            let len = len as usize;
            if let Ok(s) = mem.get_slice(GuestAddress(addr), len) {
                s.copy_from(&hb[at..at + len]);
            }
            at += len;
        }
        for &(head, len) in &used[..chains] {
            if q.add_used(mem, head, len).is_err() {
                return RxOutcome::Dropped(RxDrop::BadChain);
            }
        }
        RxOutcome::Delivered(chains as u16)
    }
}

#[cfg(test)]
mod tests;
