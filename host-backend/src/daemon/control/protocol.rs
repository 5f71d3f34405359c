//! The control socket's protocol: one JSON request per line, one JSON response per line. The
//! daemon ([`super::ControlServer`]) and the client (`ptnet-ctl`, [`crate::ctl`]) share these
//! types.
//!
//! Requests (each command takes the fields shown, no others):
//!
//! ```text
//! {"cmd":"version"}
//! {"cmd":"list"}
//! {"cmd":"stats"}
//! {"cmd":"stats","port":"vale0:1"}
//! {"cmd":"add","ports":["vale0:3","netmap:p{2@conf:rings=2"]}
//! {"cmd":"remove","ports":["vale0:3"]}
//! {"cmd":"attach","switch":"vale0","ifname":"eth1","kind":"packet"}   (kind: packet, xdp, tap)
//! {"cmd":"detach","switch":"vale0","ifname":"eth1"}
//! {"cmd":"capture","port":"vale0:1","count":100,"snaplen":2048}   (count, snaplen optional)
//! ```
//!
//! `capture` turns the connection into a stream (see [`super::capture`]): one response line
//! `{"ok":true,"capture":{...}}`, then a classic nanosecond pcap stream (file header, records,
//! both directions of the port), ended by one *end record*: a record header whose nanoseconds
//! field is `0xffffffff` (no real record has it) and whose data is a JSON object
//! `{"captured":N,"missed":M}`; then the daemon closes the connection. The capture ends after
//! `count` frames, when the client shuts down its side (the daemon then sends the end record),
//! or when it hangs up or stops reading (then without an end record). One capture per port
//! (`capture_busy`); `count` 0 or a `snaplen` outside 1..=2048 is `bad_argument`.
//!
//! `add` and `attach` answer the ports added in `ports` (a pipe end brings its peer), `remove`
//! and `detach` the names removed in `removed`; a request is refused whole or done whole.
//!
//! Responses: `{"ok":true,` and the command's field (`version`, `ports`, `stats`, `removed`) `}`, or
//! `{"ok":false,"code":"...","error":"..."}` (codes: [`ErrorCode`]). A request must be at most
//! [`MAX_REQUEST`] bytes, newline excluded, and arrive whole within the deadline; a longer line
//! gets `too_long` and the connection is closed.

use crate::daemon::stats::{DaemonStats, DatapathKind, FrontendState};
use crate::portspec::{AttachKind, PortKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The protocol's version, in `version` responses; bumped on an incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most bytes a request line may have (newline excluded).
pub const MAX_REQUEST: usize = 4096;
/// The control socket's file name in the socket directory (the default `--control-socket`).
pub const CONTROL_SOCKET_NAME: &str = "ptnet-backend.ctl";

/// A request as it arrives on the wire: checked by [`Request::command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `version`, `list` or `stats`.
    pub cmd: String,
    /// `stats`: only this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// `add`: PORT arguments; `remove`: port names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// `attach`, `detach`: the switch (`vale0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// `attach`, `detach`: the host interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// `attach`: `packet` (the default), `xdp` or `tap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `capture`: frames wanted (none: until the client hangs up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `capture`: bytes kept of each frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The daemon's name, version, protocol version and pid.
    Version,
    /// Every port: name, kind, socket, frontend, geometry.
    List,
    /// Every port's counters ([`DaemonStats`]), or one port's.
    Stats {
        /// Only this port.
        port: Option<String>,
    },
    /// Adds ports at runtime (PORT arguments, as on the command line).
    Add {
        /// The ports.
        ports: Vec<String>,
    },
    /// Removes ports at runtime.
    Remove {
        /// Their names.
        ports: Vec<String>,
    },
    /// A host interface joins a VALE switch.
    Attach {
        /// The switch.
        switch: String,
        /// The interface.
        ifname: String,
        /// Through which port kind.
        kind: AttachKind,
    },
    /// An attached interface leaves its switch.
    Detach {
        /// The switch.
        switch: String,
        /// The interface.
        ifname: String,
    },
    /// Streams a port's frames as pcap.
    Capture {
        /// The port.
        port: String,
        /// Frames wanted (`None`: no limit).
        count: Option<u64>,
        /// Bytes kept of each.
        snaplen: u32,
    },
}

