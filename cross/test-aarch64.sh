#!/usr/bin/env bash
# Run nodewatch-agent's unit tests built for aarch64, executed under qemu-user, in the
# cached Debian sid cross chroot (created if missing, as by cross/build.sh).
# usage: cross/test-aarch64.sh [EXTRA CARGO TEST ARGS...]   e.g. --release, a test name filter,
#   or `-- --nocapture`. Exits non-zero if a test fails. See cross/README.md.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=aarch64-unknown-linux-gnu

case ${1:-} in
  -h | --help) sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

nw_require_root
nw_host_deps
nw_lock
t0=$SECONDS
nw_ensure_chroot
nw_mount

# qemu-user inside the chroot runs the test binary; -L points it at the aarch64 loader/libc.
# The workspace is mounted at the same path as on the host, so env!("CARGO_MANIFEST_DIR")
# fixture paths compiled into the tests stay valid.
qemu=$(nw_chroot_run /bin/sh -c 'command -v qemu-aarch64-static || command -v qemu-aarch64' || true)
[[ -n $qemu ]] || nw_die "no qemu-aarch64 in the chroot $NW_XROOT (delete it to rebuild)"
NW_EXTRA_ENV=("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=$qemu -L /usr/aarch64-linux-gnu")

log="$NW_TARGET_DIR/test-aarch64.log"
mkdir -p "$NW_TARGET_DIR"
nw_log "cargo test -p nodewatch-agent --lib --target $TARGET (tests run under $qemu)"
rc=0
nw_chroot_cargo test --locked -p nodewatch-agent --lib --target "$TARGET" "$@" 2>&1 | tee "$log" || rc=$?

echo
echo "=== aarch64 unit tests under qemu-user: $(nw_elapsed "$t0") (log: ${log#"$NW_REPO"/})"
grep -E '^test result:|^error(\[|:)' "$log" || echo "no test summary (did the build fail?)"
if ((rc)); then
  echo "FAILED (exit $rc)" >&2
fi
exit "$rc"
