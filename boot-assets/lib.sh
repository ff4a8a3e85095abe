# shellcheck shell=bash
# Shared helpers for fetch.sh and build-discovery.sh. Sourced, not run.
#
# The manifest is read with awk, which understands only the subset of TOML
# that manifest.toml uses: `[[asset]]` tables, one `key = "string"` or
# `key = integer` per line, whole-line `#` comments. Keep it in that shape.

BOOT_ASSETS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MANIFEST="${MANIFEST:-$BOOT_ASSETS_DIR/manifest.toml}"

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[boot-assets] $*" >&2; }

# manifest_names [KIND]: asset names in manifest order (every kind if none given).
manifest_names() {
  awk -v want="${1:-}" '
    function flush() { if (name != "" && (want == "" || kind == want)) print name; name = ""; kind = "" }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*\[\[asset\]\]/ { flush(); next }
    /^[[:space:]]*name[[:space:]]*=/ { v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*$/, "", v); name = v }
    /^[[:space:]]*kind[[:space:]]*=/ { v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*$/, "", v); kind = v }
    END { flush() }
  ' "$MANIFEST"
}

# manifest_get NAME KEY: value of KEY in the asset named NAME, quotes removed;
# empty output if the key is absent.
manifest_get() {
  awk -v want="$1" -v key="$2" '
    function flush() { if (!done && cur == want && (key in kv)) { print kv[key]; done = 1 } split("", kv); cur = "" }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*\[\[asset\]\]/ { flush(); next }
    /^[[:space:]]*[a-z0-9_]+[[:space:]]*=/ {
      k = $0; sub(/^[[:space:]]*/, "", k); sub(/[[:space:]]*=.*$/, "", k)
      v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]+$/, "", v)
      if (v ~ /^"/) { sub(/^"/, "", v); sub(/"$/, "", v) }
      kv[k] = v
      if (k == "name") cur = v
    }
    END { flush() }
  ' "$MANIFEST"
}

# manifest_need NAME KEY: like manifest_get, but a missing key is fatal.
manifest_need() {
  local v
  v=$(manifest_get "$1" "$2")
  [ -n "$v" ] || die "manifest.toml: asset '$1' has no '$2'"
  printf '%s\n' "$v"
}

# served_name NAME: the file name the asset has in DEST (basename of its http path).
served_name() {
  local http
  http=$(manifest_need "$1" http)
  case "$http" in /boot/?*) ;; *) die "manifest.toml: asset '$1': http must start with /boot/ ($http)" ;; esac
  printf '%s\n' "${http##*/}"
}

# A `source` of the form debian:PKG=VERSION:/PATH (VERSION may hold an epoch
# colon, never a slash, so the path starts at the first ":/").
# deb_spec SOURCE -> "PKG=VERSION"; deb_path SOURCE -> "/PATH".
deb_spec() {
  local s=${1#debian:}
  [ "$s" != "$1" ] || die "source is not debian:PKG=VERSION:/PATH: $1"
  s=${s%%:/*}
  case "$s" in *=*) ;; *) die "source has no PKG=VERSION: $1" ;; esac
  printf '%s\n' "$s"
}
deb_path() {
  case "$1" in *:/*) printf '/%s\n' "${1#*:/}" ;; *) die "source has no :/PATH: $1" ;; esac
}

# file_ok FILE SHA256 SIZE: true if FILE exists (not a symlink) with that size and hash.
file_ok() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$3" ] || return 1
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# verify_file FILE SHA256 SIZE WHAT: fails loudly, with both values, on mismatch.
verify_file() {
  local got_size got_sha
  [ -f "$1" ] || die "$4: $1 is missing"
  got_size=$(stat -L -c %s "$1")
  got_sha=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got_size" != "$3" ] || [ "$got_sha" != "$2" ]; then
    echo "error: $4: $1 does not match manifest.toml" >&2
    echo "  manifest: sha256=$2 size=$3" >&2
    echo "  got:      sha256=$got_sha size=$got_size" >&2
    exit 1
  fi
}

# apt_download PKG=VERSION DIR: downloads exactly that .deb into DIR (apt checks
# it against the signed archive index) and prints its path. Runs
# `apt-get update` once if the version is not known yet.
apt_download() {
  local spec=$1 dir=$2 pkg=${1%%=*} ver=${1#*=} deb
  # Debian file names encode ':' (epoch) as %3a.
  deb=$(ls "$dir/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    command -v apt-get >/dev/null || die "apt-get is needed to download $spec"
    # _apt must be able to write the target directory, or apt warns and
    # downloads unsandboxed.
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$dir" 2>/dev/null || true; fi
    if ! (cd "$dir" && apt-get download -q "$spec" >/dev/null 2>&1); then
      log "apt-get download $spec failed; running apt-get update"
      apt-get update -q >/dev/null || die "apt-get update failed"
      (cd "$dir" && apt-get download -q "$spec" >/dev/null) \
        || die "cannot download $spec: the pinned version is no longer in the configured Debian suites; pin a current one in manifest.toml"
    fi
    deb=$(ls "$dir/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || die "apt-get download $spec produced no .deb in $dir"
  fi
  printf '%s\n' "$deb"
}

# deb_extract DEB DIR: unpacks DEB's data into DIR (no scripts run).
deb_extract() {
  mkdir -p "$2"
  dpkg-deb -x "$1" "$2" || die "dpkg-deb -x $1 failed"
}
