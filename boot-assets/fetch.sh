#!/usr/bin/env bash
# fetch.sh DEST: puts every kind = "ipxe" asset of manifest.toml into DEST under
# its served name, verified against the manifest's sha256 and size.
#
# Idempotent: files already in DEST with the right hash and size are kept, and
# nothing is downloaded when all of them are. Otherwise the pinned Debian .deb
# named in `source` is fetched with `apt-get download` (apt verifies it against
# the signed archive index), unpacked with dpkg-deb -x (no maintainer scripts),
# and each file is checked before it is copied. Any mismatch is fatal.
#
# Environment: BOOT_ASSETS_CACHE=DIR keeps downloaded .debs there (default: a
# temporary directory removed on exit).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 DEST"
DEST=$1
mkdir -p "$DEST"

names=$(manifest_names ipxe)
[ -n "$names" ] || die "manifest.toml lists no ipxe assets"

todo=()
for n in $names; do
  f="$DEST/$(served_name "$n")"
  if file_ok "$f" "$(manifest_need "$n" sha256)" "$(manifest_need "$n" size)"; then
    log "ok (already verified): $f"
  else
    todo+=("$n")
  fi
done
if [ ${#todo[@]} -eq 0 ]; then
  log "all ipxe assets present and verified in $DEST"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache=${BOOT_ASSETS_CACHE:-$work/debs}
mkdir -p "$cache"

declare -A unpacked=()
for n in "${todo[@]}"; do
  src=$(manifest_need "$n" source)
  spec=$(deb_spec "$src")
  path=$(deb_path "$src")
  root="$work/root/${spec//[^A-Za-z0-9._-]/_}"
  if [ -z "${unpacked[$spec]:-}" ]; then
    log "downloading $spec"
    deb=$(apt_download "$spec" "$cache")
    deb_extract "$deb" "$root"
    unpacked[$spec]=1
  fi
  file="$root$path"
  { [ -f "$file" ] && [ ! -L "$file" ]; } || die "$n: $path is not a regular file in $spec"
  verify_file "$file" "$(manifest_need "$n" sha256)" "$(manifest_need "$n" size)" "$n"
  out="$DEST/$(served_name "$n")"
  # Copy then rename, so DEST never holds a half-written file.
  cp "$file" "$out.tmp.$$"
  chmod 0644 "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
  verify_file "$out" "$(manifest_need "$n" sha256)" "$(manifest_need "$n" size)" "$n"
  log "installed $out ($spec:$path)"
done
