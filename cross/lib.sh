# shellcheck shell=bash disable=SC2034  # settings are used by the sourcing scripts
# Shared code of cross/build.sh and cross/test-aarch64.sh: host packages, the Debian sid
# cross chroot (create / cache / lock), mounts, and running cargo inside the chroot.
# Sourced, not run. Callers use `set -euo pipefail`.

# --- settings (environment) --------------------------------------------------------------
# NODEWATCH_CROSS_ROOT    where the chroot is cached (default below)
# NODEWATCH_CROSS_MIRROR  Debian mirror for the chroot (default http://deb.debian.org/debian)
# NODEWATCH_CROSS_SUITE   Debian suite (default sid: its rustc is new enough for the workspace)

NW_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
NW_XROOT=${NODEWATCH_CROSS_ROOT:-/var/cache/nodewatch/cross-sid}
NW_XROOT=${NW_XROOT%/}
NW_MIRROR=${NODEWATCH_CROSS_MIRROR:-http://deb.debian.org/debian}
NW_SUITE=${NODEWATCH_CROSS_SUITE:-sid}
NW_STAMP="$NW_XROOT/.nodewatch-cross-stamp"
# Inside the chroot the workspace is bind-mounted at the same absolute path as on the host,
# so paths baked in at compile time (env!("CARGO_MANIFEST_DIR")) are valid in both.
NW_TARGET_DIR="$NW_REPO/target/cross"
NW_DIST="$NW_TARGET_DIR/dist"

# Packages of the chroot. Changing this list (or NW_CHROOT_VERSION) rebuilds the chroot.
NW_CHROOT_VERSION=1
NW_CHROOT_PACKAGES=(
  rustc cargo gcc libc6-dev
  libstd-rust-dev:arm64 libstd-rust-dev:armhf
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf
  qemu-user-static ca-certificates file
  dpkg-dev
)
# python3: the HTTP server of test-aarch64.sh's host-name test.
NW_HOST_PACKAGES=(mmdebstrap qemu-user-static binfmt-support file util-linux debian-archive-keyring python3)

nw_log() { printf '==> %s\n' "$*" >&2; }
nw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

nw_require_root() {
  [[ $(id -u) -eq 0 ]] || nw_die "must run as root (chroot, mounts, apt-get)"
}

# Seconds since $1 (a value of $SECONDS) as "Xm Ys".
nw_elapsed() { local s=$((SECONDS - $1)); printf '%dm %02ds' $((s / 60)) $((s % 60)); }

# Map a Rust target triple to the GNU prefix of its cross toolchain.
nw_gnu_prefix() {
  case $1 in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    *) nw_die "unsupported target: $1 (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" ;;
  esac
}

# Install those of the given Debian packages that are missing (non-interactive, no stdin
# needed). Shared by the cross, image and package scripts.
nw_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    nw_log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  fi
}

# The cross build's host packages.
nw_host_deps() { nw_apt_install "${NW_HOST_PACKAGES[@]}"; }

# Serialise everything that touches the chroot (creation, mounts, cargo) between runs.
nw_lock() {
  mkdir -p "$(dirname "$NW_XROOT")"
  exec {NW_LOCK_FD}>"$NW_XROOT.lock"
  if ! flock -n "$NW_LOCK_FD"; then
    nw_log "waiting for another run using $NW_XROOT"
    flock "$NW_LOCK_FD"
  fi
}