/// Why a request was refused: each is a response `{"ok":false,"code":...,"error":...}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, a missing `cmd`, or an unknown field (serde's message).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `cmd` names no command.
    #[error("unknown command {0:?} (known: version list stats add remove attach detach capture)")]
    UnknownCommand(String),
    /// A field the command does not take.
    #[error("{cmd}: takes no {field:?}")]
    UnexpectedField {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
    },
    /// `stats` or `remove` for a port the daemon does not serve.
    #[error("no port named {0:?}")]
    NoSuchPort(String),
    /// `add`: a PORT argument that does not parse (the parser's message), or a bad port list.
    #[error("{0}")]
    BadPort(String),
    /// `add`: a port the daemon serves already.
    #[error("port {0:?} exists")]
    PortExists(String),
    /// The same port twice in one request.
    #[error("port {0:?} given twice")]
    Duplicate(String),
    /// `remove` of one end of a pipe whose other end is served.
    #[error(
        "{port:?} is one end of a pipe whose other end {peer:?} is served: remove both at once"
    )]
    PipePeer {
        /// The end named.
        port: String,
        /// Its peer.
        peer: String,
    },
    /// `detach` of a port that is not an attached interface's.
    #[error("{0:?} is not an attached interface (use remove)")]
    NotAttached(String),
    /// The request was valid but could not be done (the reason: a port that cannot be built,
    /// a socket that cannot be bound, a switch that is full, ...). Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A line longer than [`MAX_REQUEST`] bytes (the connection is then closed).
    #[error("request longer than {max} bytes")]
    TooLong {
        /// [`MAX_REQUEST`].
        max: usize,
    },
    /// `capture` of a port captured already.
    #[error("a capture of {0:?} is already running")]
    CaptureBusy(String),
    /// A field's value is out of range (`capture`'s count or snap length).
    #[error("{0}")]
    BadArgument(String),
    /// Every control connection is taken.
    #[error("too many control clients (at most {max}); try again")]
    Busy {
        /// How many are served at once.
        max: usize,
    },
}

/// The machine-readable kind of a [`RequestError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// [`RequestError::BadRequest`].
    BadRequest,
    /// [`RequestError::UnknownCommand`].
    UnknownCommand,
    /// [`RequestError::UnexpectedField`].
    UnexpectedField,
    /// [`RequestError::NoSuchPort`].
    NoSuchPort,
    /// [`RequestError::BadPort`].
    BadPort,
    /// [`RequestError::PortExists`].
    PortExists,
    /// [`RequestError::Duplicate`].
    Duplicate,
    /// [`RequestError::PipePeer`].
    PipePeer,
    /// [`RequestError::NotAttached`].
    NotAttached,
    /// [`RequestError::Refused`].
    Refused,
    /// [`RequestError::TooLong`].
    TooLong,
    /// [`RequestError::Busy`].
    Busy,
    /// [`RequestError::CaptureBusy`].
    CaptureBusy,
    /// [`RequestError::BadArgument`].
    BadArgument,
}

impl RequestError {
    /// Its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::UnknownCommand(_) => ErrorCode::UnknownCommand,
            Self::UnexpectedField { .. } => ErrorCode::UnexpectedField,
            Self::NoSuchPort(_) => ErrorCode::NoSuchPort,
            Self::BadPort(_) => ErrorCode::BadPort,
            Self::PortExists(_) => ErrorCode::PortExists,
            Self::Duplicate(_) => ErrorCode::Duplicate,
            Self::PipePeer { .. } => ErrorCode::PipePeer,
            Self::NotAttached(_) => ErrorCode::NotAttached,
            Self::Refused(_) => ErrorCode::Refused,
            Self::TooLong { .. } => ErrorCode::TooLong,
            Self::Busy { .. } => ErrorCode::Busy,
            Self::CaptureBusy(_) => ErrorCode::CaptureBusy,
            Self::BadArgument(_) => ErrorCode::BadArgument,
        }
    }
}

/// At most this many characters of something a client sent are echoed back.
const ECHO_MAX: usize = 64;

