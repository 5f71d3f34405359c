//! The one-thread poll server both the control socket ([`super::control`]) and the metrics
//! endpoint ([`super::metrics`]) run: a listening socket, a stop eventfd and at most a few
//! untrusted connections, each with a deadline, all non-blocking and waited on together with
//! `poll`. What a connection says and is answered is its protocol's [`PollClient`]; what no
//! client can do to the thread is here:
//!
//! * **A deadline per connection.** [`PollClient::deadline`] passed, the connection is closed,
//!   whatever it was doing; `poll` sleeps no longer than until the nearest deadline (or
//!   [`PollClient::due`], when a connection must be looked at again whatever its socket does).
//! * **Bounded connections.** At most [`PollClient::MAX_CLIENTS`] are served at once; one more
//!   is [`refused`](PollClient::refuse) (one non-blocking write) and closed at once.
//! * **Bounded accepts.** At most 64 connections are accepted per wake-up, so that a flood of
//!   them cannot starve the ones already served; those are served first.

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most connections a poll server can serve at once: `poll` watches eight descriptors, the
/// stop eventfd and the listener among them.
pub const CLIENT_LIMIT: usize = 6;

/// A listening socket a poll server accepts connections from.
pub trait Listener: AsRawFd {
    /// A connection.
    type Stream;
    /// The next queued connection.
    fn accept_stream(&self) -> io::Result<Self::Stream>;
    /// Makes a connection non-blocking.
    fn set_nonblocking(stream: &Self::Stream) -> io::Result<()>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_nonblocking(stream: &UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_stream(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_nonblocking(stream: &TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)
    }
}

/// The connection stream of a client's listener.
pub type StreamOf<C> = <<C as PollClient>::Listener as Listener>::Stream;

/// One connection of a protocol a poll server serves.
pub trait PollClient: Sized {
    /// Where its connections come from.
    type Listener: Listener;
    /// What every connection is answered from (the server's side, one for all of them).
    type Context;
    /// The server thread's name.
    const THREAD: &'static str;
    /// How the log names the server.
    const WHAT: &'static str;
    /// Connections served at once (at most [`CLIENT_LIMIT`]).
    const MAX_CLIENTS: usize;

    /// A new connection (already non-blocking), its deadline starting.
    fn accept(stream: StreamOf<Self>) -> Self;
    /// Tells a connection over [`Self::MAX_CLIENTS`] that it is refused, in one non-blocking
    /// write (whatever it manages); it is closed then.
    fn refuse(stream: StreamOf<Self>);
    /// Its socket.
    fn fd(&self) -> RawFd;
    /// What to wait for on its socket.
    fn events(&self) -> i16;
    /// When it is closed, whatever it is doing.
    fn deadline(&self) -> Instant;
    /// When it must be served again, whatever its socket does (never, by default).
    fn due(&self) -> Option<Instant> {
        None
    }
    /// Does what the connection allows without waiting; false when it is to be closed.
    fn service(&mut self, ctx: &Self::Context) -> bool;
}

/// A poll server's thread; stopped (the thread joined, every connection closed) when dropped.
pub struct PollThread {
    stop: File,
    thread: Option<JoinHandle<()>>,
}

impl PollThread {
    /// Serves `listener` (non-blocking) on a thread of its own, answering from `ctx`.
    pub fn spawn<C: PollClient + 'static>(
        listener: C::Listener,
        ctx: C::Context,
    ) -> io::Result<Self>
    where
        C::Listener: Send + 'static,
        C::Context: Send + 'static,
    {
        let stop = crate::sys::eventfd_file(true)?;
        let stop2 = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(C::THREAD.into())
            .spawn(move || serve::<C>(&listener, &stop2, &ctx))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (again: nothing).
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = crate::sys::eventfd_signal_nowait(&self.stop);
            let _ = t.join();
        }
    }
}

impl Drop for PollThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `poll`'s timeout for the nearest of `times` from `now`: milliseconds, rounded up; -1 (no
/// timeout) for none.
fn timeout_ms(now: Instant, times: impl Iterator<Item = Instant>) -> i32 {
    times
        .map(|t| t.saturating_duration_since(now))
        .min()
        .map_or(-1, |d| {
            i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        })
}

/// Accepts every queued connection: served while there is room, else refused.
fn accept_all<C: PollClient>(listener: &C::Listener, clients: &mut Vec<C>, ctx: &C::Context) {
    for _ in 0..64 {
        match listener.accept_stream() {
            Ok(stream) => {
                if C::Listener::set_nonblocking(&stream).is_err() {
                    continue;
                }
                if clients.len() >= C::MAX_CLIENTS {
                    C::refuse(stream);
                    continue;
                }
                let mut c = C::accept(stream);
                if c.service(ctx) {
                    clients.push(c);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The server thread: until `stop` is signalled.
fn serve<C: PollClient>(listener: &C::Listener, stop: &File, ctx: &C::Context) {
    const { assert!(C::MAX_CLIENTS <= CLIENT_LIMIT) };
    let mut clients: Vec<C> = Vec::new();
    loop {
        let now = Instant::now();
        clients.retain(|c| c.deadline() > now);
        let mut fds = vec![
            (stop.as_raw_fd(), libc::POLLIN),
            (listener.as_raw_fd(), libc::POLLIN),
        ];
        fds.extend(clients.iter().map(|c| (c.fd(), c.events())));
        let timeout = timeout_ms(
            now,
            clients
                .iter()
                .map(|c| c.due().map_or(c.deadline(), |d| d.min(c.deadline()))),
        );
        let mut revents = [0i16; 8];
        if let Err(e) = crate::sys::poll_revents(&fds, timeout, &mut revents) {
            tracing::warn!("{}: poll: {e}", C::WHAT);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if revents[0] != 0 {
            return;
        }
        // Connections first, so a newly accepted one is not looked at twice.
        let ready: Vec<bool> = revents[2..2 + clients.len()]
            .iter()
            .map(|&r| r != 0)
            .collect();
        let mut i = 0;
        let now = Instant::now();
        clients.retain_mut(|c| {
            let due = c.due().is_some_and(|d| d <= now);
            let keep = !(ready[i] || due) || c.service(ctx);
            i += 1;
            keep
        });
        if revents[1] != 0 {
            accept_all(listener, &mut clients, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_the_nearest_time_rounded_up() {
        let now = Instant::now();
        assert_eq!(timeout_ms(now, std::iter::empty()), -1);
        let t = [
            now + Duration::from_micros(2500),
            now + Duration::from_secs(2),
        ];
        assert_eq!(timeout_ms(now, t.into_iter()), 3);
        assert_eq!(timeout_ms(now + Duration::from_secs(9), t.into_iter()), 0);
    }
}
