//! The man pages (`ptnet_backend::man`, `cargo xtask man`): one per command and `ptnet-ctl`
//! subcommand, each naming every option and argument of its clap definition, and readable by
//! `man` where it is installed.

use std::path::PathBuf;

/// How roff writes `s` (a `-` is `\-`).
fn roff(s: &str) -> String {
    s.replace('-', "\\-").replace('\'', "\\*(Aq")
}

#[test]
fn every_page_names_every_option() {
    let dir = std::env::temp_dir().join(format!("ptnet-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pages = ptnet_backend::man::write_all(&dir).expect("man pages");
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // A page per command and per subcommand, whatever subcommands ptnet-ctl grows.
    let mut want = vec![];
    for mut cmd in ptnet_backend::man::commands() {
        cmd.build();
        want.push(format!("{}.1", cmd.get_name()));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            want.push(format!("{}-{}.1", cmd.get_name(), sub.get_name()));
        }
    }
    want.sort();
    assert_eq!(names, want);
    for p in ["ptnet-backend.1", "ptnet-ctl.1", "ptnet-ctl-stats.1"] {
        assert!(names.iter().any(|n| n == p), "no {p}");
    }
    let mut checked = 0;
    for mut cmd in ptnet_backend::man::commands() {
        cmd.build();
        let top = cmd.get_name().to_string();
        let mut all: Vec<(String, clap::Command)> = vec![(top.clone(), cmd.clone())];
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            all.push((format!("{top}-{}", sub.get_name()), sub.clone()));
        }
        for (name, c) in all {
            let page: PathBuf = dir.join(format!("{name}.1"));
            let text = std::fs::read_to_string(&page).expect(&name);
            assert!(text.contains(&format!(".TH {name} 1")), "{name}: no title");
            for arg in c.get_arguments().filter(|a| !a.is_hide_set()) {
                let want = match (arg.get_long(), arg.get_value_names()) {
                    (Some(long), _) => format!("\\-\\-{}", roff(long)),
                    (None, Some(v)) => roff(v[0].as_str()),
                    (None, None) => roff(arg.get_id().as_str()),
                };
                assert!(text.contains(&want), "{name}.1 does not mention {want}");
                checked += 1;
            }
            if let Some(about) = c.get_about() {
                let first = about.to_string();
                let first = first
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(text.contains(&roff(&first)), "{name}.1: no description");
            }
        }
    }
    // The daemon's options alone are more than fifteen; a page that lost them fails above.
    assert!(checked > 30, "only {checked} options checked");
    let daemon = std::fs::read_to_string(dir.join("ptnet-backend.1")).unwrap();
    for want in ["\\-\\-metrics\\-listen", "\\-\\-fd", "PORT syntax"] {
        assert!(daemon.contains(want), "{want}");
    }
    // `man` renders it, where man-db is installed.
    if let Ok(out) = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("ptnet-ctl-stats.1"))
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("--watch"), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
