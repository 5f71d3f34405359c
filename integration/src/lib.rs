//! # ptnet-integration
//!
//! Helpers for end-to-end tests: building and locating the project's binaries, the patched QEMU
//! and the test guest image, running `ptnet-backend` and host `ptnet-pkt-gen` processes, and booting
//! guests ([`vm`]).
//!
//! How binaries are found (robust across `cargo test` invocations and target directories):
//! * workspace binaries (`ptnet-backend`, `ptnet-pkt-gen`): [`host::bins`] runs
//!   `cargo build -p ptnet-backend -p ptnet-driver-tools --bins --message-format=json` (a no-op when up to
//!   date) and takes the `executable` paths cargo reports; `PTNET_BACKEND` / `PTNET_PKTGEN_HOST`
//!   override them.
//! * QEMU: the last stdout line of `qemu-patches/build` (cached by that script); `PTNET_QEMU`
//!   overrides it.
//! * the guest image: the last stdout line of `integration/guest/build-image.sh` (cached);
//!   `PTNET_GUEST_DIR` overrides it.
//!
//! VM tests (`tests/vm_*.rs`, `tests/qemu_device.rs`) boot QEMU, so they are `#[ignore]`d and a
//! plain `cargo test` reports them as ignored. `cargo xtask test` runs them
//! (`-- --include-ignored`; with `PTNET_SKIP_VM=1` it leaves them ignored), as does
//! `cargo test -p ptnet-integration --test vm_ptnet -- --include-ignored`. Asked for, they fail
//! when any of these cannot be built.

pub mod host;
pub mod stats;
// The crate's only `unsafe` (every block with a `// SAFETY:` comment).
#[allow(unsafe_code)]
pub mod sys;
pub mod vm;

pub use host::{bins, Backend, Bins, TempDir};
pub use stats::PortCounters;
pub use vm::{Accel, GuestImage, Nic, Vm, VmConfig, VmResult};

/// Reads a numeric field from a flat JSON object line (as `ptnet-pkt-gen --json` prints).
pub fn json_num(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = line[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads a string field from a flat JSON object line.
pub fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')?;
    Some(&line[start..start + end])
}

/// Reads a boolean field from a flat JSON object line.
pub fn json_bool(line: &str, key: &str) -> Option<bool> {
    let pat = format!("\"{key}\":");
    let rest = line[line.find(&pat)? + pat.len()..].trim_start();
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// The host transmit rate (pps) of a VM test: `PTNET_VM_RATE` (0 = unlimited) or `default`, a
/// rate a TCG guest keeps up with on 2 busy cores.
pub fn vm_test_rate(default: u64) -> u64 {
    std::env::var("PTNET_VM_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let l = r#"{"mode":"rx","packets":100000,"seconds":1.500000,"mpps":0.066,"errors":0}"#;
        assert_eq!(json_num(l, "packets"), Some(100000.0));
        assert_eq!(json_num(l, "mpps"), Some(0.066));
        assert_eq!(json_num(l, "errors"), Some(0.0));
        assert_eq!(json_num(l, "lost"), None);
        assert_eq!(json_str(l, "mode"), Some("rx"));
        let b = r#"{"mode":"bridge","zero_copy":true,"copied":false,"dropped":0}"#;
        assert_eq!(json_bool(b, "zero_copy"), Some(true));
        assert_eq!(json_bool(b, "copied"), Some(false));
        assert_eq!(json_bool(b, "dropped"), None);
    }
}