# Is anything mounted at or below $1?
nw_has_mounts_below() {
  local dir=$1
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

nw_stamp_text() {
  printf 'nodewatch-cross %s\nsuite %s\npackages %s\n' \
    "$NW_CHROOT_VERSION" "$NW_SUITE" "${NW_CHROOT_PACKAGES[*]}"
}

# Create the chroot unless a complete one (stamp present and current) is cached.
nw_ensure_chroot() {
  if [[ -f $NW_STAMP ]] && [[ $(cat "$NW_STAMP") == "$(nw_stamp_text)" ]]; then
    nw_log "using cached chroot $NW_XROOT"
    return 0
  fi
  local dir
  for dir in "$NW_XROOT" "$NW_XROOT.new"; do
    # never rm -rf a tree with the workspace (or /dev) still bind-mounted into it
    nw_has_mounts_below "$dir" && nw_die "$dir has mounts below it (a killed run?): unmount them first (umount -R)"
  done
  local start=$SECONDS include
  include=$(IFS=,; echo "${NW_CHROOT_PACKAGES[*]}")
  nw_log "creating Debian $NW_SUITE cross chroot at $NW_XROOT (a few minutes)"
  rm -rf "$NW_XROOT.new"
  # The archive may be a frozen snapshot: don't reject its Release file as expired.
  # The option is written into the chroot's apt config too, for later apt-get runs there.
  mmdebstrap --variant=apt --architectures=amd64,arm64,armhf \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$include" \
    "$NW_SUITE" "$NW_XROOT.new" "$NW_MIRROR" </dev/null
  rm -rf "$NW_XROOT"
  mv "$NW_XROOT.new" "$NW_XROOT"
  nw_stamp_text >"$NW_STAMP"
  nw_log "chroot created in $(nw_elapsed "$start") ($(du -sh "$NW_XROOT" | cut -f1))"
}

# The glibc the ARM binaries are linked against: Debian bookworm's (2.36, as Raspberry Pi
# OS bookworm), not sid's. Linked against sid's, a binary records sid's symbol versions
# (Rust's std refers to pidfd_spawnp@GLIBC_2.39, weakly but with a hard version need) and
# would not start on bookworm. bookworm's cross libc packages are unpacked into
# $NW_GLIBC_DIR in the chroot (their linker scripts pointed there); build.sh links with
# `-B` and `-rpath-link` to it, so gcc takes crt*.o, libc.so, libm.so from there.
NW_GLIBC_SUITE=bookworm
NW_GLIBC_DIR=/opt/nodewatch-glibc-$NW_GLIBC_SUITE
NW_GLIBC_PACKAGES=(libc6-arm64-cross libc6-dev-arm64-cross libc6-armhf-cross libc6-dev-armhf-cross)

# Unpack bookworm's cross libc into the chroot's $NW_GLIBC_DIR unless done (stamped).
nw_ensure_glibc_sysroot() {
  local dir=$NW_XROOT$NW_GLIBC_DIR stamp
  stamp=$(printf 'suite %s\nmirror %s\npackages %s\n' "$NW_GLIBC_SUITE" "$NW_MIRROR" "${NW_GLIBC_PACKAGES[*]}")
  if [[ -f $dir/.stamp ]] && [[ $(cat "$dir/.stamp") == "$stamp" ]]; then
    return 0
  fi
  nw_log "unpacking Debian $NW_GLIBC_SUITE's cross glibc into $NW_GLIBC_DIR (chroot)"
  rm -rf "$dir" "$NW_XROOT/var/lib/nodewatch-glibc"
  local apt_dir=/var/lib/nodewatch-glibc
  mkdir -p "$NW_XROOT$apt_dir/lists/partial" "$NW_XROOT$apt_dir/debs" "$dir"
  echo "deb $NW_MIRROR $NW_GLIBC_SUITE main" >"$NW_XROOT$apt_dir/sources.list"
  # A separate package list (bookworm's), so the chroot's own (sid) is not touched.
  local apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o 'Acquire::Check-Valid-Until=false')
  nw_chroot_run apt-get "${apt_opts[@]}" update </dev/null >/dev/null
  # shellcheck disable=SC2016  # expanded by the chroot's sh
  nw_chroot_run /bin/sh -c 'cd "$1" && shift && exec apt-get "$@"' sh "$apt_dir/debs" \
    "${apt_opts[@]}" download "${NW_GLIBC_PACKAGES[@]/%//$NW_GLIBC_SUITE}" </dev/null >/dev/null
  local deb
  for deb in "$NW_XROOT$apt_dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dir"
  done
  # libc.so and friends are linker scripts naming /usr/<triple>/lib/...: point them here.
  local script
  while IFS= read -r script; do
    if head -c 64 "$script" | grep -q 'GNU ld script'; then
      sed -i "s| /usr/\([a-z0-9_-]*\)/lib/| $NW_GLIBC_DIR/usr/\1/lib/|g" "$script"
    fi
  done < <(find "$dir" -name '*.so' -type f)
  printf '%s\n' "$stamp" >"$dir/.stamp"
}