fn echo(s: &str) -> String {
    s.chars().take(ECHO_MAX).collect()
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Command, RequestError> {
        // serde would take a struct from an array too (`["list"]`): only an object is a request.
        if line.trim_ascii_start().first() != Some(&b'{') {
            return Err(RequestError::BadRequest(
                "a request is a JSON object".into(),
            ));
        }
        let req: Request = serde_json::from_slice(line)
            .map_err(|e| RequestError::BadRequest(echo(&e.to_string())))?;
        req.command()
    }

    /// Checks the command and its fields.
    pub fn command(self) -> Result<Command, RequestError> {
        let cmd: &'static str = match self.cmd.as_str() {
            "version" => "version",
            "list" => "list",
            "stats" => "stats",
            "add" => "add",
            "remove" => "remove",
            "attach" => "attach",
            "detach" => "detach",
            "capture" => "capture",
            other => return Err(RequestError::UnknownCommand(echo(other))),
        };
        // Which fields each command takes.
        let takes: &[&str] = match cmd {
            "stats" => &["port"],
            "capture" => &["port", "count", "snaplen"],
            "add" | "remove" => &["ports"],
            "attach" => &["switch", "ifname", "kind"],
            "detach" => &["switch", "ifname"],
            _ => &[],
        };
        for (field, given) in [
            ("port", self.port.is_some()),
            ("ports", self.ports.is_some()),
            ("switch", self.switch.is_some()),
            ("ifname", self.ifname.is_some()),
            ("kind", self.kind.is_some()),
            ("count", self.count.is_some()),
            ("snaplen", self.snaplen.is_some()),
        ] {
            if given && !takes.contains(&field) {
                return Err(RequestError::UnexpectedField { cmd, field });
            }
        }
        let need = |v: Option<String>, field: &str| {
            v.ok_or_else(|| RequestError::BadRequest(format!("{cmd}: needs {field:?}")))
        };
        Ok(match cmd {
            "version" => Command::Version,
            "list" => Command::List,
            "stats" => Command::Stats { port: self.port },
            "add" => Command::Add {
                ports: self
                    .ports
                    .ok_or_else(|| RequestError::BadRequest("add: needs \"ports\"".into()))?,
            },
            "remove" => Command::Remove {
                ports: self
                    .ports
                    .ok_or_else(|| RequestError::BadRequest("remove: needs \"ports\"".into()))?,
            },
            "attach" => {
                let kind = match self.kind.as_deref() {
                    None => AttachKind::Packet,
                    Some(k) => AttachKind::parse(k).ok_or_else(|| {
                        RequestError::BadRequest(format!(
                            "attach: kind {:?} (known: packet, xdp, tap)",
                            echo(k)
                        ))
                    })?,
                };
                Command::Attach {
                    switch: need(self.switch, "switch")?,
                    ifname: need(self.ifname, "ifname")?,
                    kind,
                }
            }
            "capture" => {
                let snaplen = self.snaplen.unwrap_or(crate::capture::DEFAULT_SNAPLEN);
                if snaplen == 0 || snaplen > crate::capture::DEFAULT_SNAPLEN {
                    return Err(RequestError::BadArgument(format!(
                        "capture: snaplen {snaplen}: must be 1..={}",
                        crate::capture::DEFAULT_SNAPLEN
                    )));
                }
                if self.count == Some(0) {
                    return Err(RequestError::BadArgument(
                        "capture: count 0: must be at least 1".into(),
                    ));
                }
                Command::Capture {
                    port: need(self.port, "port")?,
                    count: self.count,
                    snaplen,
                }
            }
            _ => Command::Detach {
                switch: need(self.switch, "switch")?,
                ifname: need(self.ifname, "ifname")?,
            },
        })
    }
}

impl Command {
    /// The request line for this command (no newline).
    pub fn to_line(&self) -> String {
        let mut r = Request {
            cmd: String::new(),
            port: None,
            ports: None,
            switch: None,
            ifname: None,
            kind: None,
            count: None,
            snaplen: None,
        };
        r.cmd = match self {
            Self::Version => "version",
            Self::List => "list",
            Self::Stats { port } => {
                r.port = port.clone();
                "stats"
            }
            Self::Add { ports } => {
                r.ports = Some(ports.clone());
                "add"
            }
            Self::Remove { ports } => {
                r.ports = Some(ports.clone());
                "remove"
            }
            Self::Attach {
                switch,
                ifname,
                kind,
            } => {
                (r.switch, r.ifname) = (Some(switch.clone()), Some(ifname.clone()));
                r.kind = Some(crate::daemon::runtime::attach_word(*kind).into());
                "attach"
            }
            Self::Detach { switch, ifname } => {
                (r.switch, r.ifname) = (Some(switch.clone()), Some(ifname.clone()));
                "detach"
            }
            Self::Capture {
                port,
                count,
                snaplen,
            } => {
                (r.port, r.count, r.snaplen) = (Some(port.clone()), *count, Some(*snaplen));
                "capture"
            }
        }
        .into();
        serde_json::to_string(&r).expect("a request serializes")
    }
}

