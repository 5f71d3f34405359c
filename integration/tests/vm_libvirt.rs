//! The libvirt domain files of `host-backend/contrib/libvirt/` under Debian's libvirt: a virtio
//! guest (`<interface type='vhostuser'>`, Debian's unpatched QEMU) and a ptnet guest (the patched
//! QEMU through libvirt's QEMU command-line namespace) on one VALE switch of one daemon, both
//! started with `virsh define` + `virsh start` as TCG (or KVM where it works) domains booting the
//! test guest.
//!
//! The ptnet guest reflects every frame it gets (`ptnet-pkt-gen -f pong`); the virtio guest pings
//! an address whose MAC is the ptnet guest's, so each echo request comes back to it through the
//! switch and both guests' counters say so.
//!
//! libvirt runs as packaged (`qemu:///system`, QEMU as the unprivileged `libvirt-qemu` user, no
//! configuration changed), so the test sets things up as a user must: the daemon's sockets are
//! given libvirt's QEMU group with `--socket-group`, and what QEMU opens (the kernel, the initrd,
//! the patched QEMU binary, the serial file) sits in a directory that user can read. The test
//! starts `virtlogd` and `libvirtd` if none answers (a fresh machine does not run them: no
//! systemd here). `cargo xtask deps` installs libvirt from bookworm-backports (11.3, the release
//! matching QEMU 10.0). The test boots QEMU, so it is `#[ignore]`d: `cargo xtask test` runs it.

