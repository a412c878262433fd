#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target of the repository for a bounded time, on the stable
# toolchain (docs/fuzzing.md).
#
#   bash tests/fuzz.sh                 # every target
#   bash tests/fuzz.sh textfile ...    # only the targets named
#   NODEWATCH_FUZZ_SECS=60 bash tests/fuzz.sh   # seconds per target (default 20)
#
# A target is a file <crate>/fuzz/fuzz_targets/<name>.rs with its [[bin]] entry in
# <crate>/fuzz/Cargo.toml (`cargo fuzz add <name>` writes both): the script finds every
# such file, so adding a target needs no change here. Inputs in
# <crate>/fuzz/seeds/<name>/ (committed) start its corpus; what it finds is kept in
# <crate>/fuzz/corpus/<name>/ (not committed).
#
# Installs cargo-fuzz when it is missing. `-s none` builds without a sanitizer, which
# needs no nightly flags (the crates are safe Rust). Every target runs even when one
# fails; the script exits non-zero when any target crashed, hung or did not build, and
# the crashing input is then in <crate>/fuzz/artifacts/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${NODEWATCH_FUZZ_SECS:-20}
case "$seconds" in
  '' | *[!0-9]* | 0) echo "NODEWATCH_FUZZ_SECS must be a positive number of seconds" >&2; exit 2 ;;
esac

# One target directory for every fuzz crate: they are built with the same flags, so
# what they share (the workspace's crates, tokio, serde, ...) is built once. It lives
# in the machine's cache when that is writable, so a fresh clone does not rebuild
# every dependency with coverage instrumentation (~15 min on 2 cores); cargo's own
# fingerprints decide what is stale.
default_target_dir=$root/target/fuzz
if mkdir -p /var/cache/nodewatch/fuzz-target 2>/dev/null && [ -w /var/cache/nodewatch/fuzz-target ]; then
  default_target_dir=/var/cache/nodewatch/fuzz-target
fi
target_dir=${NODEWATCH_FUZZ_TARGET_DIR:-$default_target_dir}
logs=$target_dir/logs
mkdir -p "$logs"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# libFuzzer options of a target beyond the common ones.
target_options() {
  case "$1" in
    # A LoRa frame is at most 51 bytes: longer inputs only test the length check.
    decode_frame) echo "-max_len=64" ;;
    *) echo "" ;;
  esac
}

# The targets asked for, or every one.
wanted() {
  [ $# -le 1 ] && return 0
  local name=$1
  shift
  local w
  for w in "$@"; do [ "$w" = "$name" ] && return 0; done
  return 1
}

failed=()
summary=()
started=$SECONDS
for fuzz_dir in */fuzz; do
  [ -f "$fuzz_dir/Cargo.toml" ] || continue
  targets=()
  for file in "$fuzz_dir"/fuzz_targets/*.rs; do
    [ -e "$file" ] || continue
    name=$(basename "$file" .rs)
    wanted "$name" "$@" && targets+=("$name")
  done
  [ ${#targets[@]} -gt 0 ] || continue

  # cargo fuzz looks for fuzz/ under the crate it runs in.
  crate_dir=$(dirname "$fuzz_dir")
  listed=$(cd "$crate_dir" && cargo fuzz list)
  # The main workspace's `cargo fmt --all` does not see the fuzz crates.
  if ! cargo fmt --check --manifest-path "$fuzz_dir/Cargo.toml" >&2; then
    failed+=("$fuzz_dir (cargo fmt)")
  fi
  build_started=$SECONDS
  echo "--- building $fuzz_dir" >&2
  if ! (cd "$crate_dir" && cargo fuzz build -s none --target-dir "$target_dir"); then
    failed+=("$fuzz_dir (build)")
    continue
  fi
  summary+=("$(printf '%-28s built in %ds' "$fuzz_dir" $((SECONDS - build_started)))")

  for name in "${targets[@]}"; do
    if ! grep -qx "$name" <<<"$listed"; then
      echo "$fuzz_dir/fuzz_targets/$name.rs has no [[bin]] in $fuzz_dir/Cargo.toml" >&2
      failed+=("$name (not in Cargo.toml)")
      continue
    fi
    corpus=$root/$fuzz_dir/corpus/$name
    mkdir -p "$corpus"
    dirs=("$corpus")
    [ -d "$root/$fuzz_dir/seeds/$name" ] && dirs+=("$root/$fuzz_dir/seeds/$name")
    log=$logs/$name.log
    echo "--- fuzzing $name for ${seconds}s" >&2
    # shellcheck disable=SC2046 # target_options gives zero or more separate words.
    if (cd "$crate_dir" && cargo fuzz run "$name" -s none --target-dir "$target_dir" "${dirs[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 $(target_options "$name")) \
      >"$log" 2>&1; then
      result=ok
    else
      result=FAILED
      failed+=("$name")
      tail -n 60 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-28s %-6s %12s execs in %ss' "$name" "$result" "${execs:-?}" "$seconds")")
  done
done

if [ $# -gt 0 ] && [ ${#summary[@]} -eq 0 ] && [ ${#failed[@]} -eq 0 ]; then
  echo "no fuzz target named $* (*/fuzz/fuzz_targets/*.rs)" >&2
  exit 2
fi
echo "--- fuzzing summary (total $((SECONDS - started))s)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]} (crashing inputs under */fuzz/artifacts/, logs in $logs)" >&2
  exit 1
fi