/// A response: `ok`, and the error or the command's result. Clients ignore fields they do not
/// know (newer daemons may add some).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request succeeded.
    pub ok: bool,
    /// Why not (with `ok: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Why not, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionInfo>,
    /// `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortInfo>>,
    /// `stats` (with `port`: only that port in `ports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<DaemonStats>,
    /// `remove`, `detach`: the ports removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
    /// `capture`: the capture started (the pcap stream follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
}

/// What a `capture` response says of the capture it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// The port.
    pub port: String,
    /// Frames wanted (`None`: no limit).
    pub count: Option<u64>,
    /// Bytes kept of each.
    pub snaplen: u32,
}

impl Response {
    fn ok() -> Self {
        Self {
            ok: true,
            code: None,
            error: None,
            version: None,
            ports: None,
            stats: None,
            removed: None,
            capture: None,
        }
    }

    /// The answer to `capture` (the stream follows).
    pub fn capture(c: CaptureInfo) -> Self {
        Self {
            capture: Some(c),
            ..Self::ok()
        }
    }

    /// A refusal.
    pub fn error(e: &RequestError) -> Self {
        Self {
            ok: false,
            code: Some(e.code()),
            error: Some(e.to_string()),
            ..Self::ok()
        }
    }

    /// The answer to `version`.
    pub fn version(v: VersionInfo) -> Self {
        Self {
            version: Some(v),
            ..Self::ok()
        }
    }

    /// The answer to `list`.
    pub fn ports(p: Vec<PortInfo>) -> Self {
        Self {
            ports: Some(p),
            ..Self::ok()
        }
    }

    /// The answer to `remove` and `detach`.
    pub fn removed(names: Vec<String>) -> Self {
        Self {
            removed: Some(names),
            ..Self::ok()
        }
    }

    /// The answer to `stats`.
    pub fn stats(s: DaemonStats) -> Self {
        Self {
            stats: Some(s),
            ..Self::ok()
        }
    }

    /// The response line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a response serializes")
    }
}

/// The answer to `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// `ptnet-backend`.
    pub daemon: String,
    /// The daemon's version (its crate's).
    pub version: String,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The daemon's process id.
    pub pid: u32,
}

impl VersionInfo {
    /// This process's.
    pub fn current() -> Self {
        Self {
            daemon: "ptnet-backend".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }
    }
}

/// One port, as `list` tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// The port's name (its PORT argument without `@conf`).
    pub name: String,
    /// Its kind: `pipe`, `vale`, `null`, `tap`, `packet`, `xdp` or `netmap` (a NIC through
    /// kernel netmap).
    pub kind: String,
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// Its frontend: `idle`, `connected`, `running` (or `stopped`).
    pub frontend: FrontendState,
    /// Which loop runs its rings.
    pub datapath: DatapathKind,
    /// Connections accepted.
    pub connections: u64,
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per TX ring.
    pub tx_slots: u32,
    /// Slots per RX ring.
    pub rx_slots: u32,
}

