//! `cargo xtask bench-table [RESULTS]`: the README's figures table, regenerated from the bench's
//! results file (default `target/bench/results.json`) and written between the markers
//! [`START`] and [`END`] in README.md: one row per workload with its target and whether it was
//! met, headed by the run's date, git head, load average and DPDK version.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The line before the generated table in README.md.
pub const START: &str = "<!-- bench-table:start (cargo xtask bench-table writes this part) -->";
/// The line after it.
pub const END: &str = "<!-- bench-table:end -->";

/// `v[k1][k2]...` as a number.
fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// "53.60 (50.00-56.40)" from a {median, min, max} object.
fn runs(v: Option<&Value>, digits: usize) -> String {
    let Some(v) = v else { return "-".into() };
    match (num(v, &["median"]), num(v, &["min"]), num(v, &["max"])) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})"),
        (Some(m), _, _) => format!("{m:.digits$}"),
        _ => "-".into(),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.filter(|r| r.is_finite())
        .map_or("-".into(), |r| format!("{r:.2}x"))
}

fn met(m: Option<bool>) -> String {
    match m {
        Some(true) => "yes".into(),
        Some(false) => "**no**".into(),
        None => "-".into(),
    }
}

/// The entry's error, if it failed.
fn failure(e: &Value) -> Option<String> {
    if e.get("failed").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let err = e.get("error").and_then(Value::as_str).unwrap_or("");
    Some(format!(
        "FAILED: {}",
        err.lines().next().unwrap_or("").replace('|', "\\|")
    ))
}

