//! `--print-capabilities`: QEMU's convention for vhost-user backend programs (QEMU's
//! `docs/interop/vhost-user.rst`, "Backend program conventions", and the schema
//! `docs/interop/vhost-user.json`): the program prints a JSON object naming its device type and
//! features on stdout and exits 0, so that management software (libvirt) can discover it.

use serde::Serialize;

/// What `--print-capabilities` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The vhost-user device type (`VHostUserBackendType`): `net`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Type-specific features: none are defined for `net`.
    pub features: Vec<&'static str>,
}

/// This daemon's.
pub fn capabilities() -> Capabilities {
    Capabilities {
        kind: "net",
        features: Vec::new(),
    }
}

/// The line `--print-capabilities` prints (no newline).
pub fn capabilities_json() -> String {
    serde_json::to_string(&capabilities()).expect("capabilities serialize")
}
