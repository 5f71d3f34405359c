//! Port names as given on the command line, in netmap's nmport syntax.
//!
//! ```text
//! netmap:NAME{N        end 0 ("master") of pipe N of NAME
//! netmap:NAME}N        end 1 ("slave") of pipe N of NAME
//! valeX:Y              port Y of VALE switch X (X and Y: letters, digits, '_')
//! null:NAME            a port that discards what it is sent and never receives
//! netmap:IFNAME        a host interface through kernel netmap (/dev/netmap)
//! tap:NAME             a tap device (created if missing), see [`crate::port::nic`]
//! packet:IFNAME        a host interface through AF_PACKET rings
//! xdp:IFNAME[@QUEUE]   a host interface through AF_XDP, from queue QUEUE (default 0)
//! ...@conf:OPT=V,...   options: rings, tx-rings, rx-rings, slots, tx-slots, rx-slots
//! valeX:IF@conf:attach=packet|xdp|tap   host interface IF joins switch X (no socket)
//! ```

use std::fmt;

/// Most rings (TX + RX) a ptnet port can have: the kick registers end at 252.
pub const MAX_RINGS: u32 = ptnet_protocol::regs::ptnet::MAX_RINGS;
/// Fewest slots per ring.
pub const MIN_SLOTS: u32 = 2;
/// Most slots per ring (netmap's limit).
pub const MAX_SLOTS: u32 = 8192;
/// Default slots per ring.
pub const DEFAULT_SLOTS: u32 = 1024;

/// What kind of port a name designates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// One end of a netmap pipe.
    Pipe {
        /// Pipe name (NAME in `netmap:NAME{N`).
        name: String,
        /// Pipe number N.
        id: u32,
        /// true for `}` (end 1), false for `{` (end 0).
        slave: bool,
    },
    /// A port of a VALE switch.
    Vale {
        /// Switch name including "vale" (`vale0`).
        switch: String,
        /// Port name on that switch.
        port: String,
    },
    /// A port that discards.
    Null {
        /// Name, possibly empty.
        name: String,
    },
    /// A tap device (`tap:NAME`).
    Tap {
        /// Device name.
        name: String,
    },
    /// A host interface through AF_PACKET (`packet:IFNAME`).
    Packet {
        /// Interface name.
        ifname: String,
    },
    /// A host interface through AF_XDP (`xdp:IFNAME[@QUEUE]`); ring i uses queue `queue + i`.
    Xdp {
        /// Interface name.
        ifname: String,
        /// First queue.
        queue: u32,
    },
    /// A host interface through kernel netmap (`netmap:IFNAME`).
    KernelNetmap {
        /// Interface name.
        ifname: String,
    },
}

/// The device a port is served as (`@conf:frontend=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frontend {
    /// The ptnet device (the default): the guest syncs the port's netmap rings itself.
    #[default]
    Ptnet,
    /// A standard vhost-user virtio-net device (stock QEMU, any `virtio_net` guest).
    VirtioNet,
}

/// How an attached host interface joins its switch (`valeX:IFNAME@conf:attach=KIND`): through
/// the port kind of the same name (`packet:`, `xdp:`, `tap:`), driven by a daemon thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    /// AF_PACKET.
    Packet,
    /// AF_XDP (queue 0).
    Xdp,
    /// A tap device (created if missing).
    Tap,
}

impl AttachKind {
    /// `packet`, `xdp`, `tap`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "packet" => Some(Self::Packet),
            "xdp" => Some(Self::Xdp),
            "tap" => Some(Self::Tap),
            _ => None,
        }
    }

    /// The PORT argument of the interface through this kind (`packet:eth1`).
    pub fn nic_port(self, ifname: &str) -> String {
        let k = match self {
            Self::Packet => "packet",
            Self::Xdp => "xdp",
            Self::Tap => "tap",
        };
        format!("{k}:{ifname}")
    }
}

/// Ring geometry asked for with `@conf:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConf {
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per TX ring.
    pub tx_slots: u32,
    /// Slots per RX ring.
    pub rx_slots: u32,
}

impl Default for RingConf {
    fn default() -> Self {
        Self {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: DEFAULT_SLOTS,
            rx_slots: DEFAULT_SLOTS,
        }
    }
}

