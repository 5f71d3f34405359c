//! Serving ports on vhost-user sockets: one listening socket per port, one frontend connection
//! served at a time, on a thread of its own. A connection's end (clean or not) is an implicit
//! DELETE; the port keeps its rings for the next frontend.
//!
//! No frontend can hold a port, or the daemon, for ever:
//!
//! * **Reads never block.** The connection thread hands a request to the `vhost` crate's
//!   handler only once the whole message (header and body) is queued on the socket, so the
//!   handler never waits for a frontend's bytes (vhost 0.18 retries EAGAIN for ever, so a
//!   receive timeout would not help). A connection must complete its first message within the
//!   handshake timeout (`--handshake-timeout`, default 5 s), and any message it has started
//!   within the idle timeout (`--idle-timeout`, default 5 s), or it is cut. A connection that
//!   completed its handshake may then stay silent for as long as it likes (QEMU does: the guest
//!   talks through shared memory).
//! * **A running port is kept; a held one is taken over.** A new connection to a port that
//!   already has one waits. If the active connection's guest runs the rings (PTCTL CREATE), it
//!   keeps the port, however quiet (QEMU talks through shared memory once set up; a QEMU that
//!   dies hangs its socket up, and its successor is served at once): the newcomer is refused
//!   after the idle timeout. Otherwise, once the newcomer has queued a complete first message,
//!   it takes the port over when the active connection has sent no complete message for the
//!   idle timeout (at once when that is already so: a frontend that holds the port without
//!   using it, stuck half way through a message, or blocking the daemon by not reading its
//!   replies), and in any case after waiting the idle timeout itself. QEMU reconnecting after a
//!   restart is therefore never locked out (the socket is 0600: only the daemon's user, or
//!   `--socket-group`, can connect at all). A waiting connection that does not send a complete
//!   message within the handshake timeout, or hangs up, is dropped; a newer one replaces an
//!   older one that is still waiting. A displaced connection is shut down (`shutdown(2)`), which
//!   also ends a reply write the frontend never reads.
//! * **Stopping needs nothing from the socket file.** The listener is non-blocking and polled
//!   with a stop eventfd, so `stop` completes even if the socket file was removed or replaced;
//!   the file is removed only if it is still the socket this server bound.
//! * **One daemon per socket.** `PATH.lock` is locked (flock) for the server's lifetime: a
//!   second daemon refuses the socket, and a socket is unlinked only by the holder of its lock,
//!   and only when nothing answers on it.
//! * **Private sockets.** A socket is created 0600 whatever the umask (the umask is narrowed
//!   around `bind`, so it is never reachable with wider permissions), or 0660 with group
//!   `--socket-group`.

pub use super::device::ServedDevice;
pub use super::socket::ServeError;
use super::socket::{claim_socket, file_id, ClaimedSocket};
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::frontend::ptnet::PtnetDevice;
use crate::frontend::virtio_net::vq::VqStats;
use crate::frontend::virtio_net::VirtioNetDevice;
use crate::portspec::Frontend;
use crate::served::Port;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vhost::vhost_user::message::MAX_MSG_SIZE;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Size of a vhost-user message header (request, flags, size: three u32).
const HEADER_SIZE: usize = 12;
/// How often a connection holding a half message is looked at again (poll cannot wait for "more
/// bytes" on a socket that already has some).
const PARTIAL_TICK: Duration = Duration::from_millis(10);

/// How ports are served.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// The ring threads' options.
    pub loops: LoopOptions,
    /// Time a connection has for its first complete message (and a waiting one to queue it).
    pub handshake_timeout: Duration,
    /// Time a started message has to complete; and how long an active connection must have been
    /// silent (or a newer one must have waited) before a newer connection takes the port.
    pub idle_timeout: Duration,
    /// Group given the sockets (mode 0660 then, 0600 without).
    pub socket_group: Option<u32>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            loops: LoopOptions::default(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            socket_group: None,
        }
    }
}

/// A port being served on a socket.
pub struct PortServer {
    path: PathBuf,
    status: Arc<dyn StatusView>,
    /// The virtio-net device's virtqueue counters (kept across connections).
    virtqueues: Option<Vec<Arc<VqStats>>>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    /// (device, inode) of the socket we bound: removed at stop only if the path still names it.
    socket_id: (u64, u64),
    /// The lock file, locked: removed (while still locked) at stop.
    lock: (PathBuf, File),
}