# RUSTFLAGS for a target that link against $NW_GLIBC_DIR (see above).
nw_glibc_rustflags() {
  local lib
  lib=$NW_GLIBC_DIR/usr/$(nw_gnu_prefix "$1")/lib
  echo "-C link-arg=-B$lib/ -C link-arg=-L$lib -C link-arg=-Wl,-rpath-link,$lib"
}

# Host files the chroot needs at run time: DNS, hosts, and the host's extra CAs (TLS to the
# registries may be re-signed by a proxy; cargo fails with "self-signed certificate" otherwise).
nw_sync_host_files() {
  local f changed=0
  for f in /etc/resolv.conf /etc/hosts; do
    [[ -e $f ]] || continue
    rm -f "$NW_XROOT$f"
    cp -L "$f" "$NW_XROOT$f"
  done
  shopt -s nullglob
  for f in /usr/local/share/ca-certificates/*.crt; do
    if ! cmp -s "$f" "$NW_XROOT/usr/local/share/ca-certificates/${f##*/}"; then
      cp "$f" "$NW_XROOT/usr/local/share/ca-certificates/"
      changed=1
    fi
  done
  shopt -u nullglob
  if ((changed)); then
    chroot "$NW_XROOT" update-ca-certificates >/dev/null 2>&1 ||
      nw_die "update-ca-certificates failed in $NW_XROOT"
  fi
}

NW_MOUNTS=()

# Mount proc, sys, dev and the workspace into the chroot; unmounted by nw_umount (EXIT trap).
nw_mount() {
  trap nw_umount EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  local ws="$NW_XROOT$NW_REPO"
  mkdir -p "$NW_XROOT/proc" "$NW_XROOT/sys" "$NW_XROOT/dev" "$ws"
  NW_MOUNTS=("$ws" "$NW_XROOT/dev" "$NW_XROOT/sys" "$NW_XROOT/proc") # unmount order
  mountpoint -q "$NW_XROOT/proc" || mount -t proc proc "$NW_XROOT/proc"
  mountpoint -q "$NW_XROOT/sys" || mount -t sysfs sysfs "$NW_XROOT/sys"
  if ! mountpoint -q "$NW_XROOT/dev"; then
    mount --rbind /dev "$NW_XROOT/dev"
    # keep the unmount of the recursive bind from propagating to the host's /dev/pts etc.
    mount --make-rslave "$NW_XROOT/dev"
  fi
  if ! mountpoint -q "$ws"; then
    mount --bind "$NW_REPO" "$ws"
    mount --make-private "$ws"
  fi
  nw_sync_host_files
}

nw_umount() {
  local m
  for m in "${NW_MOUNTS[@]}"; do
    if mountpoint -q "$m"; then
      umount -R "$m" 2>/dev/null || umount -R -l "$m" || echo "warning: could not unmount $m" >&2
    fi
  done
  NW_MOUNTS=()
}

# Extra VAR=value settings for commands run in the chroot (e.g. a test runner).
NW_EXTRA_ENV=()

# Run a command in the chroot with a clean environment (the host's RUSTFLAGS, CARGO_HOME etc.
# must not leak in). Cargo's home (registry cache) lives in the chroot and is cached with it.
nw_chroot_run() {
  chroot "$NW_XROOT" /usr/bin/env -i \
    HOME=/root \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
    LANG=C.UTF-8 \
    TERM="${TERM:-dumb}" \
    CARGO_HOME=/root/.cargo \
    CARGO_TARGET_DIR="$NW_TARGET_DIR" \
    CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
    AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
    "${NW_EXTRA_ENV[@]}" \
    "$@"
}

# Like nw_chroot_run, but in the workspace directory.
nw_chroot_cargo() {
  # shellcheck disable=SC2016  # expanded by the chroot's sh
  nw_chroot_run /bin/sh -c 'cd "$1" && shift && exec cargo "$@"' sh "$NW_REPO" "$@"
}
