# Shared helpers for the set-up scripts. Sourced, not run.

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $1 needs root (network namespaces, DHCP ports)" >&2
    exit 1
  fi
}

# apt_install PKG...: installs the Debian packages that are missing, idempotently.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust 1.95) is required" >&2; exit 1; }
}
