//! The control socket (`--control-socket`, default `SOCKET_DIR/ptnet-backend.ctl`): what
//! `ptnet-ctl` talks to. One JSON request per line, one JSON response per line ([`protocol`]),
//! served by one thread over plain non-blocking unix sockets ([`super::poll_server`], which the
//! metrics endpoint runs too).
//!
//! Every client is untrusted (whoever can open the socket: it is 0600, or 0660 with
//! `--socket-group`, like the ports' sockets), so none can hold the thread or grow its memory:
//!
//! * **A deadline per request.** A connection has [`REQUEST_TIMEOUT`] from its accept, or from
//!   its last response, to send a whole request and read the whole answer; then it is closed.
//! * **Bounded requests.** A line longer than [`protocol::MAX_REQUEST`] bytes gets `too_long`
//!   and the connection is closed; at most that much (plus one read) is ever buffered.
//! * **Bounded clients.** At most [`MAX_CLIENTS`] connections are served at once; one more gets
//!   `busy` and is closed at once.
//! * **Nothing blocks.** The listener and the connections are non-blocking, waited on with
//!   `poll` together with a stop eventfd; answers are written as the client reads them.
//!
//! The socket is bound like the ports' (`server`): locked with `PATH.lock`, a stale socket
//! replaced, a live one refused, removed at stop if still ours.

pub mod capture;
pub mod protocol;

use crate::daemon::poll_server::{PollClient, PollThread};
use crate::daemon::socket::{claim_socket, file_id, ClaimedSocket, ServeError};
use crate::daemon::stats::DaemonStats;
use crate::portspec::AttachKind;
use protocol::{Command, PortInfo, Request, RequestError, Response, VersionInfo, MAX_REQUEST};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time a connection has for each request: to send it whole and read its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once (`poll` watches them with the listener and the stop eventfd).
pub const MAX_CLIENTS: usize = 6;

/// Every port's counters, now (what a reader of the counters is given).
pub type StatsFn = Arc<dyn Fn() -> DaemonStats + Send + Sync>;

/// What the control thread asks of the daemon (the daemon's core implements it; tests may
/// stand in for it).
pub trait Operator: Send + Sync {
    /// Every port's counters, now.
    fn stats(&self) -> DaemonStats;
    /// Every port, as `list` shows it.
    fn list(&self) -> Vec<PortInfo>;
    /// Adds ports (PORT arguments): `add`.
    fn add(&self, ports: &[String]) -> Result<Vec<PortInfo>, RequestError>;
    /// Removes ports by name: `remove`.
    fn remove(&self, ports: &[String]) -> Result<Vec<String>, RequestError>;
    /// Attaches a host interface to a switch: `attach`.
    fn attach(
        &self,
        switch: &str,
        ifname: &str,
        kind: AttachKind,
    ) -> Result<Vec<PortInfo>, RequestError>;
    /// Detaches it: `detach`.
    fn detach(&self, switch: &str, ifname: &str) -> Result<Vec<String>, RequestError>;
    /// The capture point of a port: `capture`.
    fn tap(&self, port: &str) -> Result<Arc<crate::capture::Tap>, RequestError> {
        Err(RequestError::NoSuchPort(port.chars().take(64).collect()))
    }
}

/// The control socket being served.
pub struct ControlServer {
    path: PathBuf,
    poll: PollThread,
    socket_id: (u64, u64),
    lock: (PathBuf, File),
}

