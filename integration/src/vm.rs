//! Booting test guests in (patched) QEMU.
//!
//! A guest is Debian's kernel plus the initramfs of `integration/guest/build-image.sh`; its init
//! runs one shell command given on the kernel command line (`ptnet.cmd=`, base64), prints
//! `PTNET-RESULT rc=<status>` on the serial console and powers off. [`Vm::start`] builds the
//! QEMU command line, [`Vm::wait`] collects the serial output, the result and the JSON lines
//! `ptnet-pkt-gen --json` printed. QEMU is killed on drop and at every deadline.

use crate::host::{run_build_script, wait_deadline, workspace_root, TempDir};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The guest kernel and initramfs.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// `vmlinuz`.
    pub kernel: PathBuf,
    /// `initramfs.cpio.gz`.
    pub initrd: PathBuf,
}

/// Builds (once per process, cached on disk by the script) the guest image.
/// `PTNET_GUEST_DIR` points at an existing image directory instead.
pub fn guest_image() -> Result<GuestImage, String> {
    static IMG: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = match std::env::var_os("PTNET_GUEST_DIR") {
            Some(d) => PathBuf::from(d),
            None => run_build_script(
                &workspace_root().join("integration/guest/build-image.sh"),
                Duration::from_secs(1800),
            )?,
        };
        let img = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initramfs.cpio.gz"),
        };
        if !img.kernel.exists() || !img.initrd.exists() {
            return Err(format!(
                "{} has no vmlinuz/initramfs.cpio.gz",
                dir.display()
            ));
        }
        Ok(img)
    })
    .clone()
}

/// Builds (once per process, cached on disk by the script) the patched QEMU and returns
/// `qemu-system-x86_64`. `PTNET_QEMU` names a binary instead.
pub fn qemu_binary() -> Result<PathBuf, String> {
    static QEMU: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    QEMU.get_or_init(|| match std::env::var_os("PTNET_QEMU") {
        Some(q) => Ok(PathBuf::from(q)),
        None => run_build_script(
            &workspace_root().join("qemu-patches/build"),
            Duration::from_secs(3600),
        ),
    })
    .clone()
}

/// Debian's unpatched QEMU (`qemu-system-x86` from bookworm-backports): `PTNET_STOCK_QEMU`,
/// else `/usr/bin/qemu-system-x86_64`. Panics, saying how to install it, when it is missing.
pub fn stock_qemu() -> PathBuf {
    let q = std::env::var_os("PTNET_STOCK_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert!(
        q.is_file(),
        "{} missing: install Debian's QEMU with `cargo xtask stock-qemu` \
         (apt-get install -t bookworm-backports qemu-system-x86), or set PTNET_STOCK_QEMU",
        q.display()
    );
    q
}

/// Serialises VM tests within one test binary (the machine has 2 cores; TCG guests are slow).
pub fn vm_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The QEMU accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (always works).
    Tcg,
    /// KVM.
    Kvm,
}

impl Accel {
    /// From `PTNET_ACCEL`: `tcg`, `kvm`, or `auto` (the default): KVM where a probe guest boots
    /// with it, else TCG. The probe's answer is kept in the cache directory per host kernel,
    /// QEMU and guest kernel, so one machine probes once (some hosts open /dev/kvm but hang their
    /// guests, nested virtualisation without the needed support, say: there the probe costs its
    /// timeout once).
    pub fn from_env() -> Accel {
        static ACCEL: OnceLock<Accel> = OnceLock::new();
        *ACCEL.get_or_init(|| match std::env::var("PTNET_ACCEL").as_deref() {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            _ => {
                let a = auto_accel();
                eprintln!(
                    "vm: accelerator {} (PTNET_ACCEL=auto; set tcg or kvm to choose)",
                    a.arg()
                );
                a
            }
        })
    }

