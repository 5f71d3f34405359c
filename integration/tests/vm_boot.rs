//! The test guest boots, loads the uio modules and runs the static pkt-gen (no ptnet device: this
//! uses Debian's stock qemu-system-x86_64 when installed, else the patched one).
//!
//! Fails when the image cannot be built. `#[ignore]`d (it boots QEMU): `cargo xtask test` runs it.

use ptnet_integration::vm::{vm_lock, Vm, VmConfig};
use std::time::Duration;

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn guest_boots_and_reports() {
    let _g = vm_lock();
    let cmd = "grep -q '^uio_pci_generic ' /proc/modules || exit 10; \
               test -d /sys/bus/pci/drivers/uio_pci_generic || exit 11; \
               ptnet-pkt-gen --help >/dev/null || exit 12; \
               ptnet-pkt-gen -i ptnet0 -f rx -n 1; echo pktgen-rc=$?; exit 7";
    let cfg = VmConfig {
        timeout: Duration::from_secs(120),
        ..VmConfig::new("boot", cmd)
    };
    let r = Vm::start(&cfg)
        .and_then(|vm| vm.wait())
        .expect("boot the guest");
    assert_eq!(r.rc, Some(7), "{}", r.report());
    // Without a ptnet device the driver must fail cleanly (no device), not crash.
    assert!(r.serial.contains("pktgen-rc=1"), "{}", r.report());
    assert!(
        r.serial.contains("no ptnet device matches"),
        "{}",
        r.report()
    );
}
