//! A VALE switch's MAC table, which is also the switch's source-address policy: every entry is
//! owned by one port, and a port may send only from addresses it owns.
//!
//! * Each port owns the MAC its device offers its guest from the start, and may claim up to its
//!   limit (`@conf:macs=N`, default [`DEFAULT_MAC_LIMIT`]) more: the first addresses it sends
//!   from that no other port owns. A bridge port (a middlebox forwarding other hosts' frames)
//!   needs a limit as large as the hosts behind it.
//! * An address another port owns is never taken over: a frame that claims it as its source is
//!   dropped and counted (`src_refused`). So is a frame from a new address past the limit, or
//!   whose set is full. A port cannot hijack another's unicast stream, nor evict its entries to
//!   make the switch flood (and so leak) that port's traffic.
//! * A port's claims end when its frontend goes (the next guest may use other addresses).
//! * Ports come and go while the switch runs (`ptnet-ctl add/remove`): [`MacTable::add_port`]
//!   gives a new port its own MAC and limit; [`MacTable::forget`] drops every entry of a removed
//!   one, its own MAC included, so that the switch floods rather than sends to a port that is gone.
//!
//! Lock-free: sets of [`WAYS`] words `mac << 16 | (port + 1)`, claimed with compare-and-swap;
//! the owner alone releases its words. The sender's TX ring thread checks its source on every
//! frame: one hash and, almost always, one compare.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Addresses a port may claim beyond its own by default: a guest that uses the MAC QEMU gave it
/// rather than the one the daemon offers still works, and a spoofer gets one address, not all.
pub const DEFAULT_MAC_LIMIT: u32 = 1;
/// Entries per set.
pub const WAYS: usize = 4;
const SETS: usize = 4096;

/// A MAC address as the table keys it: the 48 bits in the low bits of a u64.
pub fn mac_u64(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// What the table says about a frame's source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The sender owns it.
    Owned,
    /// The sender claimed it now.
    Claimed,
    /// Another port owns it.
    Spoofed,
    /// New, but the sender is at its limit (or the address's set is full).
    OverLimit,
}

/// Most ports a switch has at once (netmap's limit too); a port's index is below it.
pub const MAX_PORTS: usize = 254;

/// The table, for a switch of at most [`MAX_PORTS`] ports.
pub struct MacTable {
    sets: Box<[[AtomicU64; WAYS]]>,
    /// Per port index: addresses claimed (its own MAC not included), and its limit.
    claimed: Box<[AtomicU32]>,
    limits: Box<[AtomicU32]>,
}

fn entry(mac: u64, port: usize) -> u64 {
    mac << 16 | (port as u64 + 1)
}

fn owner(e: u64) -> Option<usize> {
    (e & 0xffff != 0).then(|| (e & 0xffff) as usize - 1)
}

impl MacTable {
    /// A table for ports `0..own.len()` with the given claim limits, each owning its own MAC
    /// (`own[p]`).
    pub fn new(own: &[[u8; 6]], limits: &[u32]) -> Self {
        let t = Self::empty();
        for (p, (mac, &limit)) in own.iter().zip(limits).enumerate() {
            t.add_port(p, *mac, limit);
        }
        t
    }