    fn arg(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// How long a KVM guest gets to boot and run `true` before KVM is taken as not working (TCG
/// boots the same guest in about 6 s on a 2-core machine; KVM in about 1 s).
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// KVM if it works here: the cached answer, or a probe whose answer is cached.
fn auto_accel() -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    let key = format!(
        "{} {} {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        qemu_binary()
            .map(|q| q.display().to_string())
            .unwrap_or_default(),
        // The guest kernel by size: image directories change with pkt-gen, the kernel rarely.
        guest_image()
            .ok()
            .and_then(|g| std::fs::metadata(&g.kernel).ok())
            .map_or(0, |m| m.len()),
    );
    let cache = crate::host::cache_dir().join("accel-probe");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Some(answer) = text.strip_prefix(&format!("{key} = ")) {
            match answer.trim() {
                "kvm" => return Accel::Kvm,
                "tcg" => return Accel::Tcg,
                _ => {}
            }
        }
    }
    let a = if probe_kvm() { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::create_dir_all(crate::host::cache_dir());
    let _ = std::fs::write(&cache, format!("{key} = {}\n", a.arg()));
    a
}

/// Boots a guest under KVM that runs `true`; true if it reports back in time.
pub fn probe_kvm() -> bool {
    if std::fs::File::open("/dev/kvm").is_err() {
        return false;
    }
    let cfg = VmConfig {
        accel: Some(Accel::Kvm),
        timeout: KVM_PROBE_TIMEOUT,
        ..VmConfig::new("kvm-probe", "true")
    };
    Vm::start(&cfg)
        .and_then(|vm| vm.wait())
        .is_ok_and(|r| r.rc == Some(0))
}

/// One ptnet NIC of a guest.
#[derive(Clone, Debug)]
pub struct Nic {
    /// The daemon's socket for this port.
    pub socket: PathBuf,
    /// MAC address (`52:54:00:...`); the device's default if `None`.
    pub mac: Option<String>,
    /// `reconnect-ms` of the chardev (0: none).
    pub reconnect_ms: u32,
}

impl Nic {
    /// A NIC on `socket`, default MAC, no reconnect.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            mac: None,
            reconnect_ms: 0,
        }
    }
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Name for logs and temporary files.
    pub name: String,
    /// Shell command the guest runs (busybox sh; `ptnet-pkt-gen` is in PATH).
    pub cmd: String,
    /// ptnet NICs, in PCI order (the first is `ptnet0`).
    pub nics: Vec<Nic>,
    /// Whole-run deadline (boot included); QEMU is killed after it.
    pub timeout: Duration,
    /// Guest RAM in MiB.
    pub mem_mb: u32,
    /// `q35` or `pc`.
    pub machine: String,
    /// Accelerator; `None`: [`Accel::from_env`].
    pub accel: Option<Accel>,
    /// Extra QEMU arguments.
    pub extra_args: Vec<String>,
    /// Extra kernel command-line words.
    pub extra_append: String,
    /// QEMU binary; `None`: the stock `qemu-system-x86_64` when there are no NICs, else the
    /// patched one ([`qemu_binary`]).
    pub qemu: Option<PathBuf>,
}

impl VmConfig {
    /// A guest named `name` that runs `cmd`, with no NICs, 256 MiB, q35, a 180 s deadline.
    pub fn new(name: &str, cmd: &str) -> Self {
        Self {
            name: name.to_string(),
            cmd: cmd.to_string(),
            nics: Vec::new(),
            timeout: Duration::from_secs(180),
            mem_mb: 256,
            machine: "q35".into(),
            accel: None,
            extra_args: Vec::new(),
            extra_append: String::new(),
            qemu: None,
        }
    }

    /// Adds a NIC.
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// The guest kernel's command line: the serial console, and the command for the image's init
    /// (base64 in `ptnet.cmd=`).
    pub fn kernel_cmdline(&self) -> String {
        format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 ptnet.cmd={} {}",
            base64(self.cmd.as_bytes()),
            self.extra_append
        )
        .trim_end()
        .to_string()
    }

    /// The QEMU arguments (without the binary) for this guest.
    pub fn qemu_args(&self, img: &GuestImage, serial: &Path) -> Vec<String> {
        let accel = self.accel.unwrap_or_else(Accel::from_env);
        let mut a: Vec<String> = vec![
            "-accel".into(),
            accel.arg().into(),
            "-smp".into(),
            "1".into(),
            "-m".into(),
            format!("{}M", self.mem_mb),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={}M,share=on", self.mem_mb),
            "-machine".into(),
            format!("{},memory-backend=mem", self.machine),
            "-L".into(),
            "/usr/share/qemu".into(),
            "-L".into(),
            "/usr/share/seabios".into(),
            "-nic".into(),
            "none".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", serial.display()),
            "-kernel".into(),
            img.kernel.display().to_string(),
            "-initrd".into(),
            img.initrd.display().to_string(),
            "-append".into(),
            self.kernel_cmdline(),
        ];
        for (i, nic) in self.nics.iter().enumerate() {
            let mut chardev = format!("socket,id=p{i},path={}", nic.socket.display());
            if nic.reconnect_ms > 0 {
                let _ = write!(chardev, ",reconnect-ms={}", nic.reconnect_ms);
            }
            let mut dev = format!("ptnet-pci,chardev=p{i}");
            if let Some(mac) = &nic.mac {
                let _ = write!(dev, ",mac={mac}");
            }
            a.extend(["-chardev".into(), chardev, "-device".into(), dev]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A running guest; QEMU is killed on drop.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Option<Child>,
    dir: TempDir,
    deadline: Instant,
    started: Instant,
    cmdline: String,
}

/// What a guest run produced.
#[derive(Debug)]
pub struct VmResult {
    /// QEMU's exit status; `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The guest command's exit status (`PTNET-RESULT rc=`), if the guest got that far.
    pub rc: Option<i32>,
    /// Everything the guest printed on its serial console.
    pub serial: String,
    /// QEMU's own stdout and stderr.
    pub qemu_log: String,
    /// Lines of the serial output that are JSON objects (`ptnet-pkt-gen --json`).
    pub json: Vec<String>,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// The QEMU command line, for messages.
    pub cmdline: String,
}

impl VmResult {
    /// A multi-line description for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "qemu: {}\nstatus {:?}, rc {:?}, {:.1} s\n--- qemu log ---\n{}\n--- serial ---\n{}",
            self.cmdline,
            self.status,
            self.rc,
            self.elapsed.as_secs_f64(),
            self.qemu_log.trim_end(),
            guest_part(&self.serial, 80)
        )
    }
}

