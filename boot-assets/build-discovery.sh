#!/usr/bin/env bash
# build-discovery.sh DEST: builds the discovery image into DEST:
#   DEST/discovery-vmlinuz       the pinned Debian kernel, verified against manifest.toml
#   DEST/discovery-initramfs.gz  busybox + NIC/disk/efivarfs modules + discovery/init, byte-reproducible
#
# Everything it uses is pinned in manifest.toml:
#   - the kernel package: `source` of discovery-vmlinuz (debian:PKG=VERSION:/PATH)
#   - busybox: `debian:busybox-static=VERSION:/PATH` in the initramfs `source`
#   - the modules: `modules=a,b,c` in the initramfs `source`, in load order; the
#     script checks each one's depends= (from its .modinfo) is loaded before it.
#   - extra files: each `file=debian:PKG=VERSION:/PATH` in the initramfs `source`
#     is copied to the same path (a symlink in the package is followed); today
#     mkfs.xfs and the shared libraries it needs, for the agent's install step.
#
# The initramfs is built twice from scratch; both builds and the manifest must
# agree byte for byte (sorted entries, every mtime = SOURCE_DATE_EPOCH below,
# uid/gid 0, fixed modes, `cpio --reproducible -H newc`, `gzip -n -9`). The
# hash depends on Debian 12's cpio and gzip. On a mismatch with the manifest
# the new file is left as DEST/discovery-initramfs.gz.new with its hash and
# size printed, and the script fails: update manifest.toml only on purpose.
#
# Idempotent: when DEST already holds both files with the manifest's hash and
# size, built from the same inputs (DEST/.discovery-inputs records a hash of
# the manifest, the scripts and discovery/*), it does nothing; --force rebuilds.
# Environment: BOOT_ASSETS_CACHE=DIR keeps downloaded .debs (default: temporary).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
[ $# -eq 1 ] || die "usage: $0 [--force] DEST"
DEST=$1
mkdir -p "$DEST"

KERNEL=discovery-vmlinuz
INITRD=discovery-initramfs.gz
# Fixed on purpose (not taken from the environment): it is part of the hash.
SOURCE_DATE_EPOCH=1704067200 # 2024-01-01T00:00:00Z
export SOURCE_DATE_EPOCH

k_sha=$(manifest_need $KERNEL sha256); k_size=$(manifest_need $KERNEL size)
i_sha=$(manifest_need $INITRD sha256); i_size=$(manifest_need $INITRD size)
k_out="$DEST/$(served_name $KERNEL)"
i_out="$DEST/$(served_name $INITRD)"

# What the build reads besides the .debs: when any of it changes, rebuild even
# if DEST still matches the manifest (an edited init must not be skipped).
inputs_stamp() {
  cat "$MANIFEST" "$BOOT_ASSETS_DIR/build-discovery.sh" "$BOOT_ASSETS_DIR/lib.sh" \
    "$BOOT_ASSETS_DIR/discovery/init" "$BOOT_ASSETS_DIR/discovery/udhcpc.script" | sha256sum | cut -d' ' -f1
}
stamp_file="$DEST/.discovery-inputs"
stamp=$(inputs_stamp)
if [ $force = 0 ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] &&
  file_ok "$k_out" "$k_sha" "$k_size" && file_ok "$i_out" "$i_sha" "$i_size"; then
  log "discovery kernel and initramfs present and verified in $DEST"
  exit 0
fi
rm -f "$stamp_file"

for tool in cpio gzip dpkg-deb sha256sum; do
  command -v $tool >/dev/null || die "$tool is required (apt-get install cpio gzip dpkg)"
done

# --- pins from the manifest -------------------------------------------------
k_src=$(manifest_need $KERNEL source)
k_spec=$(deb_spec "$k_src")
k_path=$(deb_path "$k_src")
i_src=$(manifest_need $INITRD source)
bb_src=$(grep -o 'debian:busybox-static=[^ ]*' <<<"$i_src") || die "$INITRD source names no debian:busybox-static=VERSION:/PATH"
bb_spec=$(deb_spec "$bb_src")
bb_path=$(deb_path "$bb_src")
grep -qF "debian:$k_spec:" <<<"$i_src" || die "$INITRD source must take its modules from debian:$k_spec (the kernel's package)"
mod_list=$(grep -o 'modules=[a-z0-9_,-]*' <<<"$i_src") || die "$INITRD source has no modules=a,b,c"
IFS=, read -r -a MODULES <<<"${mod_list#modules=}"
kver=${k_path##*/vmlinuz-}
[ "$kver" != "$k_path" ] || die "kernel path $k_path is not /boot/vmlinuz-<release>"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache=${BOOT_ASSETS_CACHE:-$work/debs}
mkdir -p "$cache"

# --- kernel -----------------------------------------------------------------
log "downloading $k_spec"
k_deb=$(apt_download "$k_spec" "$cache")
dpkg-deb --fsys-tarfile "$k_deb" | tar -t >"$work/kernel.list"
kroot="$work/kernel"
mkdir -p "$kroot"

# Module file paths, relative to /lib/modules/<kver>, for the names asked for
# ('-' and '_' are the same in module names).
declare -A modpath=()
for m in "${MODULES[@]}"; do
  n=${m//-/_}
  p=$(awk -v n="$n" -v kv="./lib/modules/$kver/" '
        index($0, kv) == 1 && /\.ko(\.xz|\.zst|\.gz)?$/ {
          b = $0; sub(/.*\//, "", b); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", b); gsub(/-/, "_", b)
          if (b == n) { print substr($0, length(kv) + 1); exit }
        }' "$work/kernel.list")
  if [ -z "$p" ]; then
    if dpkg-deb --fsys-tarfile "$k_deb" | tar -xO "./lib/modules/$kver/modules.builtin" 2>/dev/null | grep -q "/$n\.ko$"; then
      die "module $m is built into $kver: drop it from modules= in manifest.toml"
    fi
    die "module $m is not in $k_spec"
  fi
  case "$p" in *.ko) ;; *) die "module $m is compressed ($p); busybox insmod here needs plain .ko" ;; esac
  modpath[$n]=$p
done

members=(".$k_path")
for m in "${MODULES[@]}"; do members+=("./lib/modules/$kver/${modpath[${m//-/_}]}"); done
(cd "$kroot" && dpkg-deb --fsys-tarfile "$k_deb" | tar -x "${members[@]}") \
  || die "cannot extract the kernel and modules from $k_deb"
verify_file "$kroot$k_path" "$k_sha" "$k_size" "$KERNEL"

# Load order check: every dependency must be listed, and earlier.
declare -A seen=()
for m in "${MODULES[@]}"; do
  n=${m//-/_}
  deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$kroot/lib/modules/$kver/${modpath[$n]}" | head -n1 | cut -d= -f2)
  for d in ${deps//,/ }; do
    d=${d//-/_}
    [ -n "${seen[$d]:-}" ] || die "module $m depends on $d, which modules= in manifest.toml does not list before it"
  done
  seen[$n]=1
done
log "modules (load order): ${MODULES[*]}"

# --- busybox ----------------------------------------------------------------
log "downloading $bb_spec"
bb_deb=$(apt_download "$bb_spec" "$cache")
deb_extract "$bb_deb" "$work/busybox"
bb="$work/busybox$bb_path"
{ [ -f "$bb" ] && [ ! -L "$bb" ]; } || die "$bb_path is not a regular file in $bb_spec"
"$bb" --list-full >"$work/applets" || die "cannot run $bb_path to list its applets (needs an x86_64 host)"

# --- extra files (mkfs.xfs and its libraries) -------------------------------
mapfile -t EXTRA < <(grep -o 'file=debian:[^ ]*' <<<"$i_src" | sed 's/^file=//')
declare -A extra_src=()
for spec_src in "${EXTRA[@]}"; do
  spec=$(deb_spec "$spec_src"); path=$(deb_path "$spec_src")
  pkgdir="$work/extra/${spec%%=*}"
  if [ ! -d "$pkgdir" ]; then
    log "downloading $spec"
    deb_extract "$(apt_download "$spec" "$cache")" "$pkgdir"
  fi
  real=$(cd "$pkgdir" && realpath -m --relative-base=. ".$path")
  # A symlink in the package may point at an absolute path: resolve it inside.
  if [ -L "$pkgdir$path" ]; then
    t=$(readlink "$pkgdir$path")
    case "$t" in /*) real=".$t" ;; *) real="$(dirname ".$path")/$t" ;; esac
  fi
  [ -f "$pkgdir/$real" ] || die "$path is not a file in $spec"
  extra_src[$path]="$pkgdir/$real"
done
[ ${#EXTRA[@]} -eq 0 ] || log "extra files: ${!extra_src[*]}"

# --- initramfs --------------------------------------------------------------
# assemble DIR OUT: lays the tree out in DIR from scratch and writes OUT.
assemble() {
  local root=$1 out=$2 a m n
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/provisioner,dev,proc,sys,run,tmp,root,lib/modules/"$kver"}
  install -m 0755 "$bb" "$root/bin/busybox"
  while read -r a; do
    [ "$a" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$a")"
    ln -s /bin/busybox "$root/$a"
  done <"$work/applets"
  install -m 0755 "$BOOT_ASSETS_DIR/discovery/init" "$root/init"
  install -m 0755 "$BOOT_ASSETS_DIR/discovery/udhcpc.script" "$root/etc/udhcpc.script"
  : >"$root/etc/provisioner/modules"
  for m in "${MODULES[@]}"; do
    n=${m//-/_}
    install -D -m 0644 "$kroot/lib/modules/$kver/${modpath[$n]}" "$root/lib/modules/$kver/${modpath[$n]}"
    echo "${modpath[$n]}" >>"$root/etc/provisioner/modules"
  done
  for f in "${!extra_src[@]}"; do
    install -D -m 0755 "${extra_src[$f]}" "$root$f"
  done
  # The dynamic loader's well-known path (a symlink in Debian too).
  if [ -n "${extra_src[/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]:-}" ]; then
    mkdir -p "$root/lib64"
    ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
  fi
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  printf 'export PS1="discovery# "\n' >"$root/etc/profile"
  : >"$root/etc/resolv.conf"
  chmod 0644 "$root/etc/provisioner/modules" "$root/etc/passwd" "$root/etc/group" "$root/etc/profile" "$root/etc/resolv.conf"
  find "$root" -type d -exec chmod 0755 {} +
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

  (cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio -o -H newc --reproducible -R 0:0 --quiet) >"$out.cpio"
  # /dev/console as a second newc archive (the kernel unpacks both): the kernel
  # opens it before /init runs, and writing the node by hand needs no root.
  newc_entry "dev/console" 0x2180 5 1 >>"$out.cpio"   # char device, 0600, 5:1
  newc_entry "TRAILER!!!" 0 0 0 >>"$out.cpio"
  gzip -n -9 -c "$out.cpio" >"$out"
  rm -f "$out.cpio"
}

# newc_entry NAME MODE RDEVMAJOR RDEVMINOR: one empty newc cpio entry, 4-byte padded.
newc_entry() {
  local name=$1 mode=$2 namesize=$((${#1} + 1)) pad
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    0 "$mode" 0 0 1 "$SOURCE_DATE_EPOCH" 0 0 0 "$3" "$4" "$namesize" 0
  printf '%s\0' "$name"
  pad=$(((4 - (110 + namesize) % 4) % 4))
  head -c "$pad" /dev/zero
}

log "building $INITRD (twice, to check it is reproducible)"
assemble "$work/root1" "$work/initrd1.gz"
assemble "$work/root2" "$work/initrd2.gz"
h1=$(sha256sum "$work/initrd1.gz" | cut -d' ' -f1)
h2=$(sha256sum "$work/initrd2.gz" | cut -d' ' -f1)
[ "$h1" = "$h2" ] || die "$INITRD is not reproducible: two builds gave $h1 and $h2"
size=$(stat -c %s "$work/initrd1.gz")

# --- install ----------------------------------------------------------------
install -m 0644 "$kroot$k_path" "$k_out.tmp.$$" && mv -f "$k_out.tmp.$$" "$k_out"
verify_file "$k_out" "$k_sha" "$k_size" "$KERNEL"
log "installed $k_out ($k_spec:$k_path)"

if [ "$h1" != "$i_sha" ] || [ "$size" != "$i_size" ]; then
  install -m 0644 "$work/initrd1.gz" "$i_out.new"
  rm -f "$i_out"
  echo "error: $INITRD does not match manifest.toml (inputs changed?)" >&2
  echo "  manifest: sha256=$i_sha size=$i_size" >&2
  echo "  built:    sha256=$h1 size=$size (left as $i_out.new)" >&2
  echo "  if the change is intended, put the built values in manifest.toml" >&2
  exit 1
fi
install -m 0644 "$work/initrd1.gz" "$i_out.tmp.$$" && mv -f "$i_out.tmp.$$" "$i_out"
rm -f "$i_out.new"
verify_file "$i_out" "$i_sha" "$i_size" "$INITRD"
echo "$stamp" >"$stamp_file"
log "installed $i_out (sha256 $h1, reproducible)"
