//! Capture: a port's frames, both directions, copied out for `ptnet-ctl capture` as a monitor
//! that never slows or blocks the port.
//!
//! Each served port has one [`Tap`]. While nobody captures, a ring thread pays one relaxed load
//! per batch ([`Tap::batch`] returns `None`). While a capture runs, a batch takes the tap's lock
//! with `try_lock` only: when the control thread (or another ring of the port) holds it, the
//! batch's frames are not copied and are counted as missed, never waited for. Copies go into a
//! buffer allocated when the capture starts; a full buffer counts the frame as missed too. The
//! control thread swaps the filled buffer for an empty one ([`Tap::drain`]) and writes the
//! records out as pcap ([`pcap`]) away from the data path.
//!
//! The bytes copied are what the frontend shares with us and may change under the copy: a
//! capture shows whatever was there, bounded by the slot's checked length.

pub mod pcap;
pub mod ring;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which way a captured frame went, seen from the port's frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The frontend transmitted it into the port.
    FromFrontend = 0,
    /// The port delivered it to the frontend.
    ToFrontend = 1,
}

/// Bytes of one record's header in the capture buffer: timestamp (8), original length (4),
/// captured length (4), direction (1), padding (3).
const RECORD_HDR: usize = 20;

/// Default bytes kept of each frame (the netmap buffer size: whole frames).
pub const DEFAULT_SNAPLEN: u32 = 2048;

/// Capture buffer of one session: enough for about 2000 full frames between two drains.
pub const BUFFER_BYTES: usize = 4 << 20;

/// What a capture session collects between two drains.
struct Session {
    buf: Vec<u8>,
    snaplen: u32,
    /// Frames still wanted (`u64::MAX`: no limit).
    wanted: u64,
}

/// One port's capture point.
#[derive(Default)]
pub struct Tap {
    active: AtomicBool,
    session: Mutex<Option<Session>>,
    /// Frames a running capture did not get (tap busy or buffer full).
    missed: AtomicU64,
    /// Frames captured.
    captured: AtomicU64,
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    /// One capture per port at a time.
    #[error("a capture of this port is already running")]
    Busy,
    /// A snap length of 0, or over a netmap buffer.
    #[error("snap length {0}: must be 1..={DEFAULT_SNAPLEN}")]
    BadSnaplen(u32),
}

/// A capture's counters, as its end reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Frames recorded.
    pub captured: u64,
    /// Frames the capture did not get.
    pub missed: u64,
}

impl Tap {
    /// Starts a capture of at most `count` frames (`None`: until [`Tap::stop`]) keeping
    /// `snaplen` bytes of each.
    pub fn start(&self, count: Option<u64>, snaplen: u32) -> Result<(), CaptureError> {
        if snaplen == 0 || snaplen > DEFAULT_SNAPLEN {
            return Err(CaptureError::BadSnaplen(snaplen));
        }
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_some() {
            return Err(CaptureError::Busy);
        }
        *s = Some(Session {
            buf: Vec::with_capacity(BUFFER_BYTES),
            snaplen,
            wanted: count.unwrap_or(u64::MAX),
        });
        self.missed.store(0, Ordering::Relaxed);
        self.captured.store(0, Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the capture; what was recorded but not drained yet goes into `out`.
    pub fn stop(&self, out: &mut Vec<u8>) -> CaptureCounts {
        self.active.store(false, Ordering::Release);
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sess) = s.take() {
            out.extend_from_slice(&sess.buf);
        }
        self.counts()
    }

    /// The running capture's counters.
    pub fn counts(&self) -> CaptureCounts {
        CaptureCounts {
            captured: self.captured.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }

    /// True while a capture runs.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Moves what was recorded so far into `out` (records of [`for_each_record`]'s form);
    /// returns false once the capture got all the frames it wanted (or was stopped). An empty
    /// `out` of [`BUFFER_BYTES`] capacity is swapped with the tap's buffer (the rings wait for
    /// no copy: the lock is held for a swap); otherwise the records are copied.
    pub fn drain(&self, out: &mut Vec<u8>) -> bool {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match s.as_mut() {
            Some(sess) => {
                if out.is_empty() && out.capacity() >= BUFFER_BYTES {
                    std::mem::swap(out, &mut sess.buf);
                } else {
                    out.extend_from_slice(&sess.buf);
                    sess.buf.clear();
                }
                sess.wanted > 0
            }
            None => false,
        }
    }

    /// The capture's side of one ring batch: `None` when no capture runs or the tap is busy
    /// (the batch's frames are then missed: `missed_if_busy` of them are counted).
    #[inline]
    pub fn batch(&self, missed_if_busy: u64) -> Option<TapBatch<'_>> {
        if !self.is_active() {
            return None;
        }
        match self.session.try_lock() {
            Ok(guard) if guard.is_some() => Some(TapBatch {
                tap: self,
                guard,
                ts: 0,
            }),
            Ok(_) => None,
            Err(TryLockError::WouldBlock) => {
                self.missed.fetch_add(missed_if_busy, Ordering::Relaxed);
                None
            }
            // A panicked holder: the session is left as it was; this batch is missed.
            Err(TryLockError::Poisoned(_)) => None,
        }
    }
}

/// A batch's hold on the tap: frames pushed with [`TapBatch::push`].
pub struct TapBatch<'a> {
    tap: &'a Tap,
    guard: std::sync::MutexGuard<'a, Option<Session>>,
    /// The batch's timestamp (one clock read a batch), 0 until its first frame.
    ts: u64,
}