/// What a failed assertion of a test with several guests shows: each guest's report under
/// its name, then the daemon's log.
pub fn reports(guests: &[(&str, &VmResult)], daemon_log: &str) -> String {
    let mut s = String::new();
    for (who, r) in guests {
        s.push_str(&format!("--- {who} ---\n{}\n", r.report()));
    }
    s + "--- backend ---\n" + daemon_log
}

/// The serial output from the init's first line on (firmware and kernel boot noise dropped),
/// at most `n` lines: the first n/4 and the last 3n/4.
fn guest_part(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("PTNET-BOOTED"))
        .unwrap_or(0);
    let lines = &lines[start..];
    if lines.len() <= n {
        return lines.join("\n");
    }
    let head = n / 4;
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..head].join("\n"),
        lines.len() - n,
        lines[lines.len() - (n - head)..].join("\n")
    )
}

impl Vm {
    /// Starts QEMU for `cfg` (building QEMU and the image first if needed).
    pub fn start(cfg: &VmConfig) -> Result<Vm, String> {
        let img = guest_image()?;
        let qemu = match &cfg.qemu {
            Some(q) => q.clone(),
            None if cfg.nics.is_empty() => {
                which("qemu-system-x86_64").map_or_else(qemu_binary, Ok)?
            }
            None => qemu_binary()?,
        };
        let dir = TempDir::new(&format!("vm-{}", cfg.name)).map_err(|e| e.to_string())?;
        let serial = dir.path().join("serial.log");
        let log = dir.path().join("qemu.log");
        let args = cfg.qemu_args(&img, &serial);
        let cmdline = format!("{} {}", qemu.display(), args.join(" "));
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(&qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
        let now = Instant::now();
        Ok(Vm {
            name: cfg.name.clone(),
            child: Some(child),
            dir,
            deadline: now + cfg.timeout,
            started: now,
            cmdline,
        })
    }

    /// The guest's serial output so far.
    pub fn serial(&self) -> String {
        let b = std::fs::read(self.dir.path().join("serial.log")).unwrap_or_default();
        String::from_utf8_lossy(&b).replace('\r', "")
    }

    /// QEMU's log so far.
    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default()
    }

    /// Waits until the serial output contains `needle` (true), QEMU exits or `timeout` passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if self.serial().contains(needle) {
                return true;
            }
            let exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
            if exited || Instant::now() >= until {
                return self.serial().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit (killing it at the deadline) and collects the results.
    pub fn wait(mut self) -> Result<VmResult, String> {
        let mut child = self.child.take().ok_or("already waited")?;
        let status = wait_deadline(&mut child, self.deadline);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let serial = self.serial();
        let rc = serial.lines().rev().find_map(|l| {
            l.trim()
                .strip_prefix("PTNET-RESULT rc=")
                .and_then(|v| v.trim().parse().ok())
        });
        let json = serial
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{') && l.ends_with('}'))
            .map(String::from)
            .collect();
        let r = VmResult {
            status,
            rc,
            serial,
            qemu_log: self.qemu_log(),
            json,
            elapsed: self.started.elapsed(),
            cmdline: self.cmdline.clone(),
        };
        if std::env::var_os("PTNET_VM_LOG").is_some() {
            eprintln!("=== vm {} ===\n{}", self.name, r.report());
        }
        Ok(r)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Standard base64 (with padding), for the kernel command line.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(T[(n >> shift) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn command_line_has_the_ptnet_devices() {
        let img = GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let mut n = Nic::new("/tmp/d/vale0:1.sock");
        n.reconnect_ms = 1000;
        n.mac = Some("52:54:00:00:00:01".into());
        let cfg = VmConfig {
            accel: Some(Accel::Tcg),
            ..VmConfig::new("t", "true")
        }
        .nic(n);
        let a = cfg.qemu_args(&img, Path::new("/s")).join(" ");
        assert!(a.contains(
            "-chardev socket,id=p0,path=/tmp/d/vale0:1.sock,reconnect-ms=1000 \
             -device ptnet-pci,chardev=p0,mac=52:54:00:00:00:01"
        ));
        assert!(a.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
        assert!(a.contains("-machine q35,memory-backend=mem"));
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("ptnet.cmd=dHJ1ZQ=="));
    }
}