    /// A table with no ports.
    pub fn empty() -> Self {
        Self {
            sets: (0..SETS).map(|_| Default::default()).collect(),
            claimed: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            limits: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Port `port` (below [`MAX_PORTS`], not in the table: new, or [`Self::forget`]-ten)
    /// joins: it owns `own` and may claim `limit` more addresses.
    pub fn add_port(&self, port: usize, own: [u8; 6], limit: u32) {
        if port >= MAX_PORTS {
            return;
        }
        self.claimed[port].store(0, Ordering::Relaxed);
        self.limits[port].store(limit, Ordering::Relaxed);
        // Distinct ports have distinct MACs (derived from distinct names); a full set (four
        // colliding port MACs) leaves that port to claim its MAC like any other.
        self.insert(mac_u64(&own), port);
    }

    /// Port `port` left the switch: every entry it owns goes, its own MAC too, and it may claim
    /// nothing more.
    pub fn forget(&self, port: usize) {
        if port >= MAX_PORTS {
            return;
        }
        self.limits[port].store(0, Ordering::Relaxed);
        self.clear(port, None);
        self.claimed[port].store(0, Ordering::Relaxed);
    }

    /// Drops the entries of `port`, but `keep`.
    fn clear(&self, port: usize, keep: Option<u64>) {
        for set in self.sets.iter() {
            for w in set {
                let e = w.load(Ordering::Relaxed);
                if owner(e) == Some(port) && Some(e >> 16) != keep {
                    let _ = w.compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
    }

    fn set(&self, mac: u64) -> &[AtomicU64; WAYS] {
        &self.sets[((mac.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 52) as usize % SETS]
    }

    /// The port that owns `mac`.
    #[inline]
    pub fn lookup(&self, mac: u64) -> Option<usize> {
        self.set(mac).iter().find_map(|w| {
            let e = w.load(Ordering::Relaxed);
            if e >> 16 == mac {
                owner(e)
            } else {
                None
            }
        })
    }

    /// Puts `mac` in a free word of its set for `port`; false if the set is full or another
    /// port got there first.
    fn insert(&self, mac: u64, port: usize) -> bool {
        for w in self.set(mac) {
            match w.compare_exchange(0, entry(mac, port), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(e) if e >> 16 == mac => return owner(e) == Some(port),
                Err(_) => {}
            }
        }
        false
    }

    /// May `port` send from `mac`? Claims it when it is new and the port has room.
    #[inline]
    pub fn admit(&self, mac: u64, port: usize) -> Admit {
        match self.lookup(mac) {
            Some(p) if p == port => return Admit::Owned,
            Some(_) => return Admit::Spoofed,
            None => {}
        }
        let (Some(claimed), Some(limit)) = (self.claimed.get(port), self.limits.get(port)) else {
            return Admit::OverLimit;
        };
        if claimed.load(Ordering::Relaxed) >= limit.load(Ordering::Relaxed) {
            return Admit::OverLimit;
        }
        if !self.insert(mac, port) {
            // Lost a race for the address, or its set is full.
            return match self.lookup(mac) {
                Some(p) if p == port => Admit::Owned,
                Some(_) => Admit::Spoofed,
                None => Admit::OverLimit,
            };
        }
        claimed.fetch_add(1, Ordering::Relaxed);
        Admit::Claimed
    }

    /// The frontend of `port` went: its claims end (its own MAC stays its).
    pub fn release(&self, port: usize, own: [u8; 6]) {
        if port >= MAX_PORTS {
            return;
        }
        self.clear(port, Some(mac_u64(&own)));
        self.claimed[port].store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn ports_own_their_macs_and_claim_up_to_their_limit() {
        let t = MacTable::new(&[A, B], &[1, 3]);
        assert_eq!(t.lookup(mac_u64(&A)), Some(0));
        assert_eq!(t.admit(mac_u64(&A), 0), Admit::Owned);
        // B's address is B's: A cannot send from it, and B still owns it after the try.
        assert_eq!(t.admit(mac_u64(&B), 0), Admit::Spoofed);
        assert_eq!(t.lookup(mac_u64(&B)), Some(1));
        // One more address for A, then no more.
        assert_eq!(t.admit(0x0200_0000_0077, 0), Admit::Claimed);
        assert_eq!(t.admit(0x0200_0000_0077, 0), Admit::Owned);
        assert_eq!(t.admit(0x0200_0000_0078, 0), Admit::OverLimit);
        assert_eq!(t.lookup(0x0200_0000_0078), None);
        // A claimed address is A's: B cannot take it.
        assert_eq!(t.admit(0x0200_0000_0077, 1), Admit::Spoofed);
        // A's frontend goes: its claim ends, its own MAC stays.
        t.release(0, A);
        assert_eq!(t.lookup(0x0200_0000_0077), None);
        assert_eq!(t.lookup(mac_u64(&A)), Some(0));
        assert_eq!(t.admit(0x0200_0000_0078, 0), Admit::Claimed);
        // A removed port owns nothing, not even its MAC; a new port in its index starts afresh.
        t.forget(0);
        assert_eq!(t.lookup(mac_u64(&A)), None);
        assert_eq!(t.lookup(0x0200_0000_0078), None);
        assert_eq!(t.admit(0x0200_0000_0079, 0), Admit::OverLimit);
        assert_eq!(t.lookup(mac_u64(&B)), Some(1));
        t.add_port(0, [2, 0, 0, 0, 0, 9], 1);
        assert_eq!(t.lookup(mac_u64(&[2, 0, 0, 0, 0, 9])), Some(0));
        assert_eq!(t.admit(mac_u64(&A), 0), Admit::Claimed);
    }

    /// A port flooding random source addresses gets its limit's worth and evicts nobody.
    #[test]
    fn a_flood_of_source_addresses_evicts_nothing() {
        let own: Vec<[u8; 6]> = (0..8u8).map(|p| [2, 0, 0, 0, 1, p]).collect();
        let t = MacTable::new(&own, &[DEFAULT_MAC_LIMIT; 8]);
        let mut claimed = 0;
        let mut x = 0x1234_5678_9abc_u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mac = x & 0xfeff_ffff_ffff;
            claimed += u32::from(t.admit(mac, 7) == Admit::Claimed);
        }
        assert_eq!(claimed, DEFAULT_MAC_LIMIT);
        for (p, m) in own.iter().enumerate() {
            assert_eq!(t.lookup(mac_u64(m)), Some(p));
        }
    }
}
