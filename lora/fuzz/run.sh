#!/bin/sh
# Fuzzes the LoRa frame decoder for a bounded time, on the stable toolchain.
#
#   lora/fuzz/run.sh [SECONDS]    (default 30)
#
# Installs cargo-fuzz when it is missing. `-s none` builds without a sanitizer, which
# needs no nightly flags (safe Rust; the crate forbids unsafe code). Exits non-zero
# when the target finds a crash; the input is then in lora/fuzz/artifacts/.
set -eu

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

# cargo fuzz looks for fuzz/ under the crate it runs in.
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# A frame is at most 51 bytes: longer inputs only test the length check.
exec cargo fuzz run decode_frame -s none -- \
    -max_total_time="$seconds" -max_len=64 -print_final_stats=1
