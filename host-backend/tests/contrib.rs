//! The files in `host-backend/contrib/`: the vhost-user backend descriptor (QEMU's
//! `docs/interop/vhost-user.json` schema, `VhostUserBackend`) agrees with the binary's
//! `--print-capabilities`, and the socket unit listens where the service's daemon serves.

use std::path::Path;

fn contrib(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The schema's device types (`VHostUserBackendType`).
const BACKEND_TYPES: &[&str] = &[
    "9p",
    "balloon",
    "block",
    "caif",
    "console",
    "crypto",
    "gpu",
    "input",
    "net",
    "rng",
    "rpmsg",
    "rproc-serial",
    "scsi",
    "vsock",
];

#[test]
fn the_descriptor_follows_the_schema_and_matches_the_binary() {
    let text = contrib("50-ptnet-backend.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let o = v.as_object().expect("an object");
    // `description`, `type` and `binary` are mandatory, `tags` optional; nothing else.
    for k in o.keys() {
        assert!(
            ["description", "type", "binary", "tags"].contains(&k.as_str()),
            "unknown member {k}"
        );
    }
    let description = o["description"].as_str().expect("description: a string");
    assert!(
        !description.is_empty() && description.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "description: printable ASCII only"
    );
    let kind = o["type"].as_str().expect("type: a string");
    assert!(BACKEND_TYPES.contains(&kind), "type {kind}");
    let binary = Path::new(o["binary"].as_str().expect("binary: a string"));
    assert!(binary.is_absolute(), "binary: an absolute path");
    assert_eq!(binary.file_name().unwrap(), "ptnet-backend");
    if let Some(tags) = o.get("tags") {
        assert!(tags
            .as_array()
            .expect("tags: an array")
            .iter()
            .all(|t| t.is_string()));
    }
    // The binary it names says the same of itself.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ptnet-backend"))
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let caps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(caps["type"], kind);
    assert!(caps["features"].as_array().is_some(), "{caps}");
    // The service unit installs the binary where the descriptor says it is.
    let service = contrib("ptnet-backend@.service");
    assert!(service.contains(&format!("ExecStart={} ", binary.display())));
}

#[test]
fn the_socket_unit_listens_where_the_service_serves() {
    let service = contrib("ptnet-backend@.service");
    let socket = contrib("ptnet-backend@.socket");
    let dir = "/run/ptnet/%i";
    assert!(
        service.contains(&format!("--socket-dir {dir} ")),
        "{service}"
    );
    // systemd's sockets live in the runtime directory, which must outlive a service restart.
    assert!(service.contains("RuntimeDirectoryPreserve=yes"));
    let listen: Vec<&str> = socket
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .collect();
    assert_eq!(
        listen,
        [format!(
            "{dir}/{}",
            ptnet_backend::daemon::control::protocol::CONTROL_SOCKET_NAME
        )]
    );
    assert!(socket.contains("\nAccept=no\n"));
    assert!(socket.contains("\nService=ptnet-backend@%i.service\n"));
}
