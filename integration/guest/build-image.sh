#!/usr/bin/env bash
# Builds the ptnet test guest: Debian bookworm's kernel, busybox, uio modules and static
# ptnet-pkt-gen and ptnet-bridge in a gzip'd cpio initramfs. Everything comes from Debian packages and this
# workspace; no prebuilt images are downloaded.
#
# Output: ${PTNET_CACHE_DIR:-$HOME/.cache/ptnet}/guest-<hash of inputs>/{vmlinuz,initramfs.cpio.gz}
# The last line printed on stdout is that directory. A second run with the same inputs only
# re-checks the cargo build and prints the directory.
#
# Environment:
#   PTNET_CACHE_DIR   cache root (default ~/.cache/ptnet)
#   PTNET_PKTGEN      use this static ptnet-pkt-gen instead of building one
#   PTNET_BRIDGE      use this static ptnet-bridge (default with PTNET_PKTGEN: the one next to it)
#   PTNET_NO_MUSL=1   link glibc statically (+crt-static) even if the musl target is there
#   PTNET_KERNEL_PKG  kernel package (default: what linux-image-amd64 depends on, or a cached one)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${PTNET_CACHE_DIR:-$HOME/.cache/ptnet}"
debs="$cache/debs"
mkdir -p "$debs"

log() { echo "build-image: $*" >&2; }

# --- host tools -------------------------------------------------------------------------------
need=()
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v modinfo >/dev/null || need+=(kmod)
command -v file >/dev/null || need+=(file)
command -v gzip >/dev/null || need+=(gzip)
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >&2; }
fi
busybox=/bin/busybox
file -L "$busybox" | grep -q 'statically linked' || { log "$busybox is not static"; exit 1; }

# --- kernel package ---------------------------------------------------------------------------
kdeb=""
if [ -n "${PTNET_KERNEL_PKG:-}" ]; then
    kpkg="$PTNET_KERNEL_PKG"
else
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.[0-9.-]*-amd64\)$/\1/p' | head -n1)"
    if [ -z "$kpkg" ]; then
        # No apt lists (or no bookworm kernel in them): use a cached one, or refresh the lists.
        kdeb="$(ls -1 "$debs"/linux-image-6.1.*-amd64_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
        if [ -z "$kdeb" ]; then
            apt-get update -qq >&2
            kpkg="$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-6\.1\.[0-9.-]*-amd64\)$/\1/p' | head -n1)"
        fi
    fi
fi
if [ -z "$kdeb" ]; then
    [ -n "$kpkg" ] || { log "cannot find Debian's 6.1 kernel package"; exit 1; }
    kdeb="$(ls -1 "$debs/${kpkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -z "$kdeb" ]; then
        log "downloading $kpkg"
        (cd "$debs" && apt-get download "$kpkg" >&2) || {
            apt-get update -qq >&2
            (cd "$debs" && apt-get download "$kpkg" >&2)
        }
        kdeb="$(ls -1 "$debs/${kpkg}"_*.deb | sort -V | tail -n1)"
    fi
fi
log "kernel: $(basename "$kdeb")"

# --- static ptnet-pkt-gen and ptnet-bridge ----------------------------------------------------
if [ -n "${PTNET_PKTGEN:-}" ]; then
    pktgen="$PTNET_PKTGEN"
    bridge="${PTNET_BRIDGE:-$(dirname "$pktgen")/ptnet-bridge}"
else
    pktgen=""
    if [ "${PTNET_NO_MUSL:-}" != 1 ] && {
        rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
            timeout 120 rustup target add x86_64-unknown-linux-musl >&2 2>/dev/null
    }; then
        if (cd "$root" && cargo build --release -q -p ptnet-driver-tools --bin ptnet-pkt-gen \
            --bin ptnet-bridge --target x86_64-unknown-linux-musl >&2); then
            pktgen="$root/target/x86_64-unknown-linux-musl/release/ptnet-pkt-gen"
        fi
    fi
    if [ -z "$pktgen" ]; then
        log "musl target unavailable: linking glibc statically"
        (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -q \
            -p ptnet-driver-tools --bin ptnet-pkt-gen --bin ptnet-bridge --target x86_64-unknown-linux-gnu >&2)
        pktgen="$root/target/x86_64-unknown-linux-gnu/release/ptnet-pkt-gen"
    fi
    bridge="$(dirname "$pktgen")/ptnet-bridge"
