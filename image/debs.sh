#!/usr/bin/env bash
# Build nodewatch's five Debian packages with cargo-deb into target/deb/:
#   nodewatch-agent_<version>_{amd64,arm64,armhf}.deb  nodewatch-exporters_<version>_{amd64,arm64}.deb
# usage: image/debs.sh [--deb-revision N]
#   amd64 natively (profile dist); arm64 and armhf from cross/build.sh's binaries, packaged
#   inside its Debian sid chroot, where dpkg-shlibdeps knows the ARM libraries.
# Runs as root (the cross chroot). See docs/packages.md.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cross/lib.sh"

HOST_TARGET=x86_64-unknown-linux-gnu
DEB_DIR=$NW_REPO/target/deb
revision=

while (($#)); do
  case $1 in
    -h | --help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --deb-revision) revision=${2:?--deb-revision needs a value}; shift 2 ;;
    *) nw_die "unknown argument: $1 (see --help)" ;;
  esac
done
revision_args=()
[[ -z $revision ]] || revision_args=(--deb-revision "$revision")

nw_require_root
[[ $(uname -m) == x86_64 ]] || nw_die "builds the amd64 packages natively: run on x86_64"
command -v cargo >/dev/null || nw_die "cargo not found (the workspace's toolchain, rustc 1.95+)"
t0=$SECONDS
declare -a STEPS=()
step_done() { STEPS+=("$(printf '%-44s %s' "$1" "$(nw_elapsed "$2")")"); }

# cargo-deb: a Cargo subcommand, installed once into cargo's bin directory.
start=$SECONDS
if ! cargo deb --version >/dev/null 2>&1; then
  nw_log "installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked
fi
cargo_deb=$(command -v cargo-deb || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deb")
[[ -x $cargo_deb ]] || nw_die "cargo-deb not found after installing it"
nw_log "$(cargo deb --version)"
step_done "cargo-deb" "$start"

mkdir -p "$DEB_DIR"
# Only this run's packages in target/deb (a stale version would be installed by a glob).
rm -f "$DEB_DIR"/nodewatch-agent_*.deb "$DEB_DIR"/nodewatch-exporters_*.deb

# amd64: cargo-deb builds (profile dist, dynamic glibc) and packages. `--target` keeps the
# binary where tests/src/bin/bench_agent.rs measures it, so both share one build.
for package in nodewatch-agent nodewatch-exporters; do
  start=$SECONDS
  nw_log "cargo deb -p $package --target $HOST_TARGET --profile dist"
  (cd "$NW_REPO" && cargo deb -p "$package" --target "$HOST_TARGET" --profile dist \
    "${revision_args[@]}" -o "$DEB_DIR/" -- --locked)
  step_done "$package amd64 (build + package)" "$start"
done

# arm64, armhf: the cross builds, then cargo-deb --no-build in the chroot.
start=$SECONDS
bash "$NW_REPO/cross/build.sh" aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
step_done "cross builds (cross/build.sh)" "$start"

start=$SECONDS
nw_host_deps
nw_lock
nw_mount
# The host's cargo-deb runs in the chroot (sid's glibc is newer than the host's).
install -m 0755 "$cargo_deb" "$NW_XROOT/usr/local/bin/cargo-deb"
for spec in nodewatch-agent:aarch64-unknown-linux-gnu \
  nodewatch-agent:armv7-unknown-linux-gnueabihf \
  nodewatch-exporters:aarch64-unknown-linux-gnu; do
  package=${spec%%:*}
  target=${spec#*:}
  nw_log "cargo deb -p $package --target $target --no-build (in the chroot)"
  nw_chroot_cargo deb -p "$package" --target "$target" --profile dist --no-build \
    "${revision_args[@]}" -o "$DEB_DIR/"
done
step_done "ARM packages (cargo-deb in the chroot)" "$start"

echo
echo "=== packages in ${DEB_DIR#"$NW_REPO"/} (total $(nw_elapsed "$t0"))"
count=0
for deb in "$DEB_DIR"/nodewatch-agent_*.deb "$DEB_DIR"/nodewatch-exporters_*.deb; do
  [[ -e $deb ]] || continue
  count=$((count + 1))
  printf '%-44s %9s bytes  Architecture: %-6s Depends: %s\n' "${deb##*/}" "$(stat -c %s "$deb")" \
    "$(dpkg-deb -f "$deb" Architecture)" "$(dpkg-deb -f "$deb" Depends)"
done
echo
echo "=== time per step"
printf '%s\n' "${STEPS[@]}"
((count == 5)) || nw_die "expected 5 packages in $DEB_DIR, found $count"
