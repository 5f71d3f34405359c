//! The port-string grammar, parsed once: every tool (`ptnet-pkt-gen`, `ptnet-bridge`) and
//! [`crate::Port::open`] go through [`PortSpec::parse`], and the transports receive the parsed
//! value, never the string.
//!
//! ```text
//! vhost-user:PATH          a ptnet-backend socket (from a host process)
//! [pci:]ptnetN             the N-th ptnet NIC of this guest, in sysfs order (ptnet0, pci:ptnet1)
//! [pci:]ptnet:ADDR         the ptnet NIC at PCI address ADDR
//! pci:ADDR                 the same
//! packet:IFNAME            a Linux network interface, through an AF_PACKET socket
//! ADDR = DDDD:BB:DD.F | BB:DD.F   (hex; device < 0x20, function 0..7; domain 0000 if omitted)
//! ```

use crate::Error;
use std::fmt;
use std::path::PathBuf;

/// Largest `N` in `ptnetN`: far more NICs than a guest has, small enough to be a typo guard.
const MAX_INDEX: usize = 9999;

/// A parsed port string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// `vhost-user:PATH`: connect to a `ptnet-backend` socket.
    VhostUser(PathBuf),
    /// A ptnet PCI device in this guest.
    Pci(PciSelector),
    /// `packet:IFNAME`: a Linux network interface through an `AF_PACKET` socket.
    Packet(String),
}

/// Which ptnet PCI NIC a spec designates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PciSelector {
    /// The N-th ptnet NIC in sysfs order.
    Index(usize),
    /// By address, normalised to sysfs's spelling (`0000:00:04.0`, lower case).
    Address(String),
}

impl fmt::Display for PciSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciSelector::Index(n) => write!(f, "ptnet{n}"),
            PciSelector::Address(a) => write!(f, "ptnet:{a}"),
        }
    }
}

impl PortSpec {
    /// Parses a port string; the error names the string and what is wrong with it.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::BadPort {
            spec: spec.to_string(),
            reason,
        };
        if let Some(path) = spec.strip_prefix("vhost-user:") {
            if path.is_empty() {
                return Err(bad("missing socket path after 'vhost-user:'"));
            }
            return Ok(PortSpec::VhostUser(PathBuf::from(path)));
        }
        if let Some(ifname) = spec.strip_prefix("packet:") {
            let ok = !ifname.is_empty()
                && ifname.len() < 16
                && ifname != "."
                && ifname != ".."
                && ifname
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            if !ok {
                return Err(bad("expected 'packet:IFNAME' with an interface name (1-15 characters, no '/' or ':')"));
            }
            return Ok(PortSpec::Packet(ifname.to_string()));
        }
        let (pci_prefix, rest) = match spec.strip_prefix("pci:") {
            Some(r) => (true, r),
            None => (false, spec),
        };
        let addr = rest.strip_prefix("ptnet:").or_else(|| {
            pci_prefix
                .then_some(rest)
                .filter(|r| !r.starts_with("ptnet"))
        });
        if let Some(addr) = addr {
            return pci_address(addr).map(|a| PortSpec::Pci(PciSelector::Address(a))).ok_or_else(|| {
                bad("expected a PCI address DDDD:BB:DD.F or BB:DD.F (hex, device < 20, function 0-7)")
            });
        }
        if let Some(n) = rest.strip_prefix("ptnet") {
            return n
                .parse::<usize>()
                .ok()
                .filter(|&i| n.bytes().all(|b| b.is_ascii_digit()) && i <= MAX_INDEX)
                .map(|i| PortSpec::Pci(PciSelector::Index(i)))
                .ok_or_else(|| bad("expected 'ptnetN' with a device number N"));
        }
        Err(bad(
            "expected 'vhost-user:PATH', 'ptnetN', 'ptnet:DDDD:BB:DD.F', 'pci:DDDD:BB:DD.F' or 'packet:IFNAME'",
        ))
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`, normalised to `dddd:bb:dd.f`; `None` if it is not one.
fn pci_address(s: &str) -> Option<String> {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*dom, *bus, *devfn),
        [bus, devfn] => ("0000", *bus, *devfn),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let ok = hex(bus, 2)
        && hex(dev, 2)
        && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 32)
        && func.len() == 1
        && matches!(func.as_bytes()[0], b'0'..=b'7');
    ok.then(|| format!("{dom}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pci(s: &str) -> PciSelector {
        match PortSpec::parse(s) {
            Ok(PortSpec::Pci(sel)) => sel,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    /// Every form README, `--help` and the module doc give.
    #[test]
    fn every_documented_form() {
        assert_eq!(
            PortSpec::parse("vhost-user:/tmp/p{1.sock").unwrap(),
            PortSpec::VhostUser("/tmp/p{1.sock".into())
        );
        assert_eq!(
            PortSpec::parse("packet:eth0").unwrap(),
            PortSpec::Packet("eth0".into())
        );
        assert_eq!(pci("ptnet0"), PciSelector::Index(0));
        assert_eq!(pci("ptnet12"), PciSelector::Index(12));
        assert_eq!(pci("pci:ptnet0"), PciSelector::Index(0));
        assert_eq!(pci("pci:ptnet1"), PciSelector::Index(1));
        for s in [
            "ptnet:0000:00:04.0",
            "ptnet:00:04.0",
            "pci:0000:00:04.0",
            "pci:00:04.0",
            "pci:ptnet:0000:00:04.0",
        ] {
            assert_eq!(pci(s), PciSelector::Address("0000:00:04.0".into()), "{s}");
        }
        assert_eq!(
            pci("ptnet:00:1F.7"),
            PciSelector::Address("0000:00:1f.7".into())
        );
        assert_eq!(pci("pci:ptnet3").to_string(), "ptnet3");
        assert_eq!(pci("pci:00:04.0").to_string(), "ptnet:0000:00:04.0");
    }

    #[test]
    fn malformed_specs_name_themselves() {
        for bad in [
            "",
            "vhost-user:",
            "ptnet",
            "pci:ptnet",
            "ptnetx",
            "ptnet-1",
            "ptnet+1",
            "ptnet99999",
            "ptnet:",
            "pci:",
            "ptnet:0000:00:04",
            "ptnet:0000:00:04.8",
            "ptnet:0000:00:20.0",
            "ptnet:000:00:04.0",
            "ptnet:0000:0g:04.0",
            "pci:0000:00:04.0.1",
            "netmap:eth0",
            "eth0",
            "/tmp/x.sock",
            "packet:",
            "packet:a/b",
            "packet:0123456789abcdef",
            "packet:..",
            "packet:e th0",
        ] {
            match PortSpec::parse(bad) {
                Err(Error::BadPort { spec, reason }) => {
                    assert_eq!(spec, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