impl TapBatch<'_> {
    /// Records one frame of `len` bytes; `fill` copies its first `dst.len()` bytes (at most the
    /// snap length) into `dst` and returns false when it could not read them (the record is
    /// dropped then). Returns false when the buffer is full (the frame is counted missed): the
    /// caller may count the rest of its batch with [`Self::miss`] at once.
    pub fn push(
        &mut self,
        dir: Direction,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> bool {
        let Some(s) = self.guard.as_mut() else {
            return false;
        };
        if s.wanted == 0 {
            return false;
        }
        let cap = len.min(s.snaplen as usize);
        if s.buf.len() + RECORD_HDR + cap > s.buf.capacity() {
            self.tap.missed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let at = s.buf.len();
        if self.ts == 0 {
            self.ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
        }
        s.buf.extend_from_slice(&self.ts.to_le_bytes());
        s.buf.extend_from_slice(&(len as u32).to_le_bytes());
        s.buf.extend_from_slice(&(cap as u32).to_le_bytes());
        s.buf.extend_from_slice(&[dir as u8, 0, 0, 0]);
        s.buf.resize(at + RECORD_HDR + cap, 0);
        if !fill(&mut s.buf[at + RECORD_HDR..]) {
            s.buf.truncate(at);
            return true;
        }
        s.wanted -= 1;
        self.tap.captured.fetch_add(1, Ordering::Relaxed);
        if s.wanted == 0 {
            self.tap.active.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Counts `n` frames missed (the rest of a batch after [`Self::push`] found no room).
    pub fn miss(&mut self, n: u64) {
        if n != 0 && self.guard.as_ref().is_some_and(|s| s.wanted > 0) {
            self.tap.missed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One record of a drained buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's length.
    pub orig_len: u32,
    /// Its first bytes (at most the snap length).
    pub data: &'a [u8],
    /// Which way it went.
    pub dir: Direction,
}

/// Calls `f` for each record in `buf` (what [`Tap::drain`] and [`Tap::stop`] wrote).
pub fn for_each_record(buf: &[u8], mut f: impl FnMut(Record<'_>)) {
    let mut at = 0;
    while at + RECORD_HDR <= buf.len() {
        let word = |o: usize| u32::from_le_bytes(buf[at + o..at + o + 4].try_into().unwrap());
        let ts_ns = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
        let (orig_len, cap) = (word(8), word(12) as usize);
        let dir = if buf[at + 16] == 1 {
            Direction::ToFrontend
        } else {
            Direction::FromFrontend
        };
        let end = at + RECORD_HDR + cap;
        if end > buf.len() {
            return;
        }
        f(Record {
            ts_ns,
            orig_len,
            data: &buf[at + RECORD_HDR..end],
            dir,
        });
        at = end;
    }
}

#[cfg(test)]
mod tests;
