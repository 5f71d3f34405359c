//! Finding ptnet devices in sysfs: a device counts only when its ids, class code and BAR types
//! all match (the ids alone collide with upstream QEMU's `qemu-xhci` and `pcie-root-port`).

use crate::{Error, PciSelector};
use ptnet_protocol::regs;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where sysfs lists PCI devices.
pub(super) const SYSFS_PCI: &str = "/sys/bus/pci/devices";
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(p)?.trim().to_string())
}

fn read_hex(p: &Path) -> Option<u64> {
    let s = read_trim(p).ok()?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// (start, end, flags) of each resource line in a device's `resource` file.
pub(super) fn resources(dev: &Path) -> Vec<(u64, u64, u64)> {
    let Ok(text) = fs::read_to_string(dev.join("resource")) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            let mut it = l
                .split_whitespace()
                .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap_or(0));
            (
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
            )
        })
        .collect()
}

fn bar_is(dev: &Path, bar: usize, kind: u64) -> bool {
    resources(dev)
        .get(bar)
        .is_some_and(|&(start, end, flags)| end > start && flags & kind != 0)
}

fn ids(dev: &Path) -> Option<(u64, u64, u64)> {
    Some((
        read_hex(&dev.join("vendor"))?,
        read_hex(&dev.join("device"))?,
        read_hex(&dev.join("class"))?,
    ))
}

/// Is `dev` a ptnet NIC (ids, class and BAR0 type all match)?
fn is_ptnet_nic(dev: &Path) -> bool {
    ids(dev).is_some_and(|(v, d, c)| {
        v == u64::from(regs::PCI_VENDOR_ID)
            && d == u64::from(regs::PTNET_PCI_DEVICE_ID)
            && c >> 8 == u64::from(regs::PTNET_PCI_CLASS)
    }) && bar_is(dev, 0, IORESOURCE_IO)
}

/// Is `dev` a ptnet memdev (ids, not a bridge, BAR0 I/O and BAR1 memory)?
pub(super) fn is_memdev(dev: &Path) -> bool {
    ids(dev).is_some_and(|(v, d, c)| {
        v == u64::from(regs::PCI_VENDOR_ID)
            && d == u64::from(regs::MEMDEV_PCI_DEVICE_ID)
            && c >> 16 != 0x06 // pcie-root-port is a bridge (class 0x0604)
    }) && bar_is(dev, 0, IORESOURCE_IO)
        && bar_is(dev, regs::MEMDEV_MEM_BAR as usize, IORESOURCE_MEM)
}

