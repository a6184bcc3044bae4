#!/usr/bin/env bash
# Installs the system packages faasd needs on Debian 12 and builds CRIU >= 4.2 when missing.
# Idempotent: each step checks first and says what it does. Run as root.
set -euo pipefail

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (faasd drives runc, CRIU, mounts and namespaces)"
. /etc/os-release
[ "${ID:-}" = debian ] || say "warning: tested on Debian 12, this is ${PRETTY_NAME:-unknown}"

APT_PACKAGES=(
  runc runsc umoci skopeo debootstrap iproute2 iptables zstd tar util-linux e2fsprogs
  podman uidmap libseccomp2 python3-venv python3-dev ca-certificates
  nodejs gcc libc6-dev postgresql
  # registry tests: a real OCI registry (htpasswd from apache2-utils), a static busybox for test images
  docker-registry apache2-utils busybox-static
  # native load generators for bench/load.py
  wrk hey
  # browser tests of the web console (tests/integration/console)
  chromium chromium-driver
  # CRIU runtime libraries (built without GnuTLS and nftables: see the build below)
  libprotobuf-c1 libnl-3-200 libnet1 libcap2 libbsd0 libuuid1
)
CRIU_BUILD_DEPS=(
  build-essential pkg-config protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
  libprotobuf-dev libnl-3-dev libnet1-dev libcap-dev libbsd-dev uuid-dev python3-protobuf patch
)
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages present"
fi

# CRIU caches its kernel-feature probes (~30 ms of every dump and restore) in $RUNDIR/criu.kdat, but
# only when that directory is on a tmpfs. Debian 12 hosts often have /run on disk, so faasd's CRIU is
# built with its own RUNDIR, a dir faasd mounts a small tmpfs on (faasd.runtime.criu_conf.KDAT_DIR).
CRIU_RUNDIR=/run/faasd-criu
# faasd's patches to CRIU (scripts/criu-patches/*.patch, applied in order); each one's marker string
# is compiled into the binary, so an installed criu without one of them is rebuilt.
CRIU_PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/criu-patches"
CRIU_MARKERS=("$CRIU_RUNDIR/criu.kdat" "faasd-tmpfs-empty-v3" "faasd-emptyns-no-ct-v1" "faasd-ksm-env-v1"
  "faasd-tmpfs-skeleton-v1" "faasd-populate-v1" "faasd-freeze-poll-v1" "faasd-post-dump-fifo-v2")

criu_ok() {
  local bin=${1:-criu}
  command -v "$bin" >/dev/null 2>&1 || return 1
  local v; v=$("$bin" --version 2>/dev/null | awk '/^Version:/{print $2}')
  [ -n "$v" ] || return 1
  local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  { [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 2 ]; }; } || return 1
  # built with faasd's kdat cache dir and patches (CRIU_MARKERS above); otherwise it is rebuilt
  local marker
  for marker in "${CRIU_MARKERS[@]}"; do
    grep -qaF "$marker" "$(command -v "$bin")" || return 1
  done
  # without GnuTLS (its TLS page server) and nftables (its network lock): faasd uses neither, and loading
  # them and their dozen dependencies cost each dump and restore ~2-4 ms (bench: CRIU's wall per restore)
  ldd "$(command -v "$bin")" 2>/dev/null | grep -qE 'libgnutls|libnftables' && return 1
  "$bin" check >/dev/null 2>&1
}

if criu_ok /usr/local/sbin/criu || criu_ok criu; then
  say "criu $(criu --version | awk '/^Version:/{print $2}') present (kdat cache in $CRIU_RUNDIR) and 'criu check' passes"
else
  say "building CRIU >= 4.2 from Debian's forky source package (Debian 12's criu 3.17 fails on this kernel; RUNDIR=$CRIU_RUNDIR)"
  missing=()
  for p in "${CRIU_BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "cannot find the Debian mirror in the apt sources"
  srcfile=/etc/apt/sources.list.d/faasd-criu-forky-src.list
  work=$(mktemp -d /tmp/faasd-criu.XXXXXX)
  cleanup() { rm -f "$srcfile"; rm -rf "$work"; apt-get update -qq >/dev/null 2>&1 || true; }
  trap cleanup EXIT
  echo "deb-src $mirror forky main" > "$srcfile"
  apt-get update -qq -o Acquire::Check-Valid-Until=false
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing CRIU build dependencies: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  chmod 755 "$work"; chown _apt "$work" 2>/dev/null || true
  cd "$work"
  # Only the upstream .orig tarball is needed (and is all that some mirrors serve): ignore the rest.
  apt-get source --download-only criu/forky >/dev/null 2>&1 || true
  orig=$(ls criu_*.orig.tar.* 2>/dev/null | head -n1 || true)
  [ -n "$orig" ] || die "criu source tarball did not download"
  want=$(apt-cache showsrc criu 2>/dev/null | awk -v f="$orig" '/^Checksums-Sha256:/{s=1;next} /^[A-Z]/{s=0} s && $3==f {print $1; exit}')
  got=$(sha256sum "$orig" | awk '{print $1}')
  [ -n "$want" ] || die "no sha256 for $orig in apt-cache showsrc"
  [ "$want" = "$got" ] || die "sha256 mismatch for $orig: want $want got $got"
  say "verified $orig (sha256 $got)"
  tar -xf "$orig"
  cd criu-*/
  for patch_file in "$CRIU_PATCH_DIR"/*.patch; do
    [ -e "$patch_file" ] || continue
    say "applying $(basename "$patch_file")"
    patch -p1 --forward --quiet < "$patch_file" || die "$(basename "$patch_file") does not apply to $orig"
  done
  say "compiling criu (about 20-60 s)"
  # NO_GNUTLS=1 and an empty LIB_NFTABLES (its feature test then fails and CRIU builds without it): see criu_ok
  criu_make=(RUNDIR="$CRIU_RUNDIR" NO_GNUTLS=1 LIB_NFTABLES=)
  make -j"$(nproc)" criu "${criu_make[@]}" >/dev/null 2>&1 \
    || { make criu "${criu_make[@]}" 2>&1 | tail -30; die "criu build failed"; }
  make install-criu PREFIX=/usr/local "${criu_make[@]}" >/dev/null
  hash -r
  criu_ok /usr/local/sbin/criu || die "built criu does not pass 'criu check'"
  say "installed $(/usr/local/sbin/criu --version | awk '/^Version:/{print $2}') to /usr/local/sbin/criu"
fi
