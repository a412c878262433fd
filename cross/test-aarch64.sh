#!/usr/bin/env bash
# Tests of the aarch64 build under qemu-user, in the cached Debian sid cross chroot
# (created if missing, as by cross/build.sh):
#  1. nodewatch-agent's unit tests built for aarch64;
#  2. host names: the shipped agent (target/cross/dist, made by cross/build.sh when missing)
#     checks a builder health URL whose host name exists only in an /etc/hosts entry
#     (bind-mounted in a mount namespace), against an HTTP server on 127.0.0.1.
# usage: cross/test-aarch64.sh [EXTRA CARGO TEST ARGS...]   e.g. --release, a test name filter,
#   or `-- --nocapture`. Exits non-zero if a test fails. See cross/README.md.
# NODEWATCH_HOSTS_TEST_BINARY=FILE runs step 2 on another aarch64 agent (e.g. a static one).
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=aarch64-unknown-linux-gnu
# A name no DNS answers (RFC 6761 reserves .invalid): only /etc/hosts can resolve it.
TEST_HOST=builder.nodewatch-hosts-test.invalid

case ${1:-} in
  -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

nw_require_root
agent=${NODEWATCH_HOSTS_TEST_BINARY:-$NW_DIST/nodewatch-agent-$TARGET}
agent=$(realpath -m "$agent")
[[ $agent == "$NW_REPO"/* ]] || nw_die "$agent: the agent must be inside the workspace (mounted in the chroot)"
if [[ ! -x $agent ]]; then
  [[ -z ${NODEWATCH_HOSTS_TEST_BINARY:-} ]] || nw_die "$agent: not found"
  nw_log "no $agent: building it (cross/build.sh $TARGET)"
  bash "$NW_REPO/cross/build.sh" "$TARGET"
fi
python=/usr/bin/python3
[[ -x $python ]] || nw_die "no $python (the test's HTTP server; apt-get install python3)"

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
# Left out here only: the mount-table test makes its private mount namespace's "/"
# private, and in this chroot "/" is no mount point (EINVAL); it runs in the native suite.
nw_chroot_cargo test --locked -p nodewatch-agent --lib --target "$TARGET" "$@" -- \
  --skip collectors::filesystem::tests::the_procfs_mount_table_is_read_again_when_the_kernel_marks_a_change \
  2>&1 | tee "$log" || rc=$?
unit_time=$(nw_elapsed "$t0")

# --- host names through /etc/hosts --------------------------------------------------------
t1=$SECONDS
NW_EXTRA_ENV=()
work=$(mktemp -d "$NW_TARGET_DIR/hosts-test.XXXXXX")
server_pid=
agent_pid=
# shellcheck disable=SC2317  # called from the EXIT trap
stop_hosts_test() {
  [[ -z $agent_pid ]] || kill "$agent_pid" 2>/dev/null || true
  [[ -z $server_pid ]] || kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap 'stop_hosts_test; nw_umount' EXIT

# The builder stand-in: answers every GET with a JSON object, as the builder's
# /health-check does, and logs each request's Host header. It binds a free port on
# 127.0.0.1 and writes it to a file.
"$python" - "$work/server.port" "$work/server.log" <<'PY' &
import http.server, sys
port_file, log_file = sys.argv[1], sys.argv[2]
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log_file, "a") as log:
            log.write(f"GET {self.path} Host: {self.headers.get('Host')}\n")
        body = b'{"version":"hosts-test"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Health)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
server_pid=$!
for _ in $(seq 100); do [[ -s $work/server.port ]] && break; sleep 0.1; done
[[ -s $work/server.port ]] || nw_die "the test HTTP server did not start"
server_port=$(cat "$work/server.port")
agent_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

printf '127.0.0.1\tlocalhost\n127.0.0.1\t%s\n' "$TEST_HOST" >"$work/hosts"
mkdir -p "$work/state"
cat >"$work/agent.toml" <<TOML
state_dir = "$work/state"
[web]
listen_address = "127.0.0.1:$agent_port"
[collectors]
disable_defaults = true
enable = ["intmax_builder"]
[docker]
socket = "$work/no-docker.sock"
[builder]
health_url = "http://$TEST_HOST:$server_port/health-check"
health_interval_secs = 1.0
[display]
enabled = false
[button]
enabled = false
[alerts]
enabled = false
[alerts.buzzer]
enabled = false
TOML

nw_log "hosts test: $(basename "$agent") under qemu-aarch64, health_url http://$TEST_HOST:$server_port/ (/etc/hosts only)"
# In its own mount namespace, the chroot's /etc/hosts is replaced by the test's for the
# agent alone (made on the host side: the chroot's / is no mount point to make private);
# qemu -L finds no etc/hosts in the aarch64 prefix and falls back to it.
# shellcheck disable=SC2016  # expanded by that sh
unshare --mount --propagation private -- /bin/sh -c \
  'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$work/hosts" "$NW_XROOT/etc/hosts" \
  chroot "$NW_XROOT" /usr/bin/env -i PATH=/usr/bin:/bin LANG=C.UTF-8 \
  "$qemu" -L /usr/aarch64-linux-gnu "$agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent_pid=$!

hosts_ok=0
health=
for _ in $(seq 120); do
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    echo "the agent exited early:" >&2
    cat "$work/agent.log" >&2
    break
  fi
  health=$("$python" - "http://127.0.0.1:$agent_port/metrics" <<'PY' || true
import sys, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
except Exception:
    sys.exit(0)
print("\n".join(l for l in body.splitlines() if l.startswith("intmax_builder_health_ok")))
PY
)
  if [[ $health =~ \}\ 1$ ]] && grep -q "Host: $TEST_HOST:$server_port" "$work/server.log" 2>/dev/null; then
    hosts_ok=1
    break
  fi
  sleep 0.5
done
echo
echo "=== host names (/etc/hosts) under qemu-user: $(nw_elapsed "$t1")"
echo "  agent:   ${agent#"$NW_REPO"/} ($(file -b "$agent" | cut -d, -f1-2,5))"
echo "  metric:  ${health:-none}"
echo "  server:  $(head -n 1 "$work/server.log" 2>/dev/null || echo 'no request')"
if ((hosts_ok)); then
  echo "  ok: $TEST_HOST resolved from /etc/hosts and the health check reached the server"
else
  echo "  FAILED: the agent did not reach http://$TEST_HOST:$server_port/ through /etc/hosts" >&2
  echo "  agent log (last lines):" >&2
  tail -n 20 "$work/agent.log" >&2
  rc=1
fi

echo
echo "=== aarch64 unit tests under qemu-user: $unit_time (log: ${log#"$NW_REPO"/})"
grep -E '^test result:|^error(\[|:)' "$log" || echo "no test summary (did the build fail?)"
if ((rc)); then
  echo "FAILED (exit $rc)" >&2
fi
exit "$rc"
