//! Declares `cfg(loom)`, under which `port::delivery::handover` is built on loom's primitives
//! (`RUSTFLAGS="--cfg loom" cargo test -p ptnet-backend --release --lib rxring_loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