/// What a server tells about its frontend (see [`PortServer::frontend`]).
struct ServerStatus<D> {
    /// The port's device (shared with the connection threads).
    device: Arc<Mutex<D>>,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// A connection is being served.
    active: AtomicBool,
}

/// A [`ServerStatus`], whichever its device.
trait StatusView: Send + Sync {
    fn frontend(&self) -> FrontendStatus;
}

impl<D: ServedDevice> StatusView for ServerStatus<D> {
    fn frontend(&self) -> FrontendStatus {
        FrontendStatus {
            connected: self.active.load(Ordering::SeqCst),
            running: self.device.lock().expect("device lock").running(),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }
}

/// Starts the port's listener thread over `device`.
fn spawn_supervisor<D: ServedDevice>(
    device: D,
    port: Arc<Port>,
    listener: UnixListener,
    stop: EventFd,
    opts: ServeOptions,
) -> io::Result<(Arc<dyn StatusView>, JoinHandle<()>)> {
    let status = Arc::new(ServerStatus {
        device: Arc::new(Mutex::new(device)),
        accepted: AtomicU64::new(0),
        active: AtomicBool::new(false),
    });
    let status2 = status.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vu-{}", port.name()).chars().take(15).collect())
        .spawn(move || supervise(port, listener, stop, opts, &status2))?;
    Ok((status, thread))
}

/// A port's frontend, as its server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendStatus {
    /// A connection is being served.
    pub connected: bool,
    /// Its rings run (PTCTL CREATE or RESUME succeeded).
    pub running: bool,
    /// Connections accepted since the server started.
    pub accepted: u64,
}

impl PortServer {
    /// Locks `path`, listens on it (replacing a stale socket, never a live one) and serves
    /// `port` there.
    pub fn start(port: Arc<Port>, path: &Path, opts: ServeOptions) -> Result<Self, ServeError> {
        Self::start_frontend(port, path, opts, Frontend::Ptnet)
    }