/// The `kind` of `list` for a port of kind `k`.
pub fn kind_name(k: &PortKind) -> &'static str {
    match k {
        PortKind::Pipe { .. } => "pipe",
        PortKind::Vale { .. } => "vale",
        PortKind::Null { .. } => "null",
        PortKind::Tap { .. } => "tap",
        PortKind::Packet { .. } => "packet",
        PortKind::Xdp { .. } => "xdp",
        PortKind::KernelNetmap { .. } => "netmap",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        assert_eq!(Request::parse(br#"{"cmd":"list"}"#), Ok(Command::List));
        assert_eq!(
            Request::parse(br#"{"cmd":"version"}"#),
            Ok(Command::Version)
        );
        assert_eq!(
            Request::parse(br#"{"cmd":"stats","port":"a"}"#),
            Ok(Command::Stats {
                port: Some("a".into())
            })
        );
        assert_eq!(
            Request::parse(br#"{"cmd":"stats"}"#),
            Ok(Command::Stats { port: None })
        );
        for (bad, code) in [
            (&br#"{"cmd":"list""#[..], ErrorCode::BadRequest),
            (b"", ErrorCode::BadRequest),
            (b"[1,2]", ErrorCode::BadRequest),
            (br#"["list"]"#, ErrorCode::BadRequest),
            (b"\"list\"", ErrorCode::BadRequest),
            (br#"{"port":"a"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":7}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"list","x":1}"#, ErrorCode::BadRequest),
            (b"\xff\xfe", ErrorCode::BadRequest),
            (br#"{"cmd":"reboot"}"#, ErrorCode::UnknownCommand),
            (br#"{"cmd":"list","port":"a"}"#, ErrorCode::UnexpectedField),
            (br#"{"cmd":"add"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"add","ports":"vale0:1"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"add","ports":[1]}"#, ErrorCode::BadRequest),
            (
                br#"{"cmd":"add","ports":[],"port":"a"}"#,
                ErrorCode::UnexpectedField,
            ),
            (
                br#"{"cmd":"remove","switch":"vale0"}"#,
                ErrorCode::UnexpectedField,
            ),
            (
                br#"{"cmd":"attach","switch":"vale0"}"#,
                ErrorCode::BadRequest,
            ),
            (
                br#"{"cmd":"attach","switch":"vale0","ifname":"e","kind":"dpdk"}"#,
                ErrorCode::BadRequest,
            ),
            (
                br#"{"cmd":"detach","ifname":"e","kind":"tap"}"#,
                ErrorCode::UnexpectedField,
            ),
            (br#"{"cmd":"capture"}"#, ErrorCode::BadRequest),
            (
                br#"{"cmd":"capture","port":"a","count":0}"#,
                ErrorCode::BadArgument,
            ),
            (
                br#"{"cmd":"capture","port":"a","snaplen":0}"#,
                ErrorCode::BadArgument,
            ),
            (
                br#"{"cmd":"capture","port":"a","snaplen":2049}"#,
                ErrorCode::BadArgument,
            ),
            (
                br#"{"cmd":"capture","port":"a","count":-1}"#,
                ErrorCode::BadRequest,
            ),
            (
                br#"{"cmd":"capture","port":"a","kind":"tap"}"#,
                ErrorCode::UnexpectedField,
            ),
            (br#"{"cmd":"stats","count":1}"#, ErrorCode::UnexpectedField),
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert_eq!(e.code(), code, "{bad:?}: {e}");
        }
        let e = Request::parse(format!(r#"{{"cmd":"{}"}}"#, "x".repeat(1000)).as_bytes());
        assert!(e.unwrap_err().to_string().len() < 150);
    }

    #[test]
    fn lines_round_trip() {
        for c in [
            Command::Version,
            Command::List,
            Command::Stats { port: None },
            Command::Stats {
                port: Some("vale0:1".into()),
            },
            Command::Add {
                ports: vec!["vale0:1@conf:rings=2".into(), "netmap:p{1".into()],
            },
            Command::Remove {
                ports: vec!["vale0:1".into()],
            },
            Command::Attach {
                switch: "vale0".into(),
                ifname: "eth1".into(),
                kind: AttachKind::Xdp,
            },
            Command::Detach {
                switch: "vale0".into(),
                ifname: "eth1".into(),
            },
            Command::Capture {
                port: "vale0:1".into(),
                count: Some(5),
                snaplen: 128,
            },
            Command::Capture {
                port: "vale0:1".into(),
                count: None,
                snaplen: 2048,
            },
        ] {
            assert_eq!(Request::parse(c.to_line().as_bytes()), Ok(c));
        }
        let r = Response::error(&RequestError::NoSuchPort("x".into()));
        assert_eq!(
            r.to_line(),
            r#"{"ok":false,"code":"no_such_port","error":"no port named \"x\""}"#
        );
        let back: Response = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(back, r);
    }
}