/// A parsed PORT argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// The name without its `@conf:` part (also the socket's file name, plus ".sock").
    pub name: String,
    /// The kind of port.
    pub kind: PortKind,
    /// Ring geometry.
    pub conf: RingConf,
    /// Whether `@conf:` gave anything (pipes must agree only when both ends say something).
    pub explicit_conf: bool,
    /// VALE: source addresses the port may claim beyond its own (`macs=N`; a bridge port needs
    /// one per host behind it). See `netmap::mactable`.
    pub mac_limit: u32,
    /// The device the port is served as (`frontend=ptnet|virtio-net`).
    pub frontend: Frontend,
    /// VALE: the host interface named like the port attached to the switch through it
    /// (`attach=packet|xdp|tap`): no socket, a daemon thread moves its frames.
    pub attach: Option<AttachKind>,
}

/// Most source addresses one VALE port may claim: a quarter of the switch's table.
pub const MAX_MAC_LIMIT: u32 = 4096;

/// Why a PORT argument was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpecError {
    /// The argument as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for PortSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad port '{}': {}", self.spec, self.reason)
    }
}

impl std::error::Error for PortSpecError {}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':', '@' or white space.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '@'))
}

impl PortSpec {
    /// Parses one PORT argument.
    pub fn parse(spec: &str) -> Result<Self, PortSpecError> {
        let err = |reason: String| PortSpecError {
            spec: spec.to_string(),
            reason,
        };
        let (name, conf_str) = match spec.split_once("@conf:") {
            Some((n, c)) => (n, Some(c)),
            None => (spec, None),
        };
        // `xdp:IFNAME@QUEUE` is the one kind with an '@' of its own.
        if name.contains('@') && !name.starts_with("xdp:") {
            return Err(err(
                "options go after '@conf:' (e.g. vale0:1@conf:rings=2)".into()
            ));
        }
        let kind = if let Some(rest) = name
            .strip_prefix("netmap:")
            .filter(|r| !r.contains(['{', '}']))
        {
            if !valid_ifname(rest) {
                return Err(err(format!("'{rest}' is not an interface name")));
            }
            PortKind::KernelNetmap {
                ifname: rest.to_string(),
            }
        } else if let Some(rest) = name.strip_prefix("netmap:") {
            let pos = rest.find(['{', '}']).expect("filtered above");
            let (pname, tail) = rest.split_at(pos);
            let slave = tail.starts_with('}');
            let id: u32 = tail[1..]
                .parse()
                .map_err(|_| err(format!("pipe number '{}' is not a number", &tail[1..])))?;
            if !valid_ident(pname) {
                return Err(err(
                    "pipe name must be letters, digits, '_', '-' or '.'".into()
                ));
            }
            PortKind::Pipe {
                name: pname.to_string(),
                id,
                slave,
            }
        } else if name.starts_with("vale") {
            let (switch, port) = name
                .split_once(':')
                .ok_or_else(|| err("a VALE port is valeX:Y".into()))?;
            if !valid_ident(switch) || !valid_ident(port) {
                return Err(err(
                    "VALE switch and port names must be letters, digits, '_', '-' or '.'".into(),
                ));
            }
            PortKind::Vale {
                switch: switch.to_string(),
                port: port.to_string(),
            }
        } else if let Some(n) = name.strip_prefix("null:") {
            if !n.is_empty() && !valid_ident(n) {
                return Err(err(
                    "null port name must be letters, digits, '_', '-' or '.'".into(),
                ));
            }
            PortKind::Null {
                name: n.to_string(),
            }
        } else if let Some(n) = name.strip_prefix("tap:") {
            if !valid_ifname(n) {
                return Err(err(format!("'{n}' is not an interface name")));
            }
            PortKind::Tap {
                name: n.to_string(),
            }
        } else if let Some(n) = name.strip_prefix("packet:") {
            if !valid_ifname(n) {
                return Err(err(format!("'{n}' is not an interface name")));
            }
            PortKind::Packet {
                ifname: n.to_string(),
            }
        } else if let Some(rest) = name.strip_prefix("xdp:") {
            let (n, queue) = match rest.split_once('@') {
                Some((n, q)) => (
                    n,
                    q.parse().map_err(|_| {
                        err(format!("queue '{q}' is not a number (xdp:IFNAME@QUEUE)"))
                    })?,
                ),
                None => (rest, 0),
            };
            if !valid_ifname(n) {
                return Err(err(format!("'{n}' is not an interface name")));
            }
            PortKind::Xdp {
                ifname: n.to_string(),
                queue,
            }
        } else {
            return Err(err(
                "unknown port kind (expected netmap:NAME{N, netmap:NAME}N, valeX:Y, null:NAME, netmap:IFNAME, tap:NAME, packet:IFNAME or xdp:IFNAME[@QUEUE])"
                    .into(),
            ));
        };
        let mut conf = RingConf::default();
        let mut mac_limit = None;
        let mut frontend = Frontend::Ptnet;
        let mut attach = None;
        if let Some(c) = conf_str {
            for opt in c.split(',').filter(|o| !o.is_empty()) {
                let (k, v) = opt
                    .split_once('=')
                    .ok_or_else(|| err(format!("option '{opt}' is not KEY=VALUE")))?;
                if k == "frontend" {
                    frontend = match v {
                        "ptnet" => Frontend::Ptnet,
                        "virtio-net" => Frontend::VirtioNet,
                        _ => return Err(err(format!("frontend '{v}' (known: ptnet, virtio-net)"))),
                    };
                    continue;
                }
                if k == "attach" {
                    attach =
                        Some(AttachKind::parse(v).ok_or_else(|| {
                            err(format!("attach '{v}' (known: packet, xdp, tap)"))
                        })?);
                    continue;
                }
                let v: u32 = v
                    .parse()
                    .map_err(|_| err(format!("option '{k}' wants a number, got '{v}'")))?;
                match k {
                    "rings" => (conf.tx_rings, conf.rx_rings) = (v, v),
                    "tx-rings" => conf.tx_rings = v,
                    "rx-rings" => conf.rx_rings = v,
                    "slots" => (conf.tx_slots, conf.rx_slots) = (v, v),
                    "tx-slots" => conf.tx_slots = v,
                    "rx-slots" => conf.rx_slots = v,
                    "macs" => mac_limit = Some(v),
                    _ => {
                        return Err(err(format!(
                            "unknown option '{k}' (known: rings, tx-rings, rx-rings, slots, tx-slots, rx-slots, macs, frontend, attach)"
                        )))
                    }
                }
            }
        }
        // Checked: `tx-rings=4294967295,rx-rings=1` must not wrap to 0 and pass.
        let total = conf.tx_rings.checked_add(conf.rx_rings);
        if conf.tx_rings == 0 || conf.rx_rings == 0 || total.is_none_or(|t| t > MAX_RINGS) {
            return Err(err(format!(
                "{} TX + {} RX rings: each must be at least 1 and together at most {MAX_RINGS}",
                conf.tx_rings, conf.rx_rings
            )));
        }
        for s in [conf.tx_slots, conf.rx_slots] {
            if !(MIN_SLOTS..=MAX_SLOTS).contains(&s) {
                return Err(err(format!(
                    "{s} slots: must be between {MIN_SLOTS} and {MAX_SLOTS}"
                )));
            }
        }
        if let PortKind::Xdp { queue, .. } = &kind {
            // Ring i uses queue `queue + i`: the last queue must be a u32 too.
            let last = conf.tx_rings.max(conf.rx_rings) - 1;
            if queue.checked_add(last).is_none() {
                return Err(err(format!(
                    "queue {queue} + {last}: the queues of its rings do not fit in 32 bits"
                )));
            }
        }
        if mac_limit.is_some() && !matches!(kind, PortKind::Vale { .. }) {
            return Err(err("'macs' is an option of VALE ports".into()));
        }
        if let (Some(_), PortKind::Vale { port, .. }) = (attach, &kind) {
            if !valid_ifname(port) || frontend != Frontend::Ptnet {
                return Err(err(format!(
                    "attach: '{port}' must be an interface name, and no frontend is served"
                )));
            }
        } else if attach.is_some() {
            return Err(err(
                "'attach' is an option of VALE ports (valeX:IFNAME)".into()
            ));
        }
        if mac_limit.is_some_and(|m| m > MAX_MAC_LIMIT) {
            return Err(err(format!("macs: at most {MAX_MAC_LIMIT}")));
        }
        Ok(Self {
            name: name.to_string(),
            kind,
            conf,
            explicit_conf: conf_str.is_some(),
            // An attached interface is a bridge port: the hosts behind it send from their own
            // addresses (up to the limit `macs` gives, by default as many as netmap allows).
            mac_limit: mac_limit.unwrap_or(if attach.is_some() {
                MAX_MAC_LIMIT
            } else {
                crate::port::mactable::DEFAULT_MAC_LIMIT
            }),
            frontend,
            attach,
        })
    }
}

