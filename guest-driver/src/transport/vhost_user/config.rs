//! GET_CONFIG made by hand, with a deadline on every socket operation.

use super::watchdog::REPLY_TIMEOUT;
use super::VhostUserTransport;
use crate::error::ReplyProblem;
use crate::Error;
use std::io;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use vhost::vhost_user::message::VhostUserHeaderFlag;

/// vhost-user GET_CONFIG.
const GET_CONFIG: u32 = 24;
/// Largest GET_CONFIG we ask for (vhost-user's limit on a config space).
const MAX_CONFIG_REQUEST: usize = 256;

/// Runs `f` on `sock` with the socket's timeouts set to what is left until `deadline`. A timeout
/// (EAGAIN) is [`Error::NoReply`], never retried; the peer closing the socket is
/// [`Error::Disconnected`].
fn io_with_deadline(
    t: &VhostUserTransport,
    request: &str,
    deadline: Instant,
    f: impl FnOnce(&mut &UnixStream) -> io::Result<()>,
) -> Result<(), Error> {
    let sock = &t.ctl;
    let no_reply = || Error::NoReply {
        request: request.to_string(),
        after: REPLY_TIMEOUT,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(no_reply());
    }
    let set = |d| {
        sock.set_read_timeout(Some(d))
            .and_then(|()| sock.set_write_timeout(Some(d)))
    };
    set(left).map_err(|e| Error::io("socket timeout", e))?;
    let res = f(&mut &*sock);
    let _ = set(REPLY_TIMEOUT);
    res.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => no_reply(),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => Error::Disconnected {
            port: t.name.clone(),
        },
        _ => Error::io(format!("vhost-user {request}"), e),
    })
}

impl VhostUserTransport {
    /// GET_CONFIG of `size` bytes at `offset` of the device's config space. Made by hand, not
    /// through the `vhost` crate: a daemon refusing it answers with an empty config (size 0),
    /// for which vhost 0.18 waits for ever (it expects the payload, and retries EAGAIN); here a
    /// refusal is an error at once ([`ReplyProblem::Refused`]), and a silent daemon one after the
    /// reply timeout ([`Error::NoReply`]).
    pub fn read_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>, Error> {
        let request = format!("GET_CONFIG of {size} bytes at {offset}");
        let bad = |problem| Error::BadReply {
            request: request.clone(),
            problem,
        };
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        if len > MAX_CONFIG_REQUEST {
            return Err(bad(ReplyProblem::TooLarge(MAX_CONFIG_REQUEST)));
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut msg = Vec::with_capacity(24 + len);
        // Header (request GET_CONFIG, flags version 1, body size), then VhostUserConfig
        // (offset, size, flags) and `size` bytes of payload.
        for w in [GET_CONFIG, 0x1, 12 + size, offset, size, 0] {
            msg.extend_from_slice(&w.to_le_bytes());
        }
        msg.resize(24 + len, 0);
        io_with_deadline(self, &request, deadline, |s| {
            std::io::Write::write_all(s, &msg)
        })?;
        let mut hdr = [0u8; 12];
        io_with_deadline(self, &request, deadline, |s| {
            std::io::Read::read_exact(s, &mut hdr)
        })?;
        let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let (req, flags, body_len) = (word(&hdr, 0), word(&hdr, 4), word(&hdr, 8) as usize);
        if req != GET_CONFIG || flags & VhostUserHeaderFlag::REPLY.bits() == 0 {
            return Err(bad(ReplyProblem::NotAReply {
                request: req,
                flags,
            }));
        }
        if !(12..=12 + MAX_CONFIG_REQUEST).contains(&body_len) {
            return Err(bad(ReplyProblem::BodyLength(body_len)));
        }
        let mut body = vec![0u8; body_len];
        io_with_deadline(self, &request, deadline, |s| {
            std::io::Read::read_exact(s, &mut body)
        })?;
        let (r_offset, r_size) = (word(&body, 0), word(&body, 4));
        if r_size == 0 {
            return Err(bad(ReplyProblem::Refused));
        }
        if r_offset != offset || r_size != size || body_len != 12 + len {
            return Err(bad(ReplyProblem::Mismatch {
                offset: r_offset,
                size: r_size,
                body: body_len,
            }));
        }
        body.drain(..12);
        Ok(body)
    }
}
