//! The control socket's protocol: one JSON request per line, one JSON response per line. The
//! daemon ([`super::ControlServer`]) and the client (`ptnet-ctl`, [`crate::ctl`]) share these
//! types.
//!
//! Requests (`port` only with `stats`; any other field is refused):
//!
//! ```text
//! {"cmd":"version"}
//! {"cmd":"list"}
//! {"cmd":"stats"}
//! {"cmd":"stats","port":"vale0:1"}
//! ```
//!
//! Responses: `{"ok":true,` and the command's field (`version`, `ports` or `stats`) `}`, or
//! `{"ok":false,"code":"...","error":"..."}` (codes: [`ErrorCode`]). A request must be at most
//! [`MAX_REQUEST`] bytes, newline excluded, and arrive whole within the deadline; a longer line
//! gets `too_long` and the connection is closed.

use crate::daemon::stats::{DaemonStats, DatapathKind, FrontendState};
use crate::portspec::PortKind;
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
}

/// Why a request was refused: each is a response `{"ok":false,"code":...,"error":...}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, a missing `cmd`, or an unknown field (serde's message).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `cmd` names no command.
    #[error("unknown command {0:?} (commands: version, list, stats)")]
    UnknownCommand(String),
    /// A field the command does not take.
    #[error("{cmd}: takes no {field:?}")]
    UnexpectedField {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
    },
    /// `stats` for a port the daemon does not serve.
    #[error("no port named {0:?}")]
    NoSuchPort(String),
    /// A line longer than [`MAX_REQUEST`] bytes (the connection is then closed).
    #[error("request longer than {max} bytes")]
    TooLong {
        /// [`MAX_REQUEST`].
        max: usize,
    },
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
    /// [`RequestError::TooLong`].
    TooLong,
    /// [`RequestError::Busy`].
    Busy,
}

impl RequestError {
    /// Its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::UnknownCommand(_) => ErrorCode::UnknownCommand,
            Self::UnexpectedField { .. } => ErrorCode::UnexpectedField,
            Self::NoSuchPort(_) => ErrorCode::NoSuchPort,
            Self::TooLong { .. } => ErrorCode::TooLong,
            Self::Busy { .. } => ErrorCode::Busy,
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
        let no_port = |cmd| match self.port {
            Some(_) => Err(RequestError::UnexpectedField { cmd, field: "port" }),
            None => Ok(()),
        };
        match self.cmd.as_str() {
            "version" => no_port("version").map(|()| Command::Version),
            "list" => no_port("list").map(|()| Command::List),
            "stats" => Ok(Command::Stats { port: self.port }),
            other => Err(RequestError::UnknownCommand(echo(other))),
        }
    }
}

impl Command {
    /// The request line for this command (no newline).
    pub fn to_line(&self) -> String {
        let (cmd, port) = match self {
            Self::Version => ("version", None),
            Self::List => ("list", None),
            Self::Stats { port } => ("stats", port.clone()),
        };
        serde_json::to_string(&Request {
            cmd: cmd.into(),
            port,
        })
        .expect("a request serializes")
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