#[cfg(test)]
mod frontend_tests {
    use super::*;

    #[test]
    fn frontend_option() {
        assert_eq!(
            PortSpec::parse("vale0:1").unwrap().frontend,
            Frontend::Ptnet
        );
        let p = PortSpec::parse("vale0:1@conf:frontend=virtio-net,rings=2").unwrap();
        assert_eq!((p.frontend, p.conf.tx_rings), (Frontend::VirtioNet, 2));
        assert!(p.explicit_conf);
        assert_eq!(
            PortSpec::parse("vale0:1@conf:rings=2,frontend=ptnet")
                .unwrap()
                .frontend,
            Frontend::Ptnet
        );
        assert!(PortSpec::parse("vale0:1@conf:frontend=virtio").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipes() {
        let p = PortSpec::parse("netmap:p{1").unwrap();
        assert_eq!(
            p.kind,
            PortKind::Pipe {
                name: "p".into(),
                id: 1,
                slave: false
            }
        );
        assert_eq!(p.name, "netmap:p{1");
        let p = PortSpec::parse("netmap:pipe_a}7@conf:slots=256").unwrap();
        assert_eq!(
            p.kind,
            PortKind::Pipe {
                name: "pipe_a".into(),
                id: 7,
                slave: true
            }
        );
        assert_eq!(p.name, "netmap:pipe_a}7");
        assert_eq!(
            p.conf,
            RingConf {
                tx_rings: 1,
                rx_rings: 1,
                tx_slots: 256,
                rx_slots: 256
            }
        );
        assert!(p.explicit_conf);
    }

    #[test]
    fn parses_vale_and_null() {
        let p = PortSpec::parse("vale0:1@conf:rings=2,slots=1024").unwrap();
        assert_eq!(
            p.kind,
            PortKind::Vale {
                switch: "vale0".into(),
                port: "1".into()
            }
        );
        assert_eq!(
            p.conf,
            RingConf {
                tx_rings: 2,
                rx_rings: 2,
                tx_slots: 1024,
                rx_slots: 1024
            }
        );
        assert_eq!(p.name, "vale0:1");
        let p =
            PortSpec::parse("valeA:x@conf:tx-rings=3,rx-rings=1,tx-slots=64,rx-slots=128").unwrap();
        assert_eq!(
            p.conf,
            RingConf {
                tx_rings: 3,
                rx_rings: 1,
                tx_slots: 64,
                rx_slots: 128
            }
        );
        assert_eq!(
            PortSpec::parse("null:sink").unwrap().kind,
            PortKind::Null {
                name: "sink".into()
            }
        );
        assert_eq!(
            PortSpec::parse("null:").unwrap().kind,
            PortKind::Null { name: "".into() }
        );
        assert!(!PortSpec::parse("null:").unwrap().explicit_conf);
    }

    #[test]
    fn refuses_bad_ports_naming_them() {
        for bad in [
            "eth0",
            "netmap:p{x",
            "netmap:{1",
            "vale0",
            "vale0:",
            "vale0:1@conf:rings=0",
            "vale0:1@conf:rings=17",
            "vale0:1@conf:tx-rings=31,rx-rings=2",
            "vale0:1@conf:slots=1",
            "vale0:1@conf:slots=9000",
            "vale0:1@conf:bogus=1",
            "vale0:1@conf:rings",
            "vale0:1@conf:rings=two",
            "vale0:1@2",
            "null:a/b",
            "",
            "tap:",
            "tap:a/b",
            "tap:abcdefghijklmnop",
            "packet:",
            "packet:eth0@1",
            "xdp:eth0@x",
            "xdp:@1",
            "xdp:eth0@1@2",
            "netmap:",
            "netmap:eth 0",
        ] {
            let e = PortSpec::parse(bad).unwrap_err();
            assert_eq!(e.spec, bad);
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn parses_nic_ports() {
        let k = |s: &str| PortSpec::parse(s).unwrap().kind;
        assert_eq!(k("tap:pt0"), PortKind::Tap { name: "pt0".into() });
        assert_eq!(
            k("packet:veth0@conf:rings=2"),
            PortKind::Packet {
                ifname: "veth0".into()
            }
        );
        assert_eq!(
            k("xdp:eth0"),
            PortKind::Xdp {
                ifname: "eth0".into(),
                queue: 0
            }
        );
        let p = PortSpec::parse("xdp:eth0@2@conf:slots=512").unwrap();
        assert_eq!(
            p.kind,
            PortKind::Xdp {
                ifname: "eth0".into(),
                queue: 2
            }
        );
        assert_eq!(p.name, "xdp:eth0@2");
        assert_eq!(p.conf.tx_slots, 512);
        assert_eq!(
            k("netmap:eth0"),
            PortKind::KernelNetmap {
                ifname: "eth0".into()
            }
        );
        // Pipes keep their syntax.
        assert!(matches!(k("netmap:eth0{1"), PortKind::Pipe { .. }));
    }

    #[test]
    fn ring_counts_that_overflow_u32_are_refused() {
        for bad in [
            "vale0:1@conf:tx-rings=4294967295,rx-rings=1",
            "vale0:1@conf:tx-rings=1,rx-rings=4294967295",
            "vale0:1@conf:tx-rings=2147483648,rx-rings=2147483648",
            "vale0:1@conf:rings=4294967295",
            "vale0:1@conf:tx-rings=4294967296",
            "vale0:1@conf:slots=4294967295",
            "vale0:1@conf:slots=18446744073709551617",
            "xdp:eth0@4294967295@conf:rings=2",
            "xdp:eth0@4294967296",
            "netmap:p{4294967296",
        ] {
            let e = PortSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
        assert!(PortSpec::parse("xdp:eth0@4294967295").is_ok());
        assert!(PortSpec::parse("xdp:eth0@4294967294@conf:rings=2").is_ok());
    }

    /// Random strings made of the grammar's own pieces and boundary numbers: the parser never
    /// panics (debug builds check every arithmetic overflow), and whatever it accepts is within
    /// the limits.
    #[test]
    fn random_port_strings_never_panic() {
        const PIECES: &[&str] = &[
            "netmap:",
            "vale",
            "null:",
            "tap:",
            "packet:",
            "xdp:",
            "@conf:",
            "@",
            ":",
            "{",
            "}",
            "=",
            ",",
            "rings",
            "tx-rings",
            "rx-rings",
            "slots",
            "tx-slots",
            "rx-slots",
            "macs",
            "0",
            "1",
            "2",
            "16",
            "17",
            "32",
            "4294967295",
            "4294967296",
            "2147483648",
            "8192",
            "-1",
            "+1",
            "18446744073709551615",
            "a",
            "eth0",
            "_",
            ".",
            "..",
            "/",
            " ",
            "\u{e9}",
            "\0",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _ in 0..200_000 {
            let n = next() % 12;
            let mut s = String::new();
            for _ in 0..n {
                let r = next();
                if r % 8 == 0 {
                    // an arbitrary char, sometimes outside ASCII
                    s.push(char::from_u32((r >> 8) as u32 % 0x800).unwrap_or('?'));
                } else {
                    s.push_str(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            if let Ok(p) = PortSpec::parse(&s) {
                let c = p.conf;
                assert!(c.tx_rings >= 1 && c.rx_rings >= 1, "{s}");
                assert!(u64::from(c.tx_rings) + u64::from(c.rx_rings) <= u64::from(MAX_RINGS));
                for slots in [c.tx_slots, c.rx_slots] {
                    assert!((MIN_SLOTS..=MAX_SLOTS).contains(&slots), "{s}");
                }
            }
        }
    }

    #[test]
    fn ring_limit_is_the_kick_space() {
        assert!(PortSpec::parse("vale0:1@conf:tx-rings=16,rx-rings=16").is_ok());
        assert_eq!(MAX_RINGS, 32);
    }
}