fi
for b in "$pktgen" "$bridge"; do
    [ -f "$b" ] || { log "$b is missing"; exit 1; }
    file -L "$b" | grep -Eq 'statically linked|static-pie linked' || {
        log "$b is not statically linked: $(file -L "$b")"
        exit 1
    }
done

# --- cache key --------------------------------------------------------------------------------
key="$(
    {
        sha256sum "$here/build-image.sh" "$here/init" "$busybox" "$pktgen" "$bridge" | cut -d' ' -f1
        basename "$kdeb"
        if [ -d "$here/scripts" ]; then find "$here/scripts" -type f | sort | xargs -r sha256sum | cut -d' ' -f1; fi
    } | sha256sum | cut -c1-16
)"
out="$cache/guest-$key"
if [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ]; then
    log "cached"
    echo "$out"
    exit 0
fi

# --- assemble ---------------------------------------------------------------------------------
tmp="$(mktemp -d "$cache/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --fsys-tarfile "$kdeb" >"$tmp/kernel.tar"
tar -tf "$tmp/kernel.tar" >"$tmp/list"
vmlinuz="$(grep -E '^\./boot/vmlinuz-' "$tmp/list" | head -n1)"
kver="${vmlinuz#./boot/vmlinuz-}"
mkdir -p "$tmp/k"

# Modules to load, with their dependencies first (modinfo's depends field).
wanted=(uio_pci_generic virtio_pci virtio_net)
order=()
declare -A seen=()
resolve() {
    local name="$1" path dep
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    path="$(grep -E "/${name//_/[_-]}\.ko(\.xz|\.zst)?$" "$tmp/list" | head -n1)"
    [ -n "$path" ] || { log "module $name not in $(basename "$kdeb")"; exit 1; }
    tar -xf "$tmp/kernel.tar" -C "$tmp/k" "$path"
    case "$path" in
    *.xz) xz -d "$tmp/k/$path"; path="${path%.xz}" ;;
    *.zst) zstd -q -d --rm "$tmp/k/$path"; path="${path%.zst}" ;;
    esac
    for dep in $(modinfo -F depends "$tmp/k/$path" | tr ',' ' '); do
        resolve "$dep"
    done
    order+=("$path")
}
for m in "${wanted[@]}"; do resolve "$m"; done
tar -xf "$tmp/kernel.tar" -C "$tmp/k" "$vmlinuz"

ird="$tmp/initramfs"
mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/modules,scripts}
cp "$busybox" "$ird/bin/busybox"
cp "$pktgen" "$ird/bin/ptnet-pkt-gen"
cp "$bridge" "$ird/bin/ptnet-bridge"
# Debug info is of no use in the guest; halve the image when binutils is there.
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$ird/bin/ptnet-pkt-gen"
    objcopy --strip-debug "$ird/bin/ptnet-bridge"
fi
cp "$here/init" "$ird/init"
chmod 755 "$ird/init" "$ird/bin/busybox" "$ird/bin/ptnet-pkt-gen" "$ird/bin/ptnet-bridge"
ln -s busybox "$ird/bin/sh"
for p in "${order[@]}"; do
    cp "$tmp/k/$p" "$ird/lib/modules/"
    basename "$p" >>"$ird/lib/modules/order"
done
if [ -d "$here/scripts" ]; then cp "$here"/scripts/* "$ird/scripts/" 2>/dev/null || true; fi
echo "$kver" >"$ird/etc/kernel-release"

mkdir -p "$tmp/out"
cp "$tmp/k/$vmlinuz" "$tmp/out/vmlinuz"
(cd "$ird" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -6 >"$tmp/out/initramfs.cpio.gz"
{
    echo "kernel=$(basename "$kdeb")"
    echo "kver=$kver"
    echo "modules=${order[*]}"
    echo "pktgen=$pktgen"
    echo "bridge=$bridge"
} >"$tmp/out/manifest"
rm -rf "$out"
mv "$tmp/out" "$out"
# Keep the cache small: the three most recent images stay.
ls -1dt "$cache"/guest-* 2>/dev/null | tail -n +4 | xargs -r rm -rf
log "built $out ($(du -sh "$out" | cut -f1))"
echo "$out"