use ptnet_integration::host::{Backend, TempDir};
use ptnet_integration::json_num;
use ptnet_integration::vm::{guest_image, qemu_binary, vm_lock, Accel, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";
const MAC_V: &str = "52:54:00:00:01:0a";
const MAC_P: &str = "52:54:00:00:01:0b";

fn contrib(name: &str) -> PathBuf {
    ptnet_integration::host::workspace_root()
        .join("host-backend/contrib/libvirt")
        .join(name)
}

fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .map_err(|e| format!("virsh: {e} (is libvirt installed? `cargo xtask deps`)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("virsh {}: {text}", args.join(" ")))
    }
}

/// Starts `virtlogd` and `libvirtd` unless a libvirt daemon already answers.
fn ensure_libvirtd() {
    if virsh(&["version"]).is_ok() {
        return;
    }
    let _ = std::fs::create_dir_all("/var/log/libvirt");
    for d in ["virtlogd", "libvirtd"] {
        let st = Command::new(d).arg("-d").status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "{d} -d failed: install libvirt with `cargo xtask deps`"
        );
    }
    let until = Instant::now() + Duration::from_secs(20);
    while let Err(e) = virsh(&["version"]) {
        assert!(Instant::now() < until, "libvirtd never answered: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The group libvirt runs QEMU as: `group =` of its qemu.conf, else Debian's default.
fn qemu_group() -> String {
    std::fs::read_to_string("/etc/libvirt/qemu.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("group"))
        .filter_map(|r| r.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next_back()
        .unwrap_or_else(|| "libvirt-qemu".into())
}

/// A directory libvirt's QEMU (another user) can read and write: mode 0777 under a 0755 one.
fn shared_dir(parent: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = parent.join("guest");
    std::fs::create_dir_all(&d).unwrap();
    for (p, m) in [(parent, 0o755), (d.as_path(), 0o777)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    d
}

/// Copies `from` into `dir` (readable by all) and returns the copy's path.
fn readable_copy(from: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// A domain defined from one of the contrib files; destroyed and undefined on drop.
struct Domain {
    name: String,
    serial: PathBuf,
}

impl Domain {
    /// Fills in `template`'s words and defines and starts the domain.
    fn start(
        template: &str,
        name: &str,
        cmd: &str,
        emulator: &Path,
        socket: &Path,
        mac: &str,
        dir: &Path,
    ) -> Domain {
        let img = guest_image().unwrap_or_else(|e| panic!("{e}"));
        let (kernel, initrd) = (
            readable_copy(&img.kernel, dir),
            readable_copy(&img.initrd, dir),
        );
        let serial = dir.join(format!("{name}.serial"));
        let kind = match Accel::from_env() {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        };
        let xml = std::fs::read_to_string(contrib(template))
            .unwrap()
            .replace("@DOMAIN_TYPE@", kind)
            .replace("@NAME@", name)
            .replace("@KERNEL@", &kernel.display().to_string())
            .replace("@INITRD@", &initrd.display().to_string())
            .replace("@CMDLINE@", &VmConfig::new(name, cmd).kernel_cmdline())
            .replace("@EMULATOR@", &emulator.display().to_string())
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@MAC@", mac)
            .replace("@SERIAL@", &serial.display().to_string());
        let unfilled = xml
            .split('@')
            .skip(1)
            .step_by(2)
            .find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        assert!(
            unfilled.is_none(),
            "@{unfilled:?}@ left unfilled in {template}"
        );
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        // A domain of that name left over from an interrupted run.
        let _ = virsh(&["destroy", name]);
        let _ = virsh(&["undefine", name]);
        virsh(&["define", &file.display().to_string()]).unwrap_or_else(|e| panic!("{e}"));
        let d = Domain {
            name: name.to_string(),
            serial,
        };
        virsh(&["start", name]).unwrap_or_else(|e| panic!("{e}\n{}", d.qemu_log()));
        d
    }

    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).replace('\r', "")
    }

    /// libvirt's log of the domain's QEMU (its command line and what QEMU printed).
    fn qemu_log(&self) -> String {
        std::fs::read_to_string(format!("/var/log/libvirt/qemu/{}.log", self.name))
            .unwrap_or_default()
    }

    fn running(&self) -> bool {
        virsh(&["domstate", &self.name]).is_ok_and(|s| s.trim() == "running")
    }

    /// Waits until the serial output has `needle` or the domain stopped or `timeout` passed.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.serial().contains(needle) {
                return true;
            }
            if !self.running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.serial().contains(needle)
    }

    /// Waits for the guest to power off (its init does once its command ended), then returns the
    /// command's exit status from the serial output.
    fn wait_off(&self, timeout: Duration) -> Option<i32> {
        let until = Instant::now() + timeout;
        while self.running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.serial().lines().rev().find_map(|l| {
            l.trim()
                .strip_prefix("PTNET-RESULT rc=")
                .and_then(|v| v.trim().parse().ok())
        })
    }

    fn report(&self) -> String {
        format!(
            "--- {} qemu log ---\n{}\n--- {} serial ---\n{}",
            self.name,
            self.qemu_log().trim_end(),
            self.name,
            self.serial()
        )
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}

fn stat(serial: &str, key: &str) -> Option<u64> {
    serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
#[ignore = "boots QEMU under libvirt: run by `cargo xtask test`, or `-- --include-ignored`"]
fn libvirt_virtio_and_ptnet_domains_on_one_switch() {
    let _g = vm_lock();
    let stock = std::env::var_os("PTNET_STOCK_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert!(
        stock.is_file(),
        "{}: install it with `cargo xtask stock-qemu`",
        stock.display()
    );
    ensure_libvirtd();
    let dir = TempDir::new("libvirt").unwrap();
    let guest_dir = shared_dir(dir.path());
    // The patched QEMU's own tree is in root's cache; its firmware comes from Debian's packages
    // (`-L` in ptnet-guest.xml), as for the stock one.
    let patched = readable_copy(&qemu_binary().unwrap_or_else(|e| panic!("{e}")), &guest_dir);
    let ports = ["vale2:v@conf:frontend=virtio-net", "vale2:p"];
    let group = qemu_group();
    let be = Backend::start(
        dir.path(),
        &ports,
        &["--netmap", "user", "--socket-group", &group],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The ptnet guest reflects what it gets until 45 s pass without a frame: long enough for the
    // virtio domain to boot under TCG after it.
    let pong = format!("ptnet-pkt-gen -T 0 -i ptnet0 -f pong -S {MAC_P} --timeout 45 --json");
    let p = Domain::start(
        "ptnet-guest.xml",
        "ptnet-libvirt-pong",
        &pong,
        &patched,
        &be.socket(ports[1]),
        MAC_P,
        &guest_dir,
    );
    assert!(
        p.wait_for("ptnet-pkt-gen: pci:", Duration::from_secs(180)),
        "the ptnet domain never opened its port\n{}\n--- backend ---\n{}",
        p.report(),
        be.log_text()
    );
    let v_cmd = format!(
        "ip link set eth0 up && ip addr add 10.0.2.1/24 dev eth0 && \
         arp -s 10.0.2.2 {MAC_P} && ping -c 30 -i 0.2 -W 2 10.0.2.2; \
         echo RX=$(cat /sys/class/net/eth0/statistics/rx_packets); \
         echo TX=$(cat /sys/class/net/eth0/statistics/tx_packets); \
         echo MAC=$(cat /sys/class/net/eth0/address)"
    );
    let v = Domain::start(
        "virtio-guest.xml",
        "ptnet-libvirt-virtio",
        &v_cmd,
        &stock,
        &be.socket(ports[0]),
        MAC_V,
        &guest_dir,
    );
    let rc_v = v.wait_off(Duration::from_secs(300));
    let rc_p = p.wait_off(Duration::from_secs(120));
    let ctx = format!(
        "{}\n{}\n--- backend ---\n{}",
        v.report(),
        p.report(),
        be.log_text()
    );
    assert_eq!(rc_v, Some(0), "{ctx}");
    assert_eq!(rc_p, Some(0), "{ctx}");
    let vs = v.serial();
    // The domain's MAC from the XML reached the guest through the device's config space.
    assert!(vs.contains(&format!("MAC={MAC_V}")), "{ctx}");
    let tx = stat(&vs, "TX").unwrap_or_else(|| panic!("no TX= line\n{ctx}"));
    let rx = stat(&vs, "RX").unwrap_or_else(|| panic!("no RX= line\n{ctx}"));
    assert!(tx >= 30, "{ctx}");
    assert!(
        rx >= 30,
        "only {rx} of the 30 echo requests came back\n{ctx}"
    );
    let line = p
        .serial()
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| l.starts_with('{') && l.contains("\"mode\""))
        .map(String::from)
        .unwrap_or_else(|| panic!("no pong summary\n{ctx}"));
    let reflected = json_num(&line, "packets").unwrap_or(0.0) as u64;
    assert!(reflected >= 30, "{line}\n{ctx}");
}
