//! `capture` on the control socket: a connection that asked for one becomes a pcap stream (the
//! framing is in [`super::protocol`]'s notes), fed from the port's [`Tap`] by the control thread
//! every [`TICK`].
//!
//! The port's rings never wait for this side: they copy into the tap's buffer with `try_lock`
//! and count what they could not copy. This side never waits for its client either: what the
//! client has not read yet stays queued here, up to [`MAX_PENDING`] bytes, and meanwhile the tap
//! is not drained (so its buffer fills and frames are counted missed); a client that reads
//! nothing for [`super::REQUEST_TIMEOUT`] is dropped, which stops the capture.

use super::protocol::{CaptureInfo, RequestError, Response};
use super::{Client, Operator, REQUEST_TIMEOUT};
use crate::capture::{for_each_record, pcap, CaptureError, Tap};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a capture's tap is drained.
pub const TICK: Duration = Duration::from_millis(50);
/// Bytes queued for a slow client before the tap is left to fill.
pub const MAX_PENDING: usize = 8 << 20;
/// The nanoseconds field of the end record (no real record has it).
pub const END_NSEC: u32 = 0xffff_ffff;

/// A running capture, owned by its connection.
pub struct Stream {
    tap: Arc<Tap>,
    raw: Vec<u8>,
    next_drain: Instant,
    /// The end record is queued: close once it is written.
    ending: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.ending {
            self.raw.clear();
            self.tap.stop(&mut self.raw);
        }
    }
}

/// Starts capturing `port`: the response line and the stream that follows it.
pub fn start(
    op: &dyn Operator,
    port: &str,
    count: Option<u64>,
    snaplen: u32,
) -> Result<(Response, Stream), RequestError> {
    let tap = op.tap(port)?;
    tap.start(count, snaplen).map_err(|e| match e {
        CaptureError::Busy => RequestError::CaptureBusy(port.chars().take(64).collect()),
        CaptureError::BadSnaplen(_) => RequestError::BadArgument(e.to_string()),
    })?;
    let info = CaptureInfo {
        port: port.to_string(),
        count,
        snaplen,
    };
    Ok((
        Response::capture(info),
        Stream {
            tap,
            raw: Vec::with_capacity(crate::capture::BUFFER_BYTES),
            next_drain: Instant::now() + TICK,
            ending: false,
        },
    ))
}

/// The pcap file header (after the response line).
pub fn header(snaplen: u32) -> [u8; 24] {
    pcap::file_header(snaplen)
}

impl Stream {
    /// When the control thread must look at this capture again, whatever its socket does.
    pub fn due(&self) -> Instant {
        self.next_drain
    }

    /// Moves what the tap recorded into `out` as pcap records; at the capture's end (all frames
    /// wanted, or `stop`), the end record too.
    fn drain(&mut self, out: &mut Vec<u8>, stop: bool) {
        self.raw.clear();
        let more = self.tap.drain(&mut self.raw) && !stop;
        let counts = (!more).then(|| self.tap.stop(&mut self.raw));
        for_each_record(&self.raw, |r| {
            let _ = pcap::write_record(out, &r);
        });
        if let Some(c) = counts {
            let body = format!("{{\"captured\":{},\"missed\":{}}}", c.captured, c.missed);
            let mut h = [0u8; 16];
            h[4..8].copy_from_slice(&END_NSEC.to_le_bytes());
            h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            h[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(body.as_bytes());
            self.ending = true;
        }
    }
}

/// Serves a capturing connection without waiting; false when it is to be closed.
pub(super) fn service(c: &mut Client) -> bool {
    let Some(s) = c.capture.as_mut() else {
        return false;
    };
    let now = Instant::now();
    // Whatever the client sends is ignored; its end of input ends the capture.
    let mut buf = [0u8; 512];
    while !c.eof {
        match c.stream.read(&mut buf) {
            Ok(0) => c.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    let pending = c.output.len() - c.written;
    if !s.ending && (c.eof || now >= s.next_drain) {
        s.next_drain = now + TICK;
        // A client behind by MAX_PENDING: the tap is left to fill (and count what it misses).
        if c.eof || pending < MAX_PENDING {
            c.output.drain(..c.written);
            c.written = 0;
            s.drain(&mut c.output, c.eof);
        }
    }
    while c.written < c.output.len() {
        match c.stream.write(&c.output[c.written..]) {
            Ok(0) => return false,
            Ok(n) => {
                c.written += n;
                c.deadline = now + REQUEST_TIMEOUT;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    // Everything written: the client is not behind.
    c.output.clear();
    c.written = 0;
    c.deadline = now + REQUEST_TIMEOUT;
    !s.ending
}

/// What a capturing connection waits for: its client's input (its end) until the end record is
/// queued, and room for what is queued.
pub(super) fn events(c: &Client) -> i16 {
    let mut ev = 0;
    if !c.eof {
        ev |= libc::POLLIN;
    }
    if c.written < c.output.len() {
        ev |= libc::POLLOUT;
    }
    ev
}