/// All PCI devices under `root` (sysfs's `/sys/bus/pci/devices`) in sysfs order (sorted by
/// address).
pub(super) fn pci_devices(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut v: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| Error::io(format!("reading {}", root.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Makes sure the kernel has enabled the device (I/O and memory decoding).
pub(super) fn enable(dev: &Path) {
    let p = dev.join("enable");
    if read_trim(&p).map(|s| s == "0").unwrap_or(false) {
        let _ = fs::write(&p, "1");
    }
}

/// The ptnet NIC of `devices` (from [`pci_devices`]) that `sel` designates: the N-th NIC in
/// sysfs order, or the NIC at an address. Devices that are not ptnet NICs never count.
pub(super) fn find_nic(devices: &[PathBuf], sel: &PciSelector) -> Result<PathBuf, Error> {
    let mut nics = devices.iter().filter(|d| is_ptnet_nic(d));
    match sel {
        PciSelector::Index(n) => nics.nth(*n),
        PciSelector::Address(a) => {
            nics.find(|d| d.file_name().is_some_and(|f| f.to_string_lossy() == *a))
        }
    }
    .cloned()
    .ok_or_else(|| Error::NoDevice(sel.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/bus/pci/devices`, removed on drop.
    struct FakeSysfs(PathBuf);

    impl FakeSysfs {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("ptnet-sysfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            FakeSysfs(dir)
        }

        /// A device at `addr` with these ids and `resource` lines (start, end, flags).
        fn device(
            &self,
            addr: &str,
            vendor: u16,
            device: u16,
            class: u32,
            bars: &[(u64, u64, u64)],
        ) {
            let d = self.0.join(addr);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("vendor"), format!("0x{vendor:04x}\n")).unwrap();
            fs::write(d.join("device"), format!("0x{device:04x}\n")).unwrap();
            fs::write(d.join("class"), format!("0x{class:06x}\n")).unwrap();
            let res: String = bars
                .iter()
                .map(|(s, e, f)| format!("0x{s:016x} 0x{e:016x} 0x{f:016x}\n"))
                .collect();
            fs::write(d.join("resource"), res).unwrap();
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const IO_BAR: (u64, u64, u64) = (0xc000, 0xc01f, IORESOURCE_IO);
    const MEM_BAR: (u64, u64, u64) = (0xfe00_0000, 0xfe0f_ffff, IORESOURCE_MEM);

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn nics_are_found_by_index_and_address_and_lookalikes_are_not() {
        let sys = FakeSysfs::new("nics");
        let (v, nic, mem) = (
            regs::PCI_VENDOR_ID,
            regs::PTNET_PCI_DEVICE_ID,
            regs::MEMDEV_PCI_DEVICE_ID,
        );
        let nic_class = regs::PTNET_PCI_CLASS << 8;
        // qemu-xhci has the NIC's ids, a USB class and a memory BAR0.
        sys.device("0000:00:02.0", v, nic, 0x0c_0330, &[MEM_BAR]);
        sys.device("0000:00:04.0", v, nic, nic_class, &[IO_BAR]);
        // The NIC's class but a memory BAR0: not ours either.
        sys.device("0000:00:05.0", v, nic, nic_class, &[MEM_BAR]);
        sys.device("0000:00:06.0", v, nic, nic_class, &[IO_BAR]);
        // pcie-root-port has the memdev's ids and is a bridge.
        sys.device("0000:00:07.0", v, mem, 0x06_0400, &[IO_BAR, MEM_BAR]);
        sys.device("0000:00:08.0", v, mem, 0x05_0000, &[IO_BAR, MEM_BAR]);
        let devices = pci_devices(&sys.0).unwrap();
        assert_eq!(devices.len(), 6);
        let find = |sel| find_nic(&devices, &sel).map(|p| name(&p));
        assert_eq!(find(PciSelector::Index(0)).unwrap(), "0000:00:04.0");
        assert_eq!(find(PciSelector::Index(1)).unwrap(), "0000:00:06.0");
        assert_eq!(
            find(PciSelector::Address("0000:00:06.0".into())).unwrap(),
            "0000:00:06.0"
        );
        for (sel, shown) in [
            (PciSelector::Index(2), "ptnet2"),
            (
                PciSelector::Address("0000:00:02.0".into()),
                "ptnet:0000:00:02.0",
            ),
            (
                PciSelector::Address("0000:00:05.0".into()),
                "ptnet:0000:00:05.0",
            ),
            (
                PciSelector::Address("0000:00:08.0".into()),
                "ptnet:0000:00:08.0",
            ),
        ] {
            match find(sel) {
                Err(Error::NoDevice(what)) => assert_eq!(what, shown),
                other => panic!("{shown}: {other:?}"),
            }
        }
        let memdevs: Vec<String> = devices
            .iter()
            .filter(|d| is_memdev(d))
            .map(|d| name(d))
            .collect();
        assert_eq!(memdevs, ["0000:00:08.0"]);
        assert_eq!(resources(&devices[1]), [IO_BAR]);
    }

    #[test]
    fn a_missing_sysfs_is_an_io_error() {
        let sys = FakeSysfs::new("missing");
        match pci_devices(&sys.0.join("nope")) {
            Err(Error::Io { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