/// The table's rows: workload, ptnet, DPDK (or the reference), ratio, target, met.
fn rows(r: &Value) -> Vec<[String; 6]> {
    let mut out = Vec::new();
    let failed = |name: &str, e: &Value, out: &mut Vec<[String; 6]>| {
        let f = failure(e)?;
        out.push([
            name.into(),
            f,
            "-".into(),
            "-".into(),
            "-".into(),
            "failed".into(),
        ]);
        Some(())
    };
    for (key, name) in [
        ("p1", "P1 tx -> daemon -> null sink (Mpps)"),
        ("p2", "P2 tx -> pipe (zero copy) -> rx (Mpps)"),
        ("p3", "P3 tx -> VALE (one copy) -> rx (Mpps)"),
    ] {
        let Some(e) = r.get(key) else { continue };
        if failed(name, e, &mut out).is_some() {
            continue;
        }
        let best = text(e, &["dpdk_best_shape"]).unwrap_or("");
        let dpdk = if best.is_empty() {
            "-".to_string()
        } else {
            format!("{} {best}", runs(e.pointer(&format!("/dpdk/{best}")), 2))
        };
        out.push([
            name.into(),
            runs(e.get("ptnet"), 2),
            dpdk,
            ratio(num(e, &["ratio"])),
            num(e, &["target_ratio"]).map_or("-".into(), |t| format!(">= {t}x DPDK")),
            met(e
                .get("met")
                .and_then(Value::as_bool)
                .filter(|_| !best.is_empty())),
        ]);
    }
    for (key, name, reference) in [
        (
            "p6",
            "P6 virtio-user txonly -> daemon (virtio-net port) -> null (Mpps)",
            "DPDK vhost rxonly",
        ),
        (
            "p7",
            "P7 virtio-user txonly -> VALE -> virtio-user rxonly (Mpps)",
            "DPDK vhost io",
        ),
    ] {
        let Some(e) = r.get(key) else { continue };
        if failed(name, e, &mut out).is_some() {
            continue;
        }
        out.push([
            name.into(),
            runs(e.get("ptnet"), 2),
            format!("{} {reference}", runs(e.get("dpdk"), 2)),
            ratio(num(e, &["ratio"])),
            num(e, &["target"]).map_or("-".into(), |t| format!(">= {t}x DPDK")),
            met(e.get("met").and_then(Value::as_bool)),
        ]);
    }
    if let Some(e) = r.get("p2_over_p3") {
        out.push([
            "P2 / P3, ptnet (zero copy over one copy)".into(),
            format!(
                "{:.2} / {:.2}",
                num(e, &["p2_ptnet_mpps"]).unwrap_or(f64::NAN),
                num(e, &["p3_ptnet_mpps"]).unwrap_or(f64::NAN)
            ),
            "-".into(),
            ratio(num(e, &["ratio"])),
            num(e, &["target_ratio"]).map_or("-".into(), |t| format!(">= {t}x")),
            met(e.get("met").and_then(Value::as_bool)),
        ]);
    }
    if let Some(e) = r.get("p2_bounds") {
        out.push([
            "P2 bound: netmap slots cpu 0 -> cpu 1, two spinning threads alone (Mpps)".into(),
            runs(e.get("slot_handover_mpps"), 1),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        let sw = |k: &str| num(e, &["context_switch", k]).unwrap_or(f64::NAN);
        out.push([
            "P2 bound: one context switch on cpu 0 (us)".into(),
            format!(
                "{:.2} between processes, {:.2} between threads",
                sw("between_processes_us"),
                sw("between_threads_us")
            ),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    let slots = r.pointer("/scaling/slots/points").and_then(Value::as_array);
    for x in slots.into_iter().flatten() {
        out.push([
            format!(
                "P2 with {} slots per ring (Mpps)",
                num(x, &["slots"]).unwrap_or(f64::NAN)
            ),
            runs(x.get("ptnet"), 2),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    if let Some(e) = r.get("p4") {
        let name = "P4 daemon CPU, 64 idle VALE ports";
        if failed(name, e, &mut out).is_none() {
            out.push([
                name.into(),
                format!(
                    "{:.3} % of a core",
                    num(e, &["idle_cpu_pct_attached"]).unwrap_or(f64::NAN)
                ),
                "-".into(),
                "-".into(),
                "< 1 %".into(),
                met(e.get("met").and_then(Value::as_bool)),
            ]);
        }
    }
    if let Some(e) = r.get("p5") {
        let name = "P5 ping-pong RTT over a pipe (us)";
        if failed(name, e, &mut out).is_none() {
            let g = |k: &str, q: &str| num(r, &[k, q]).unwrap_or(f64::NAN);
            out.push([
                name.into(),
                format!(
                    "p50 {:.1}, p99 {:.1}",
                    g("p5_rtt_us", "p50"),
                    g("p5_rtt_us", "p99")
                ),
                format!(
                    "eventfd floor p50 {:.1}, p99 {:.1}",
                    g("p5_floor_us", "p50"),
                    g("p5_floor_us", "p99")
                ),
                format!("{} of the floor", ratio(num(e, &["p50_over_floor_p50"]))),
                num(e, &["target_p50_over_floor_p50"])
                    .map_or("-".into(), |t| format!("p50 <= {t}x floor p50")),
                met(e.get("met").and_then(Value::as_bool)),
            ]);
        }
    }
    let p8_keys: Vec<&String> = r
        .as_object()
        .map(|o| o.keys().filter(|k| k.starts_with("p8")).collect())
        .unwrap_or_default();
    for k in p8_keys {
        let e = &r[k.as_str()];
        if failed(&format!("P8 ({k})"), e, &mut out).is_some() {
            continue;
        }
        for path in ["p1", "p2", "p3"] {
            let Some(x) = e.get(path) else { continue };
            let side = |s: &str, key: &str| {
                let v = x.get(s);
                if let Some(f) = v.and_then(failure) {
                    return f;
                }
                match num(x, &[key]) {
                    Some(c) => format!(
                        "{c:.3} (rx {:.2} Mpps)",
                        v.and_then(|v| num(v, &["received_mpps", "median"]))
                            .unwrap_or(f64::NAN)
                    ),
                    None => "-".into(),
                }
            };
            let rate = num(x, &["rate_mpps"]).unwrap_or(f64::NAN);
            out.push([
                format!("P8 {} at {rate} Mpps: CPU-s per Mpkt", path.to_uppercase()),
                side("ptnet", "ptnet_cpu_s_per_mpkt"),
                side("dpdk", "dpdk_cpu_s_per_mpkt"),
                ratio(num(x, &["ratio"])),
                num(x, &["target_ratio"]).map_or("-".into(), |t| format!("<= {t}x DPDK")),
                match x.get("both_carried_the_load").and_then(Value::as_bool) {
                    Some(false) if x.get("target_ratio").is_some() => {
                        "n/a (a side received < 95 % of the offered load)".into()
                    }
                    _ => met(x.get("met").and_then(Value::as_bool)),
                },
            ]);
        }
    }
    if let Some(nic) = r.get("nic").and_then(Value::as_object) {
        for (kind, e) in nic {
            let name = format!("tx into a `{kind}:` port (Mpps)");
            if failed(&name, e, &mut out).is_none() {
                out.push([
                    name,
                    runs(e.get("ptnet"), 3),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
    }
    out
}

/// The generated part of README.md (markers excluded).
pub fn render(r: &Value) -> String {
    let m = |k: &str| text(r, &["meta", k]).unwrap_or("?").to_string();
    let quick = r
        .pointer("/meta/quick")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut s = format!(
        "`cargo xtask bench` run of {} to {} at git `{}` ({}: {} run(s) per side of {} s after \
         {} s warm-up, alternating; DPDK {}); /proc/loadavg at start `{}`, at end `{}`.\n\n",
        m("start_utc"),
        m("end_utc"),
        m("git_head"),
        if quick { "QUICK run" } else { "full run" },
        num(r, &["meta", "reps_per_side"]).unwrap_or(f64::NAN),
        num(r, &["meta", "measure_s"]).unwrap_or(f64::NAN),
        num(r, &["meta", "warmup_s"]).unwrap_or(f64::NAN),
        m("dpdk_version"),
        m("loadavg_start"),
        m("loadavg_end"),
    );
    s.push_str(
        "| workload | ptnet median (min-max) | DPDK or reference | ratio | target | met |\n",
    );
    s.push_str("|---|---|---|---|---|---|\n");
    for row in rows(r) {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    if let Some(f) = r.get("failures").and_then(Value::as_object) {
        if !f.is_empty() {
            let names: Vec<&str> = f.keys().map(String::as_str).collect();
            s.push_str(&format!(
                "\nFailed in this run: {} (errors in results.json).\n",
                names.join(", ")
            ));
        }
    }
    s
}

/// Replaces what lies between the markers in `readme` with `table`.
pub fn splice(readme: &str, table: &str) -> Result<String, String> {
    let a = readme
        .find(START)
        .ok_or_else(|| format!("README.md has no line '{START}'"))?;
    let b = readme[a..]
        .find(END)
        .map(|i| a + i)
        .ok_or_else(|| format!("README.md has no line '{END}' after '{START}'"))?;
    Ok(format!("{}{START}\n{table}{}", &readme[..a], &readme[b..]))
}

/// The subcommand.
pub fn bench_table(root: &Path, args: &[String]) -> Result<(), String> {
    let results = match args {
        [] => root.join("target/bench/results.json"),
        [p] => PathBuf::from(p),
        _ => return Err("usage: cargo xtask bench-table [RESULTS.json]".into()),
    };
    let text = std::fs::read_to_string(&results)
        .map_err(|e| format!("{}: {e} (run `cargo xtask bench` first)", results.display()))?;
    let r: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", results.display()))?;
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .map_err(|e| format!("{}: {e}", readme_path.display()))?;
    let table = render(&r);
    let new = splice(&readme, &table)?;
    std::fs::write(&readme_path, new).map_err(|e| format!("{}: {e}", readme_path.display()))?;
    print!("{table}");
    eprintln!(
        "xtask: wrote the table from {} into {}",
        results.display(),
        readme_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_results() {
        let r: Value = serde_json::from_str(
            r#"{"meta":{"start_utc":"T0","end_utc":"T1","git_head":"abc","quick":true,
                "reps_per_side":1,"measure_s":2,"warmup_s":1,"dpdk_version":"22.11",
                "loadavg_start":"0.5","loadavg_end":"0.7"},
              "p1":{"ptnet":{"median":50,"min":49,"max":51},"dpdk_best_shape":"sink",
                    "dpdk":{"sink":{"median":20,"min":19,"max":21}},"ratio":2.5,
                    "target_ratio":4,"met":false},
              "p2":{"failed":true,"error":"ptnet-backend exited\nmore"},
              "p5":{"p50_over_floor_p50":1.2,"target_p50_over_floor_p50":1.3,"met":true},
              "p6":{"ptnet":{"median":9,"min":8,"max":10},"dpdk":{"median":6,"min":5,"max":7},
                    "ratio":1.5,"target":1.5,"met":true},
              "p5_rtt_us":{"p50":30,"p99":60},"p5_floor_us":{"p50":25,"p99":50},
              "p2_bounds":{"slot_handover_mpps":{"median":101.5,"min":99,"max":110},
                           "context_switch":{"between_processes_us":2.6,"between_threads_us":2.5}},
              "scaling":{"slots":{"points":[{"slots":4096,"ptnet":{"median":55,"min":50,"max":60}}]}},
              "p8":{"p1":{"rate_mpps":1,"ptnet_cpu_s_per_mpkt":0.2,"dpdk_cpu_s_per_mpkt":1.0,
                          "ratio":0.2,"target_ratio":0.25,"met":true,
                          "ptnet":{"received_mpps":{"median":1.0}},
                          "dpdk":{"received_mpps":{"median":0.99}}}},
              "failures":{"p2":"ptnet-backend exited"}}"#,
        )
        .unwrap();
        let t = render(&r);
        assert!(t.contains("git `abc`") && t.contains("`0.5`"), "{t}");
        assert!(
            t.contains(
                "| 50.00 (49.00-51.00) | 20.00 (19.00-21.00) sink | 2.50x | >= 4x DPDK | **no** |"
            ),
            "{t}"
        );
        assert!(
            t.contains("FAILED: ptnet-backend exited | - | - | - | failed"),
            "{t}"
        );
        assert!(
            t.contains("p50 30.0, p99 60.0 | eventfd floor p50 25.0"),
            "{t}"
        );
        assert!(
            t.contains("0.200 (rx 1.00 Mpps) | 1.000 (rx 0.99 Mpps) | 0.20x | <= 0.25x DPDK | yes"),
            "{t}"
        );
        assert!(
            t.contains("| 9.00 (8.00-10.00) | 6.00 (5.00-7.00) DPDK vhost rxonly | 1.50x | >= 1.5x DPDK | yes |"),
            "{t}"
        );
        assert!(t.contains("alone (Mpps) | 101.5 (99.0-110.0) |"), "{t}");
        assert!(
            t.contains("| 2.60 between processes, 2.50 between threads |"),
            "{t}"
        );
        assert!(
            t.contains("| P2 with 4096 slots per ring (Mpps) | 55.00 (50.00-60.00) |"),
            "{t}"
        );
        assert!(t.contains("Failed in this run: p2"), "{t}");
    }

    #[test]
    fn splices_between_the_markers() {
        let readme = format!("a\n{START}\nold\n{END}\nb\n");
        assert_eq!(
            splice(&readme, "new\n").unwrap(),
            format!("a\n{START}\nnew\n{END}\nb\n")
        );
        assert!(splice("no markers", "x").is_err());
    }
}