    /// [`Self::start`], serving the port as `frontend`'s device.
    pub fn start_frontend(
        port: Arc<Port>,
        path: &Path,
        opts: ServeOptions,
        frontend: Frontend,
    ) -> Result<Self, ServeError> {
        let ClaimedSocket {
            lock,
            listener,
            socket_id,
        } = claim_socket(path, opts.socket_group)?;
        let listen_err = |e| ServeError::Listen(path.to_path_buf(), e);
        let stop = EventFd::new(EFD_NONBLOCK).map_err(listen_err)?;
        let stop2 = stop.try_clone().map_err(listen_err)?;
        // The device is made here, so that its status can be asked from the start.
        let mut virtqueues = None;
        let (status, thread) = match frontend {
            Frontend::Ptnet => {
                let device = PtnetDevice::new(port.clone(), opts.loops);
                spawn_supervisor(device, port, listener, stop2, opts)
            }
            Frontend::VirtioNet => {
                let device = VirtioNetDevice::new(port.clone(), opts.loops);
                virtqueues = Some(device.queue_stats());
                spawn_supervisor(device, port, listener, stop2, opts)
            }
        }
        .map_err(listen_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            status,
            virtqueues,
            stop,
            thread: Some(thread),
            socket_id,
            lock,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The port's frontend: connected or not, running its rings or not. (Waits for the request
    /// the connection is handling, if any: requests are handled only once queued whole.)
    pub fn frontend(&self) -> FrontendStatus {
        self.status.frontend()
    }

    /// A virtio-net port's virtqueue counters (`None`: a ptnet port).
    pub fn virtqueues(&self) -> Option<&[Arc<VqStats>]> {
        self.virtqueues.as_deref()
    }

    /// Stops serving: closes the connection (stopping the rings) and the socket, and removes the
    /// socket file if it is still ours. Needs nothing from the socket file.
    pub fn stop(mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if file_id(&self.path) == Some(self.socket_id) {
            let _ = std::fs::remove_file(&self.path);
        }
        // Removed while still locked (see `socket::lock_socket_path`), then unlocked by the close.
        let _ = std::fs::remove_file(&self.lock.0);
    }
}

/// What is queued on a connection.
#[derive(Debug, PartialEq, Eq)]
enum Queued {
    /// Nothing.
    Nothing,
    /// Part of a message.
    Partial,
    /// At least one whole message: the handler can read it without waiting.
    Message,
    /// Something no frontend sends (the reason).
    Bad(String),
}

fn queued(stream: &UnixStream) -> io::Result<Queued> {
    let n = crate::sys::bytes_queued(stream.as_fd())?;
    if n == 0 {
        return Ok(Queued::Nothing);
    }
    if n < HEADER_SIZE {
        return Ok(Queued::Partial);
    }
    let mut hdr = [0u8; HEADER_SIZE];
    if crate::sys::peek(stream.as_fd(), &mut hdr)? < HEADER_SIZE {
        // A peek stops after a chunk carrying descriptors: the header was split around them.
        return Ok(Queued::Bad(
            "a message header split around attached descriptors".into(),
        ));
    }
    let size = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")) as usize;
    if size > MAX_MSG_SIZE {
        return Ok(Queued::Bad(format!(
            "a message of {size} bytes (at most {MAX_MSG_SIZE})"
        )));
    }
    Ok(if n >= HEADER_SIZE + size {
        Queued::Message
    } else {
        Queued::Partial
    })
}

/// Milliseconds for poll: rounded up, so that a short wait does not become a busy loop.
fn poll_ms(t: Option<Duration>) -> i32 {
    t.map_or(-1, |t| {
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    })
}

/// What the port's listener thread and a connection's thread share.
struct ConnShared {
    stream: UnixStream,
    /// When the connection was accepted, then when its last complete message was handled.
    last_message: Mutex<Instant>,
    cut: AtomicBool,
    done: AtomicBool,
}

impl ConnShared {
    fn idle_for(&self) -> Duration {
        self.last_message.lock().expect("lock").elapsed()
    }

    /// Ends the connection from outside: its thread stops at its next look, and any read or
    /// write it is in returns.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

struct Conn {
    shared: Arc<ConnShared>,
    thread: JoinHandle<()>,
}

/// A connection waiting for the port.
struct Waiting {
    stream: UnixStream,
    since: Instant,
    /// Its first message is queued whole: it may take the port over.
    ready: bool,
}

fn start_conn<D: ServedDevice>(
    port: &Arc<Port>,
    status: &Arc<ServerStatus<D>>,
    stream: UnixStream,
    ended: &Arc<EventFd>,
    opts: ServeOptions,
) -> Option<Conn> {
    let device = &status.device;
    let shared = Arc::new(ConnShared {
        stream: stream.try_clone().ok()?,
        last_message: Mutex::new(Instant::now()),
        cut: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let (p, d, s, e) = (port.clone(), device.clone(), shared.clone(), ended.clone());
    let st = status.clone();
    st.active.store(true, Ordering::SeqCst);
    let thread = std::thread::Builder::new()
        .name(format!("vc-{}", port.name()).chars().take(15).collect())
        .spawn(move || {
            serve_connection(&p, &d, stream, &s, opts);
            d.lock().expect("device lock").disconnect();
            st.active.store(false, Ordering::SeqCst);
            s.done.store(true, Ordering::SeqCst);
            let _ = e.write(1);
        });
    match thread {
        Ok(thread) => Some(Conn { shared, thread }),
        Err(e) => {
            status.active.store(false, Ordering::SeqCst);
            tracing::warn!(port = port.name(), "cannot start a connection thread: {e}");
            None
        }
    }
}

/// The port's listener thread: accepts, decides which connection is served, stops.
fn supervise<D: ServedDevice>(
    port: Arc<Port>,
    listener: UnixListener,
    stop: EventFd,
    opts: ServeOptions,
    status: &Arc<ServerStatus<D>>,
) {
    let name = port.name().to_string();
    let device = &status.device;
    let ended = match EventFd::new(EFD_NONBLOCK) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            tracing::error!(port = name, "eventfd: {e}; not serving");
            return;
        }
    };
    let mut active: Option<Conn> = None;
    let mut waiting: Option<Waiting> = None;
    loop {
        if active
            .as_ref()
            .is_some_and(|c| c.shared.done.load(Ordering::SeqCst))
        {
            let c = active.take().expect("checked");
            let _ = c.thread.join();
        }
        if active.is_none() {
            if let Some(w) = waiting.take() {
                active = start_conn(&port, status, w.stream, &ended, opts);
            }
        }
        // What the waiting connection has done, and when to look again.
        let mut timeout: Option<Duration> = None;
        let mut wait_events = libc::POLLIN | libc::POLLRDHUP;
        if let Some(w) = waiting.as_mut() {
            let q = queued(&w.stream).unwrap_or(Queued::Bad("FIONREAD failed".into()));
            match q {
                Queued::Message => w.ready = true,
                Queued::Bad(why) => {
                    tracing::warn!(port = name, "dropping a waiting connection: {why}");
                    waiting = None;
                }
                Queued::Nothing | Queued::Partial => {}
            }
        }
        let mut drop_waiting = false;
        if let Some(w) = waiting.as_ref() {
            let waited = w.since.elapsed();
            if !w.ready && waited >= opts.handshake_timeout {
                tracing::warn!(
                    port = name,
                    "dropping a waiting connection: no complete message within {:?}",
                    opts.handshake_timeout
                );
                waiting = None;
            } else if !w.ready {
                let left = opts.handshake_timeout - waited;
                // Data queued (a part, or all): only a hang-up wakes; else poll for data too.
                let partial = crate::sys::bytes_queued(w.stream.as_fd()).unwrap_or(0) > 0;
                if partial {
                    wait_events = libc::POLLRDHUP;
                }
                timeout = Some(if partial {
                    left.min(PARTIAL_TICK)
                } else {
                    left
                });
            } else {
                wait_events = libc::POLLRDHUP;
                if let Some(a) = active.as_ref() {
                    if a.shared.cut.load(Ordering::SeqCst) {
                        // Being displaced: the `ended` eventfd says when it is gone.
                    } else {
                        // A frontend whose guest runs the rings keeps the port however quiet it
                        // is (QEMU talks through shared memory once set up, and a dead one's
                        // socket hangs up); one that never started them is displaced once it has
                        // been silent for the idle timeout.
                        let idle = a.shared.idle_for();
                        let running = device.lock().expect("device lock").running();
                        if running && waited >= opts.idle_timeout {
                            tracing::warn!(
                                port = name,
                                "refusing a second frontend: the port's rings run for another connection"
                            );
                            drop_waiting = true;
                        } else if !running
                            && (idle >= opts.idle_timeout || waited >= opts.idle_timeout)
                        {
                            tracing::warn!(
                                port = name,
                                "a new frontend takes the port over from one silent for {:.1} s \
                                 that never started its rings",
                                idle.as_secs_f64()
                            );
                            a.shared.cut();
                        } else if running {
                            timeout = Some(opts.idle_timeout - waited);
                        } else {
                            timeout = Some(opts.idle_timeout - idle.max(waited));
                        }
                    }
                }
            }
        }
        if drop_waiting {
            waiting = None;
            timeout = None;
            wait_events = libc::POLLIN | libc::POLLRDHUP;
        }
        let wait_fd = waiting.as_ref().map_or(-1, |w| w.stream.as_raw_fd());
        let ready = match crate::sys::poll_fds(
            &[
                (stop.as_raw_fd(), libc::POLLIN),
                (listener.as_raw_fd(), libc::POLLIN),
                (ended.as_raw_fd(), libc::POLLIN),
                (wait_fd, wait_events),
            ],
            poll_ms(timeout),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(port = name, "poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                0
            }
        };
        if ready & 1 != 0 {
            break;
        }
        if ready & 4 != 0 {
            let _ = ended.read();
        }
        if ready & 8 != 0 {
            // The waiting connection hung up (or sent its first bytes: looked at above).
            let hung_up = crate::sys::poll_fds(&[(wait_fd, libc::POLLRDHUP)], 0).unwrap_or(0) != 0;
            if hung_up {
                tracing::info!(port = name, "a waiting connection hung up");
                waiting = None;
            }
        }
        if ready & 2 != 0 {
            loop {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        tracing::info!(port = name, "frontend connected");
                        status.accepted.fetch_add(1, Ordering::Relaxed);
                        if active.is_none() {
                            active = start_conn(&port, status, s, &ended, opts);
                        } else {
                            let w = Waiting {
                                stream: s,
                                since: Instant::now(),
                                ready: false,
                            };
                            if waiting.replace(w).is_some() {
                                tracing::info!(
                                    port = name,
                                    "a newer connection replaces one waiting for the port"
                                );
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and the like: the listener stays readable, do not spin on it.
                        tracing::warn!(port = name, "accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
    }
    drop(waiting);
    if let Some(c) = active {
        c.shared.cut();
        let _ = c.thread.join();
    }
}

/// Serves one connection until it ends, is cut, or breaks a deadline.
fn serve_connection<D: ServedDevice>(
    port: &Arc<Port>,
    device: &Arc<Mutex<D>>,
    stream: UnixStream,
    shared: &ConnShared,
    opts: ServeOptions,
) {
    let name = port.name();
    let started = Instant::now();
    let gate = &shared.stream;
    let mut handler = BackendReqHandler::from_stream(stream, device.clone());
    let mut handshaken = false;
    let mut partial_since: Option<Instant> = None;
    loop {
        if shared.cut.load(Ordering::SeqCst) {
            tracing::info!(port = name, "connection closed by the daemon");
            return;
        }
        let q = match queued(gate) {
            Ok(q) => q,
            Err(e) => {
                tracing::info!(port = name, "frontend disconnected ({e})");
                return;
            }
        };
        let handshake_end = (!handshaken).then(|| started + opts.handshake_timeout);
        match q {
            Queued::Bad(why) => {
                tracing::warn!(port = name, "closing connection after bad message: {why}");
                return;
            }
            Queued::Message => {
                partial_since = None;
                match device.lock().expect("device lock").intercept(gate) {
                    Ok(false) => {}
                    Ok(true) => {
                        handshaken = true;
                        *shared.last_message.lock().expect("lock") = Instant::now();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(port = name, "closing connection: {e}");
                        return;
                    }
                }
                match handler.handle_request() {
                    Ok(()) => device.lock().expect("device lock").flush_backend_requests(),
                    Err(VuError::InvalidParam)
                        if device.lock().expect("device lock").take_config_refusal() => {}
                    Err(VuError::Disconnected | VuError::PartialMessage) => {
                        tracing::info!(port = name, "frontend disconnected");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(port = name, "closing connection after bad message: {e}");
                        return;
                    }
                }
                handshaken = true;
                *shared.last_message.lock().expect("lock") = Instant::now();
            }
            Queued::Nothing => {
                partial_since = None;
                let left = handshake_end.map(|end| end.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    tracing::warn!(
                        port = name,
                        "closing a connection that sent no complete message within {:?}",
                        opts.handshake_timeout
                    );
                    return;
                }
                let woke = crate::sys::poll_fds(
                    &[(gate.as_raw_fd(), libc::POLLIN | libc::POLLRDHUP)],
                    poll_ms(left),
                )
                .unwrap_or(1);
                if woke != 0 && queued(gate).is_ok_and(|q| q == Queued::Nothing) {
                    // Readable with nothing to read: the end of the stream.
                    if !shared.cut.load(Ordering::SeqCst) {
                        tracing::info!(port = name, "frontend disconnected");
                        return;
                    }
                }
            }
            Queued::Partial => {
                let since = *partial_since.get_or_insert_with(Instant::now);
                let mut end = since + opts.idle_timeout;
                if let Some(h) = handshake_end {
                    end = end.min(h);
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(
                        port = name,
                        "closing a connection that left a message incomplete for {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                    return;
                }
                // Only a hang-up wakes us early; more bytes are looked for every tick.
                let hup = crate::sys::poll_fds(
                    &[(gate.as_raw_fd(), libc::POLLRDHUP)],
                    poll_ms(Some(left.min(PARTIAL_TICK))),
                )
                .unwrap_or(0);
                if hup != 0 && queued(gate).is_ok_and(|q| q == Queued::Partial) {
                    tracing::info!(
                        port = name,
                        "frontend disconnected in the middle of a message"
                    );
                    return;
                }
            }
        }
    }
}
