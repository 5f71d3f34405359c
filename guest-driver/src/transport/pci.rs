//! The `pci` transport: a ptnet device inside a Linux guest (being written).
