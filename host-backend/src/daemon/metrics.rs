//! `--metrics-listen ADDR`: the daemon's counters for Prometheus, over HTTP: `GET /metrics`
//! answers [`exposition::render`] of the same [`DaemonStats`](crate::daemon::DaemonStats)
//! `ptnet-ctl stats` shows.
//!
//! The HTTP server is a few dozen lines of std, on one thread, rather than a crate: the only
//! request is `GET /metrics`, one per connection, and what matters is that no client can hold
//! it, which a small loop of our own shows at a glance. `tiny_http` (the usual small choice)
//! gives no read deadline or request-size limit for a connection and serves from a thread pool a
//! slow client can fill; `hyper` or `axum` would bring tokio for one URL. So, like the control
//! socket (`super::control`):
//!
//! * **A deadline per connection.** [`REQUEST_TIMEOUT`] from its accept to send the request
//!   and read the whole answer; then it is closed, whatever it was doing.
//! * **Bounded requests.** A request head (request line and headers) longer than
//!   [`MAX_REQUEST`] bytes gets `413` and the connection is closed; a malformed one gets `400`.
//!   At most that much (plus one read) is buffered per connection.
//! * **Bounded connections.** At most [`MAX_CLIENTS`] at once; one more gets `503` in one
//!   non-blocking write and is closed.
//! * **Nothing blocks, and the data path is not involved.** Non-blocking sockets polled with a
//!   stop eventfd; the counters are atomics the ring threads update anyway, read when a request
//!   comes (the same read `ptnet-ctl stats` does).
//!
//! One request per connection (`Connection: close`): Prometheus scrapes every few seconds, so
//! keep-alive buys nothing here. `HEAD` is answered too; a request body is never read.

pub mod exposition;

use crate::daemon::control::StatsFn;
use crate::daemon::poll_server::{PollClient, PollThread};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Time a connection has from its accept to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head (request line and headers, up to the empty line) read.
pub const MAX_REQUEST: usize = 8192;
/// Connections served at once.
pub const MAX_CLIENTS: usize = 6;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-listen {addr}: {source}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The metrics endpoint being served; stopped when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    _poll: PollThread,
}

impl MetricsServer {
    /// Listens on `addr` (TCP; port 0 picks a free one) and serves `stats` there.
    pub fn start(addr: SocketAddr, stats: StatsFn) -> Result<Self, MetricsError> {
        let err = |source| MetricsError { addr, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let local = listener.local_addr().map_err(err)?;
        let poll = PollThread::spawn::<Client>(listener, stats).map_err(err)?;
        tracing::info!(address = %local, "metrics: http://{local}/metrics");
        Ok(Self {
            addr: local,
            _poll: poll,
        })
    }

    /// The address served (with the port picked, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What a request head asks for, or what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `GET` (`head`: `HEAD`) of this path (the query dropped).
    Get {
        /// The path.
        path: String,
        /// A `HEAD` request: the answer has no body.
        head: bool,
    },
    /// Another method.
    Method,
    /// Not an HTTP/1 request head.
    Bad,
}

/// Parses a request head (`head`: up to, not including, the empty line).
pub fn parse_head(head: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(head) else {
        return Parsed::Bad;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method)
        || !target.starts_with('/')
        || target.bytes().any(|b| !b.is_ascii_graphic())
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Parsed::Bad;
    }
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Parsed::Bad;
        };
        if !token(name) || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Parsed::Bad;
        }
    }
    let path = target
        .split_once('?')
        .map_or(target, |(p, _)| p)
        .to_string();
    match method {
        "GET" => Parsed::Get { path, head: false },
        "HEAD" => Parsed::Get { path, head: true },
        _ => Parsed::Method,
    }
}

/// The whole answer to a complete request head.
fn answer(head: &[u8], stats: &StatsFn) -> Vec<u8> {
    match parse_head(head) {
        Parsed::Get { path, head } if path == "/metrics" => {
            let body = exposition::render(&stats());
            response(200, exposition::CONTENT_TYPE, &body, head)
        }
        Parsed::Get { path, head } if path == "/" => response(
            200,
            "text/plain; charset=utf-8",
            "ptnet-backend: the counters are at /metrics\n",
            head,
        ),
        Parsed::Get { head, .. } => response(
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n",
            head,
        ),
        Parsed::Method => response(
            405,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
            false,
        ),
        Parsed::Bad => response(
            400,
            "text/plain; charset=utf-8",
            "malformed HTTP/1 request\n",
            false,
        ),
    }
}

/// An HTTP/1.1 response, closing the connection.
pub fn response(code: u16, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Where the request head ends: the index of its empty line's first byte, and the empty line's
/// length with the preceding newline.
fn head_end(input: &[u8]) -> Option<usize> {
    let crlf = input.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = input.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One HTTP connection.
struct Client {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// The answer is written and our side shut down: what the client still sends is read and
    /// dropped until it hangs up (closing with unread input would reset the connection, and
    /// the client might lose the answer).
    draining: bool,
    deadline: Instant,
}

impl PollClient for Client {
    type Listener = TcpListener;
    type Context = StatsFn;
    const THREAD: &'static str = "metrics";
    const WHAT: &'static str = "metrics";
    const MAX_CLIENTS: usize = MAX_CLIENTS;

    fn accept(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            draining: false,
            deadline: Instant::now() + REQUEST_TIMEOUT,
        }
    }

    fn refuse(mut stream: TcpStream) {
        let body = format!("at most {MAX_CLIENTS} connections at once\n");
        let _ = stream.write(&response(503, "text/plain; charset=utf-8", &body, false));
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Does what the connection allows without waiting; false when it is to be closed.
    fn service(&mut self, stats: &StatsFn) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            if self.draining {
                match self.stream.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
            if !self.output.is_empty() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(0) => return false,
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if self.written == self.output.len() {
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.draining = true;
                }
                continue;
            }
            let end = head_end(&self.input);
            if let Some(end) = end.filter(|&e| e <= MAX_REQUEST) {
                self.output = answer(&self.input[..end], stats);
                continue;
            }
            if end.is_some() || self.input.len() > MAX_REQUEST {
                let body = format!("request head over {MAX_REQUEST} bytes\n");
                self.output = response(413, "text/plain; charset=utf-8", &body, false);
                continue;
            }
            match self.stream.read(&mut buf) {
                // A client that hangs up before its request is whole gets nothing.
                Ok(0) => return false,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn events(&self) -> i16 {
        if !self.draining && !self.output.is_empty() {
            libc::POLLOUT
        } else {
            libc::POLLIN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_checked() {
        let get = |p: &str, head| Parsed::Get {
            path: p.into(),
            head,
        };
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*"),
            get("/metrics", false)
        );
        assert_eq!(
            parse_head(b"HEAD /metrics?x=1 HTTP/1.0"),
            get("/metrics", true)
        );
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1"), Parsed::Method);
        for bad in [
            &b""[..],
            b"GET",
            b"GET /metrics",
            b"GET /metrics HTTP/2",
            b"GET metrics HTTP/1.1",
            b"GET /me trics HTTP/1.1",
            b"GET  /metrics HTTP/1.1",
            b"G(T /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1\r\nno colon here",
            b"GET /metrics HTTP/1.1\r\nBad Name: x",
            b"GET /metrics HTTP/1.1\r\nX: a\x01b",
            b"GET /\xff HTTP/1.1",
        ] {
            assert_eq!(
                parse_head(bad),
                Parsed::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
