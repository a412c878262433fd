#!/usr/bin/env bash
# The one test command: installs what the suite needs on a fresh Debian machine, then
# runs all of it — format, lints, unit tests, end-to-end tests with real components
# (node_exporter, Prometheus, promtool), and the ARM cross build with the aarch64 unit
# tests under qemu-user, and a bounded fuzzing run of every parser of outside input.
#
#   bash tests/run.sh            # everything
#   NODEWATCH_SKIP_CROSS=1 bash tests/run.sh   # skip the ARM part (local loops only)
#   NODEWATCH_SKIP_IMAGE=1 bash tests/run.sh   # skip the packages and the Pi image
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# Each step's heading says when it started and how long the previous one took, so the
# CI time budget can be watched.
step_started=$SECONDS
log() {
  local took=$((SECONDS - step_started))
  step_started=$SECONDS
  printf '\n=== %s (%s; previous step %dm %02ds)\n' "$*" "$(date +%H:%M:%S)" $((took / 60)) $((took % 60))
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

log "system packages"
# docker.io: the builder tests start their own dockerd (Debian's 20.10) on a private
# socket; gcc + libc6-dev build the static builder stub they import as an image;
# prometheus-alertmanager receives the LoRa gateway's alerts; openssh-server (sshd on a
# loopback port, started by the harness) and openssh-client serve the reward
# exporter's CLI-over-SSH source. docker-compose validates config/server/compose.yaml.
packages=(prometheus prometheus-node-exporter prometheus-alertmanager openssh-server openssh-client
  curl ca-certificates docker.io docker-compose gcc g++ libc6-dev shellcheck)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node + npm: the Scroll exporters' tests run anvil (a real EVM node) from npm. Any
# node ≥ 18 with npm will do (this machine may have NodeSource's, whose nodejs bundles npm).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -q
  # Keep Debian's packages from starting their services on install: Docker's own
  # daemon would create its default 172.x bridge (off limits here; the tests run a
  # private dockerd without one), and Prometheus/node_exporter would take 9090/9100.
  # policy-rc.d exit 101 = "action forbidden", honoured by invoke-rc.d and
  # deb-systemd-invoke. An existing policy is left alone.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    added_policy=1
  fi
  status=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || status=$?
  if [ "$added_policy" = 1 ]; then as_root rm -f "$policy"; fi
  [ "$status" = 0 ] || exit "$status"
fi
prometheus --version 2>&1 | head -1
prometheus-node-exporter --version 2>&1 | head -1
prometheus-alertmanager --version 2>&1 | head -1
/usr/sbin/sshd -V 2>&1 | head -1 || true
dockerd --version 2>&1 | head -1
echo "node $(node --version), npm $(npm --version)"

log "npm ci (anvil, solc-js) into target/npm"
# From the committed lock file; the harness (tests/src/evm.rs) does the same on first
# use if this step was skipped. NODEWATCH_NPM_DIR moves it.
npm_dir=${NODEWATCH_NPM_DIR:-target/npm}
mkdir -p "$npm_dir"
cp tests/evm/package.json tests/evm/package-lock.json "$npm_dir"/
(cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error)
"$npm_dir"/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil --version | head -1

log "rust toolchain"
cargo --version
rustup component list --installed 2>/dev/null | grep -E 'clippy|rustfmt' || true

log "cargo fmt --check"
cargo fmt --all -- --check

log "shellcheck (every shell script of the repository)"
# Tracked files only (a build's target/ holds none); -x follows `source`d files.
git ls-files -z -- '*.sh' 'image/rootfs/usr/libexec/nodewatch-image/*' 'image/deb/*/postinst' 'image/deb/*/postrm' |
  xargs -0 shellcheck -x

log "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

log "cargo deny (licenses, bans, sources)"
# deny.toml says what is allowed and why. Offline: these three checks need no advisory
# database, but `cargo metadata` needs every locked crate, those of other platforms
# (windows-sys, …) too, which a build on this machine never downloads: fetch them first.
# 0.20.2 builds with rustc 1.88 and later.
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
cargo fetch --locked
cargo deny --offline --locked check licenses bans sources

log "cargo test (unit and end-to-end)"
cargo test --locked --workspace --no-fail-fast

log "fuzz every parser of outside input (bounded, stable toolchain)"
# Every */fuzz/fuzz_targets/*.rs for NODEWATCH_FUZZ_SECS (default 20) each; cargo-fuzz
# is installed by the script when missing; libFuzzer is built with g++.
bash tests/fuzz.sh

if [ "${NODEWATCH_SKIP_CROSS:-0}" != 1 ]; then
  log "ARM cross build (aarch64, armv7)"
  bash cross/build.sh
  log "aarch64 unit tests under qemu-user"
  bash cross/test-aarch64.sh
fi

if [ "${NODEWATCH_SKIP_IMAGE:-0}" != 1 ]; then
  # The five .deb packages and the flashable Pi image (its base rootfs is cached under
  # /var/cache/nodewatch, keyed on its inputs: 15-25 min when it must be built).
  log "packages and Pi image (image/build.sh)"
  bash image/build.sh
  log "package checks: lintian, units, install/upgrade/purge (image/test-debs.sh)"
  bash image/test-debs.sh
  log "boot test of the image under qemu-system-aarch64 (image/boot-test.sh)"
  bash image/boot-test.sh target/image/nodewatch-pi-arm64.img.zst
fi

log "all tests passed (total $((SECONDS / 60)) min $((SECONDS % 60)) s)"
