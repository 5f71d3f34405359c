//! The `control` target: request lines a control-socket client sends, as raw bytes and as
//! JSON objects built from the input (so that the fuzzer reaches each command's field checks).

use super::input::Input;
use crate::daemon::control::protocol::{Request, Response};
use crate::portspec::PortSpec;

/// Longest response line a refusal may give: the daemon's message plus at most 64 characters of
/// the client's request echoed (JSON escaping can grow each to 6 bytes).
const MAX_ERROR_LINE: usize = 1024 + 6 * 64;

/// Command names the structured half picks from, with some that are not commands.
const CMDS: &[&str] = &[
    "version", "list", "stats", "add", "remove", "attach", "detach", "capture", "", "LIST",
];

/// Field names, the request's and others.
const FIELDS: &[&str] = &[
    "port", "ports", "switch", "ifname", "kind", "count", "snaplen", "cmd", "x",
];

/// Every request line either parses into a command that writes itself back as the same line,
/// or is refused with one JSON line (`ok` false, a code, a bounded message); PORT arguments in
/// an `add` parse or are refused, never panic.
pub fn control(data: &[u8]) {
    let mut inp = Input::new(data);
    let line = if inp.bool() {
        inp.bytes(usize::MAX).to_vec()
    } else {
        structured(&mut inp).into_bytes()
    };
    check_line(&line);
}

fn check_line(line: &[u8]) {
    match Request::parse(line) {
        Ok(cmd) => {
            let again = cmd.to_line();
            assert!(!again.contains('\n'), "one line: {again}");
            assert_eq!(
                Request::parse(again.as_bytes()).as_ref(),
                Ok(&cmd),
                "round trip of {again}"
            );
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                for p in v["ports"].as_array().into_iter().flatten() {
                    if let Some(s) = p.as_str() {
                        let _ = PortSpec::parse(s);
                    }
                }
            }
        }
        Err(e) => {
            let out = Response::error(&e).to_line();
            assert!(!out.contains('\n'), "one line: {out}");
            assert!(out.len() <= MAX_ERROR_LINE, "{} bytes: {out}", out.len());
            let v: serde_json::Value = serde_json::from_str(&out).expect("a JSON response");
            assert_eq!(v["ok"], serde_json::Value::Bool(false), "{out}");
            assert!(v["code"].is_string(), "{out}");
        }
    }
}

/// A JSON object: a command name, then fields of any JSON type.
fn structured(inp: &mut Input<'_>) -> String {
    let mut obj = serde_json::Map::new();
    if inp.below(8) != 0 {
        let c = CMDS[inp.below(CMDS.len() as u32) as usize];
        obj.insert("cmd".into(), c.into());
    }
    for _ in 0..inp.below(4) {
        let f = FIELDS[inp.below(FIELDS.len() as u32) as usize];
        obj.insert(f.into(), value(inp, 2));
    }
    serde_json::Value::Object(obj).to_string()
}

fn value(inp: &mut Input<'_>, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    match inp.below(if depth == 0 { 5 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(inp.bool()),
        2 => Value::from(inp.u64() as i64),
        3 | 4 => {
            let n = inp.below(48) as usize;
            Value::String(String::from_utf8_lossy(inp.bytes(n)).into_owned())
        }
        _ => Value::Array((0..inp.below(4)).map(|_| value(inp, depth - 1)).collect()),
    }
}
