#!/usr/bin/env bash
# Cross-build nodewatch-agent for the Raspberry Pi in a cached Debian sid chroot.
# usage: cross/build.sh [TARGET...]
#   TARGET: aarch64-unknown-linux-gnu (64-bit Pi OS), armv7-unknown-linux-gnueabihf (32-bit)
#   default: both. Outputs: target/cross/dist/nodewatch-agent-<TARGET> (stripped).
# Fails if the stripped aarch64 binary is larger than 6 MiB. See cross/README.md.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_AARCH64_BYTES=$((6 * 1024 * 1024))
DEFAULT_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

case ${1:-} in
  -h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${DEFAULT_TARGETS[@]}")
for t in "${TARGETS[@]}"; do nw_gnu_prefix "$t" >/dev/null; done

nw_require_root
nw_host_deps
nw_lock
t0=$SECONDS
nw_ensure_chroot
nw_mount
mkdir -p "$NW_DIST"

declare -A BUILD_TIME
for t in "${TARGETS[@]}"; do
  nw_log "building nodewatch-agent for $t"
  start=$SECONDS
  # Profile `dist` (size-optimised, fat LTO) and a static binary: what we ship; see
  # the workspace Cargo.toml for why (binary size is most of the agent's RSS).
  NW_EXTRA_ENV=(
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
  )
  nw_chroot_cargo build --profile dist --locked -p nodewatch-agent --target "$t"
  BUILD_TIME[$t]=$(nw_elapsed "$start")
  prefix=$(nw_gnu_prefix "$t")
  out="$NW_DIST/nodewatch-agent-$t"
  rm -f "$out"
  # the profile strips already; strip again with the cross binutils to be sure
  nw_chroot_run "$prefix-strip" -o "$out" "$NW_TARGET_DIR/$t/dist/nodewatch-agent"
done

echo
echo "=== nodewatch-agent cross builds (total $(nw_elapsed "$t0"))"
too_big=0
for t in "${TARGETS[@]}"; do
  prefix=$(nw_gnu_prefix "$t")
  out="$NW_DIST/nodewatch-agent-$t"
  bytes=$(stat -c %s "$out")
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
  # A static binary has no dynamic symbols: no glibc floor.
  glibc=$(nw_chroot_run "$prefix-objdump" -T "$out" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
  echo "--- $t"
  echo "  file:        ${out#"$NW_REPO"/}"
  echo "  build time:  ${BUILD_TIME[$t]}"
  echo "  size:        $bytes bytes ($mb MiB, stripped)"
  echo "  newest glibc symbol: ${glibc:-none (statically linked)}"
  echo "  $(file -b "$out")"
  if [[ $t == aarch64-unknown-linux-gnu ]] && ((bytes > MAX_AARCH64_BYTES)); then
    echo "error: stripped aarch64 binary is $bytes bytes ($mb MiB), over the limit of $MAX_AARCH64_BYTES bytes ($((MAX_AARCH64_BYTES / 1048576)) MiB)" >&2
    too_big=1
  fi
done
exit "$too_big"
