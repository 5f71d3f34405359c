//! The reply timeout for requests made through the `vhost` crate.

use crate::error::from_vhost;
use crate::Error;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long we wait for any reply or for the SHMEM_MAP request.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds every wait for the daemon inside the `vhost` crate's frontend. That crate retries
/// EAGAIN for ever, so the socket's receive timeout alone never ends a wait for a reply that
/// does not come: while a request is out, this thread watches the clock, and at the reply
/// timeout shuts the socket down (`shutdown(2)`), which ends the wait with an error; the
/// connection is unusable from then on, and every later request fails at once.
pub(super) struct ReplyWatchdog {
    /// The transport's name, for [`Error::Disconnected`].
    name: String,
    state: Arc<(Mutex<WatchState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    deadline: Option<Instant>,
    fired: bool,
    quit: bool,
}

impl ReplyWatchdog {
    pub(super) fn new(name: &str, sock: &UnixStream) -> io::Result<Self> {
        let sock = sock.try_clone()?;
        let state: Arc<(Mutex<WatchState>, std::sync::Condvar)> = Arc::default();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("vu-reply-watch".into())
            .spawn(move || {
                let (lock, cv) = &*st;
                let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !s.quit {
                    match s.deadline {
                        None => s = cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                        Some(d) if Instant::now() >= d => {
                            s.fired = true;
                            s.deadline = None;
                            let _ = sock.shutdown(std::net::Shutdown::Both);
                        }
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            s = cv
                                .wait_timeout(s, left)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            })?;
        Ok(Self {
            name: name.to_string(),
            state,
            thread: Some(thread),
        })
    }

    /// Runs `f` (one request and its reply, through the `vhost` crate) under the reply timeout.
    pub(super) fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, vhost::Error>,
    ) -> Result<T, Error> {
        let (lock, cv) = &*self.state;
        let lock = || lock.lock().unwrap_or_else(|p| p.into_inner());
        if lock().fired {
            // The connection was closed after an earlier request went unanswered.
            return Err(Error::NoReply {
                request: what.to_string(),
                after: REPLY_TIMEOUT,
            });
        }
        lock().deadline = Some(Instant::now() + REPLY_TIMEOUT);
        cv.notify_all();
        let res = f();
        let fired = {
            let mut s = lock();
            s.deadline = None;
            s.fired
        };
        match res {
            Ok(v) if !fired => Ok(v),
            _ if fired => Err(Error::NoReply {
                request: what.to_string(),
                after: REPLY_TIMEOUT,
            }),
            Err(e) => Err(from_vhost(&self.name, what, e)),
            Ok(_) => unreachable!("matched above"),
        }
    }
}

impl Drop for ReplyWatchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).quit = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
