#!/usr/bin/env bash
# Cross-build nodewatch for the Raspberry Pi in a cached Debian sid chroot.
# usage: cross/build.sh [--static] [TARGET...]
#   TARGET: aarch64-unknown-linux-gnu (64-bit Pi OS), armv7-unknown-linux-gnueabihf (32-bit)
#   default: both. nodewatch-agent for each target, the exporters for aarch64 as well.
#   Outputs: target/cross/dist/<binary>-<TARGET> (stripped), linked dynamically against
#   Debian bookworm's glibc 2.36 (see NW_GLIBC_* in lib.sh), so they run on bookworm and later.
#   --static: link glibc statically instead, into target/cross/dist-static/ (measurements only).
# Fails if the stripped aarch64 agent is over 6 MiB, or a dynamic binary needs a glibc
# newer than 2.36 (Raspberry Pi OS / Debian bookworm). See cross/README.md.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_AARCH64_AGENT_BYTES=$((6 * 1024 * 1024))
# The agent's hot-code layout (agent/build.rs, agent/hot-code.txt) must have found the
# functions it lists on this target: they are over 1 MiB on x86_64.
MIN_AGENT_HOT_CODE_BYTES=$((512 * 1024))
# Debian bookworm and Raspberry Pi OS bookworm ship glibc 2.36: the oldest we support.
MAX_GLIBC=2.36
DEFAULT_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

static=0
TARGETS=()
for arg in "$@"; do
  case $arg in
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --static) static=1 ;;
    -*) nw_die "unknown option: $arg (see --help)" ;;
    *) TARGETS+=("$arg") ;;
  esac
done
((${#TARGETS[@]})) || TARGETS=("${DEFAULT_TARGETS[@]}")
for t in "${TARGETS[@]}"; do nw_gnu_prefix "$t" >/dev/null; done

# What each target gets: the exporters run on the monitoring server (x86_64 or arm64).
binaries_for() {
  case $1 in
    aarch64-unknown-linux-gnu) echo nodewatch-agent nodewatch-wallet-exporter nodewatch-reward-exporter ;;
    *) echo nodewatch-agent ;;
  esac
}
packages_for() {
  case $1 in
    aarch64-unknown-linux-gnu) echo "-p nodewatch-agent -p nodewatch-exporters" ;;
    *) echo "-p nodewatch-agent" ;;
  esac
}

nw_require_root
nw_host_deps
nw_lock
t0=$SECONDS
nw_ensure_chroot
nw_mount

dist=$NW_DIST
build_dir=$NW_TARGET_DIR
linking="dynamic glibc, linked against $NW_GLIBC_SUITE's"
if ((!static)); then
  nw_ensure_glibc_sysroot
  NW_EXTRA_ENV=(
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$(nw_glibc_rustflags aarch64-unknown-linux-gnu)"
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="$(nw_glibc_rustflags armv7-unknown-linux-gnueabihf)"
  )
else
  dist=$NW_TARGET_DIR/dist-static
  # Its own cargo target directory: the dynamic binaries that image/debs.sh packages
  # from target/cross/<triple>/dist are never replaced by static ones.
  build_dir=$NW_TARGET_DIR/static
  linking="static glibc"
  # Static glibc (libc.a of the cross libc6-dev packages): kept as an option only to
  # measure it against the dynamic build; NSS modules (host names) need the dynamic one.
  NW_EXTRA_ENV=(
    CARGO_TARGET_DIR="$build_dir"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
  )
fi
mkdir -p "$dist"

declare -A BUILD_TIME
for t in "${TARGETS[@]}"; do
  read -r -a packages <<<"$(packages_for "$t")"
  nw_log "building ${packages[*]} for $t ($linking)"
  start=$SECONDS
  # Profile `dist` (size-optimised, fat LTO): what we ship and package; see the
  # workspace Cargo.toml.
  nw_chroot_cargo build --profile dist --locked "${packages[@]}" --target "$t"
  BUILD_TIME[$t]=$(nw_elapsed "$start")
  prefix=$(nw_gnu_prefix "$t")
  for bin in $(binaries_for "$t"); do
    out="$dist/$bin-$t"
    rm -f "$out"
    # the profile strips already; strip again with the cross binutils to be sure
    nw_chroot_run "$prefix-strip" -o "$out" "$build_dir/$t/dist/$bin"
  done
done

# Size in bytes of section $3 of binary $2 (0 when absent), by the cross readelf $1.
section_bytes() {
  local size
  size=$(nw_chroot_run "$1-readelf" -SW "$2" | awk -v name="$3" '{ sub(/^ *\[ *[0-9]+\] */, "") } $1 == name { print $5 }')
  echo $((16#${size:-0}))
}

echo
echo "=== cross builds, $linking (total $(nw_elapsed "$t0"))"
failed=0
for t in "${TARGETS[@]}"; do
  prefix=$(nw_gnu_prefix "$t")
  echo "--- $t (build time ${BUILD_TIME[$t]})"
  for bin in $(binaries_for "$t"); do
    out="$dist/$bin-$t"
    bytes=$(stat -c %s "$out")
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
    glibc=$(nw_chroot_run "$prefix-objdump" -T "$out" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
    echo "  $bin"
    echo "    file:        ${out#"$NW_REPO"/}"
    echo "    size:        $bytes bytes ($mb MiB, stripped)"
    echo "    newest glibc symbol: ${glibc:-none (statically linked)}"
    echo "    needs:       $(nw_chroot_run "$prefix-readelf" -d "$out" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ' -)"
    echo "    $(file -b "$out")"
    if [[ $t == aarch64-unknown-linux-gnu && $bin == nodewatch-agent ]] && ((bytes > MAX_AARCH64_AGENT_BYTES)); then
      echo "error: stripped aarch64 agent is $bytes bytes ($mb MiB), over the limit of $MAX_AARCH64_AGENT_BYTES bytes ($((MAX_AARCH64_AGENT_BYTES / 1048576)) MiB)" >&2
      failed=1
    fi
    if [[ $bin == nodewatch-agent ]]; then
      hot=$(section_bytes "$prefix" "$out" .text.hot)
      echo "    hot code:    $((hot / 1024)) KiB laid out first, of $(((hot + $(section_bytes "$prefix" "$out" .text)) / 1024)) KiB"
      if ((hot < MIN_AGENT_HOT_CODE_BYTES)); then
        echo "error: the agent for $t has $hot bytes in .text.hot, under $MIN_AGENT_HOT_CODE_BYTES: agent/hot-code.txt matched too little on this target" >&2
        failed=1
      fi
    fi
    if ((!static)); then
      if [[ -z $glibc ]]; then
        echo "error: $bin for $t has no dynamic glibc symbols: not the dynamic build we ship" >&2
        failed=1
      elif [[ $(printf '%s\n' "${glibc#GLIBC_}" "$MAX_GLIBC" | sort -V | tail -n 1) != "$MAX_GLIBC" ]]; then
        echo "error: $bin for $t needs $glibc, newer than glibc $MAX_GLIBC (bookworm)" >&2
        failed=1
      fi
    fi
  done
done
exit "$failed"