impl ControlServer {
    /// Binds `path` (mode 0600, or 0660 with `group`) and serves it, answering from `op`.
    pub fn start(
        path: &Path,
        group: Option<u32>,
        op: Arc<dyn Operator>,
    ) -> Result<Self, ServeError> {
        let ClaimedSocket {
            lock,
            listener,
            socket_id,
        } = claim_socket(path, group)?;
        let listen_err = |e| ServeError::Listen(path.to_path_buf(), e);
        let poll = PollThread::spawn::<Client>(listener, Answerer { op }).map_err(listen_err)?;
        tracing::info!(socket = %path.display(), "control socket");
        Ok(Self {
            path: path.to_path_buf(),
            poll,
            socket_id,
            lock,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving (every connection closed) and removes the socket if still ours. (Dropping
    /// the server does the same.)
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.poll.stop();
        if file_id(&self.path) == Some(self.socket_id) {
            let _ = std::fs::remove_file(&self.path);
        }
        // Removed while still locked (see `socket::lock_socket_path`), then unlocked by the close.
        let _ = std::fs::remove_file(&self.lock.0);
    }
}

/// Answers checked requests.
struct Answerer {
    op: Arc<dyn Operator>,
}

impl Answerer {
    /// The response, and the stream that follows it for `capture`.
    fn answer(&self, line: &[u8]) -> (Response, Option<capture::Stream>) {
        let r = Request::parse(line).and_then(|c| match c {
            Command::Capture {
                port,
                count,
                snaplen,
            } => capture::start(&*self.op, &port, count, snaplen).map(|(r, s)| (r, Some(s))),
            c => self.run(c).map(|r| (r, None)),
        });
        r.unwrap_or_else(|e| (Response::error(&e), None))
    }

    fn run(&self, cmd: Command) -> Result<Response, RequestError> {
        Ok(match cmd {
            Command::Version => Response::version(VersionInfo::current()),
            Command::List => Response::ports(self.op.list()),
            Command::Add { ports } => Response::ports(self.op.add(&ports)?),
            Command::Remove { ports } => Response::removed(self.op.remove(&ports)?),
            Command::Attach {
                switch,
                ifname,
                kind,
            } => Response::ports(self.op.attach(&switch, &ifname, kind)?),
            Command::Detach { switch, ifname } => {
                Response::removed(self.op.detach(&switch, &ifname)?)
            }
            Command::Capture { .. } => unreachable!("answered by `answer`"),
            Command::Stats { port: None } => Response::stats(self.op.stats()),
            Command::Stats { port: Some(name) } => {
                let mut s = self.op.stats();
                s.ports.retain(|p| p.name == name);
                if s.ports.is_empty() {
                    return Err(RequestError::NoSuchPort(name.chars().take(64).collect()));
                }
                Response::stats(s)
            }
        })
    }
}

/// One control connection.
struct Client {
    stream: UnixStream,
    /// Bytes of the requests not yet answered.
    input: Vec<u8>,
    /// The answer being written, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    /// The client has shut down its side.
    eof: bool,
    /// Close once the answer is written (too long a line, or the end of the input).
    closing: bool,
    deadline: Instant,
    /// A `capture` streams on this connection: nothing else is answered on it.
    capture: Option<capture::Stream>,
}

impl Client {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            eof: false,
            closing: false,
            deadline: Instant::now() + REQUEST_TIMEOUT,
            capture: None,
        }
    }

    fn respond(&mut self, r: &Response) {
        self.output = r.to_line().into_bytes();
        self.output.push(b'\n');
        self.written = 0;
    }

    /// Answers one request line; a `capture` turns the connection into its stream.
    fn respond_to(&mut self, answer: &Answerer, line: &[u8]) {
        let (r, stream) = answer.answer(line);
        self.respond(&r);
        if let Some(s) = stream {
            let snaplen = r.capture.as_ref().map_or(0, |c| c.snaplen);
            self.output.extend_from_slice(&capture::header(snaplen));
            self.input.clear();
            self.capture = Some(s);
        }
    }

    fn too_long(&mut self) {
        self.respond(&Response::error(&RequestError::TooLong {
            max: MAX_REQUEST,
        }));
        self.input.clear();
        self.closing = true;
    }
}

impl PollClient for Client {
    type Listener = UnixListener;
    type Context = Answerer;
    const THREAD: &'static str = "control";
    const WHAT: &'static str = "control socket";
    const MAX_CLIENTS: usize = MAX_CLIENTS;

    fn accept(stream: UnixStream) -> Self {
        Self::new(stream)
    }

    fn refuse(stream: UnixStream) {
        let mut c = Self::new(stream);
        c.respond(&Response::error(&RequestError::Busy { max: MAX_CLIENTS }));
        let _ = c.stream.write(&c.output);
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// What to wait for: room for the answer, or more of the request.
    fn events(&self) -> i16 {
        if self.capture.is_some() {
            return capture::events(self);
        }
        if self.written < self.output.len() {
            libc::POLLOUT
        } else {
            libc::POLLIN
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A capture's next drain.
    fn due(&self) -> Option<Instant> {
        self.capture.as_ref().map(capture::Stream::due)
    }

    /// Does what the connection allows without waiting; false when it is to be closed.
    fn service(&mut self, answer: &Answerer) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            if self.capture.is_some() {
                return capture::service(self);
            }
            if self.written < self.output.len() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(0) => return false,
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if self.written < self.output.len() {
                    continue;
                }
                if self.closing {
                    return false;
                }
                self.output.clear();
                self.written = 0;
                self.deadline = Instant::now() + REQUEST_TIMEOUT;
            }
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=pos).collect();
                let line = line[..pos].trim_ascii();
                if pos > MAX_REQUEST {
                    self.too_long();
                } else if !line.is_empty() {
                    self.respond_to(answer, line);
                }
                continue;
            }
            if self.input.len() > MAX_REQUEST {
                self.too_long();
                continue;
            }
            if self.eof {
                // A last request without its newline is still answered.
                let line = std::mem::take(&mut self.input);
                if line.trim_ascii().is_empty() {
                    return false;
                }
                self.respond_to(answer, line.trim_ascii());
                self.closing = true;
                continue;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}
