#!/usr/bin/env bash
# Boots the flashable image itself under qemu-system-aarch64 (-M virt, TCG) with its own
# kernel, initrd and cmdline.txt from its boot partition, after writing a test nodewatch/
# folder onto that partition as an operator would, and checks what an operator relies on.
# usage: image/boot-test.sh target/image/nodewatch-pi-arm64.img.zst   (as root)
# Env: NODEWATCH_BOOT_TIMEOUT (seconds to the first good scrape per boot, default 420),
#      NODEWATCH_BOOT_KEEP=1 (keep the work dir and the serial console logs).
# Prints "N passed, N failed" and the seconds from qemu start to the first good scrape.
set -euo pipefail
# shellcheck source=image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  -h | --help | '') sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; [[ -n ${1:-} ]]; exit ;;
esac
image_zst=$(realpath "$1")
timeout_secs=${NODEWATCH_BOOT_TIMEOUT:-420}
node=nw-boot-test

nw_require_root
nw_apt_install qemu-system-arm ipxe-qemu mtools fdisk zstd openssh-client curl jq iproute2

work=$(mktemp -d /tmp/nodewatch-boot-test.XXXXXX)
qemu_pid=
cleanup() {
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [[ ${NODEWATCH_BOOT_KEEP:-0} == 1 ]]; then
    nw_log "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok   - %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL - %s\n' "$1"; [[ -z ${2:-} ]] || printf '       %s\n' "$2"; }
# check NAME COMMAND...: passes when the command succeeds.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(tail -n 5 <<<"$out")"; fi
}

# A loopback port nothing listens on.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    [[ -z $(ss -Hltn "sport = :$port") ]] && { echo "$port"; return; }
  done
}

# --- the image, as a user gets it ---------------------------------------------------------
nw_log "checking and unpacking ${image_zst##*/}"
(cd "$(dirname "$image_zst")" && sha256sum --quiet -c "${image_zst##*/}.sha256")
disk="$work/disk.img"
zstd -q -d "$image_zst" -o "$disk"
# Byte offsets and sizes of the two partitions, from the partition table.
read -r fat_start _ root_sectors < <(sfdisk -d "$disk" | awk -F'[=,]' '
  /start=/ { gsub(/ /, ""); s[++n] = $2; z[n] = $4 } END { print s[1], s[2], z[2] }')
fat="$disk@@$((fat_start * 512))"
root_bytes_before=$((root_sectors * 512))
export MTOOLS_SKIP_CHECK=1

# A card larger than the image: the root partition must grow into it at first boot.
truncate -s +1G "$disk"

# --- the operator's nodewatch/ folder -------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C nodewatch-boot-test -f "$work/id_ed25519"
metrics_port=$(free_port)
ssh_port=$(free_port)
while [[ $ssh_port == "$metrics_port" ]]; do ssh_port=$(free_port); done
mkdir "$work/folder"
echo "$node" >"$work/folder/hostname"
cp "$work/id_ed25519.pub" "$work/folder/authorized_keys"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/folder/lora.key"
cat >"$work/folder/wpa_supplicant.conf" <<'EOF'
country=DE
network={
  ssid="nodewatch-test"
  psk="not-a-real-network"
}
EOF
# The builder's health URL names this node by its host name: it resolves through
# /etc/hosts (written by the import), which the shipped binary must be able to read.
cat >"$work/folder/agent.toml" <<EOF
[builder]
health_url = "http://$node:9100/api/health"

[lora]
enabled = true
network_key_file = "/etc/nodewatch/lora.key"
EOF
mcopy -i "$fat" "$work/folder"/* ::nodewatch/

# The kernel, initrd and command line the Pi's firmware would use.
kernel=$(mdir -b -i "$fat" ::/ | grep -o 'vmlinuz-[^ ]*' | sort -V | tail -n 1)
initrd=$(mdir -b -i "$fat" ::/ | grep -o 'initrd.img-[^ ]*' | sort -V | tail -n 1)
[[ -n $kernel && -n $initrd ]] || nw_die "no vmlinuz-*/initrd.img-* on the boot partition"
mcopy -i "$fat" "::$kernel" "::$initrd" ::cmdline.txt "$work/"
cmdline=$(tr -d '\r\n' <"$work/cmdline.txt")
nw_log "kernel $kernel, cmdline: $cmdline"

# --- helpers for a running VM -----------------------------------------------------------------
boot() { # boot LOG_NAME: starts qemu; sets qemu_pid and boot_started
  # restrict=on: the guest reaches nothing but the two forwarded loopback ports.
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic \
    -kernel "$work/$kernel" -initrd "$work/$initrd" \
    -append "$cmdline console=ttyAMA0" \
    -drive "if=virtio,format=raw,file=$disk" \
    -device virtio-rng-pci \
    -netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$metrics_port-:9100,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
    -device virtio-net-pci,netdev=net0 \
    </dev/null >"$work/$1.log" 2>&1 &
  qemu_pid=$!
  boot_started=$(date +%s.%N)
}

metrics() { curl -fsS --max-time 5 "http://127.0.0.1:$metrics_port/metrics"; }

# Waits for a complete /metrics answer; prints the seconds since qemu started.
wait_for_metrics() {
  local deadline=$((SECONDS + timeout_secs)) body
  while ((SECONDS < deadline)); do
    kill -0 "$qemu_pid" 2>/dev/null || { echo "qemu exited" >&2; return 1; }
    if body=$(metrics 2>/dev/null) && grep -q '^node_uname_info' <<<"$body"; then
      awk -v s="$boot_started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", e - s }'
      return 0
    fi
    sleep 1
  done
  echo "no /metrics within ${timeout_secs}s" >&2
  return 1
}

ssh_options=(-i "$work/id_ed25519" -p "$ssh_port" -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10)
ssh_pi() { ssh "${ssh_options[@]}" -o BatchMode=yes pi@127.0.0.1 "$@"; }

wait_for_ssh() {
  local deadline=$((SECONDS + 120))
  until ssh_pi true 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 2
  done
}

# A metric's value, by name and a label fragment, from one scrape.
metric_value() {
  metrics | awk -v n="$1" -v l="$2" 'index($0, n) == 1 && index($0, l) { print $NF; exit }'
}

# Polls until metric_value NAME LABEL equals VALUE (collectors run on intervals).
wait_metric() {
  local deadline=$((SECONDS + 60)) got=
  while ((SECONDS < deadline)); do
    got=$(metric_value "$1" "$2" || true)
    [[ $got == "$3" ]] && return 0
    sleep 2
  done
  echo "$1{$2} is \"$got\", expected $3"
  return 1
}

shutdown_vm() {
  ssh_pi sudo systemctl poweroff >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 120))
  while kill -0 "$qemu_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    fail "the node powers off within 120 s"
    kill "$qemu_pid"
  fi
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
}

fat_has() { mdir -b -i "$fat" ::nodewatch/ 2>/dev/null | grep -q "/$1\$"; }

# --- first boot -----------------------------------------------------------------------------
nw_log "first boot (qemu-system-aarch64, TCG; metrics on 127.0.0.1:$metrics_port, ssh on :$ssh_port)"
boot first-boot
if first_scrape=$(wait_for_metrics); then
  pass "first boot: /metrics answers (first good scrape ${first_scrape}s after qemu start)"
else
  fail "first boot: /metrics answers" "$(tail -n 20 "$work/first-boot.log")"
  echo "$passed passed, $failed failed"
  exit 1
fi
check "node_uname_info carries the host name from the boot partition" \
  bash -c "curl -fsS --max-time 5 http://127.0.0.1:$metrics_port/metrics | grep -F 'node_uname_info{' | grep -F 'nodename=\"$node\"'"
check "/api/health answers with a status" \
  bash -c "curl -sS --max-time 5 http://127.0.0.1:$metrics_port/api/health | jq -e '.status | test(\"healthy|degraded\")'"
check "the agent resolves a host name from /etc/hosts (builder health URL by name)" \
  wait_metric intmax_builder_health_ok "node=\"$node\"" 1
check "SSH login with the key from the boot partition" wait_for_ssh
password_try=$(ssh "${ssh_options[@]}" -o BatchMode=yes -o PubkeyAuthentication=no \
  -o PreferredAuthentications=password,keyboard-interactive pi@127.0.0.1 true 2>&1 || true)
if grep -q 'Permission denied (publickey)' <<<"$password_try"; then
  pass "password and keyboard-interactive logins are refused (server offers publickey only)"
else
  fail "password and keyboard-interactive logins are refused" "$password_try"
fi
check "user pi has sudo without a password" ssh_pi sudo -n true
check "lora.key moved to /etc/nodewatch/lora.key, mode 600, owned by the service user" \
  bash -c "[[ \$(ssh ${ssh_options[*]} -o BatchMode=yes pi@127.0.0.1 sudo stat -c '%a:%U' /etc/nodewatch/lora.key) == 600:nodewatch ]]"
check "Wi-Fi settings installed root-only" \
  bash -c "[[ \$(ssh ${ssh_options[*]} -o BatchMode=yes pi@127.0.0.1 sudo stat -c '%a:%U' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf) == 600:root ]]"
service=$(ssh_pi systemctl show nodewatch-agent -p Type -p User -p ActiveState -p WatchdogUSec -p NRestarts 2>&1 || true)
for want in Type=notify User=nodewatch ActiveState=active NRestarts=0; do
  if grep -qx "$want" <<<"$service"; then pass "nodewatch-agent.service: $want"; else fail "nodewatch-agent.service: $want" "$service"; fi
done
if grep -Eq '^WatchdogUSec=[1-9]' <<<"$service"; then pass "nodewatch-agent.service: watchdog on"; else fail "nodewatch-agent.service: watchdog on" "$service"; fi
root_now=$(ssh_pi lsblk -bno SIZE "\$(findmnt -no SOURCE /)" 2>&1 || true)
fs_now=$(ssh_pi df -B1 --output=size / 2>&1 | tail -n 1 | tr -d ' ' || true)
if [[ $root_now =~ ^[0-9]+$ && $fs_now =~ ^[0-9]+$ ]] && ((root_now > root_bytes_before + 900 * 1048576 && fs_now > root_bytes_before)); then
  pass "root partition and file system grew to fill the card ($root_bytes_before -> $root_now bytes)"
else
  fail "root partition and file system grew to fill the card" "partition $root_now, file system $fs_now, image partition $root_bytes_before"
fi
# The agent does not wait for Docker at boot: it follows the engine once its socket is up.
check "Docker engine running, and the agent's docker collector reads it" \
  bash -c "for _ in \$(seq 45); do
    curl -fsS --max-time 5 http://127.0.0.1:$metrics_port/api/health/detailed | jq -e '.collectors.docker.ok == true' && exit 0
    sleep 2
  done; exit 1"
# Under the hardened unit (system call filter, devices, read-only system) every collector
# works; `pi` has no data off a Pi (qemu's virt machine) and is the only one allowed to fail.
check "every collector but pi succeeds under the hardened unit" \
  bash -c "curl -fsS --max-time 5 http://127.0.0.1:$metrics_port/api/health/detailed |
    jq -e '[.collectors | to_entries[] | select(.value.ok != true) | .key] - [\"pi\"] | if length == 0 then true else (tostring | halt_error) end'"
check "SSH host keys generated on the node" ssh_pi test -s /etc/ssh/ssh_host_ed25519_key.pub
# A figure, not a check: the agent's resident memory on the image's own kernel, by
# mapping (docs/benchmarks.md, "Hot-code layout").
# shellcheck disable=SC2016  # expanded on the node
agent_memory=$(ssh_pi 'uname -r; sudo awk -f - "/proc/$(systemctl show -p MainPID --value nodewatch-agent)/smaps"' <<'AWK' 2>&1 | paste -sd' ' - || true
/^[0-9a-f]+-[0-9a-f]+ / { m = ($6 ~ /nodewatch-agent$/) ? "binary" : (($6 ~ /^\//) ? "libraries" : "anonymous") }
/^Rss:/ { kb[m] += $2; total += $2 }
END { printf "RSS %d KB: its binary %d, shared libraries %d, heap, stacks and other anonymous %d\n", total, kb["binary"], kb["libraries"], kb["anonymous"] }
AWK
)
nw_log "agent memory on the image, kernel $agent_memory"
# Port 9100 held by another program: the service fails once, clearly, and does not loop.
squat=$(ssh_pi 'sudo systemctl stop nodewatch-agent &&
  (sudo setsid nodewatch-agent --config /dev/null --collector.disable-defaults --web.listen-address=:9100 >/dev/null 2>&1 &) &&
  sleep 3 && sudo systemctl start nodewatch-agent; sleep 5;
  systemctl show nodewatch-agent -p ActiveState -p ExecMainStatus -p NRestarts;
  sudo journalctl -u nodewatch-agent -n 20 --no-pager -o cat;
  sudo pkill -f -- "--collector.disable-defaults"; sleep 1; sudo systemctl reset-failed nodewatch-agent; sudo systemctl start nodewatch-agent' 2>&1 || true)
if grep -qx 'ExecMainStatus=98' <<<"$squat" && grep -qx 'NRestarts=0' <<<"$squat" && grep -q '9100' <<<"$squat"; then
  pass "port 9100 taken: the service stops with status 98, a message naming the port, and no restart loop"
else
  fail "port 9100 taken: the service stops with status 98, a message naming the port, and no restart loop" "$squat"
fi
shutdown_vm
for f in authorized_keys lora.key wpa_supplicant.conf agent.toml hostname; do
  if fat_has "$f"; then fail "nodewatch/$f is gone from the boot partition"; else pass "nodewatch/$f is gone from the boot partition"; fi
done
check "import-report.txt written to the boot partition" fat_has import-report.txt

# --- second boot: a broken agent.toml must not brick the node -------------------------------------
printf '[web]\nlisten_adress = ":9100"\n' >"$work/broken.toml"
mcopy -i "$fat" "$work/broken.toml" ::nodewatch/agent.toml
nw_log "second boot, with a broken agent.toml on the boot partition"
boot second-boot
if second_scrape=$(wait_for_metrics); then
  pass "second boot with a broken agent.toml: /metrics answers (${second_scrape}s)"
  check "the import error shows in /api/health/detailed with file:line:column" \
    bash -c "curl -fsS --max-time 5 http://127.0.0.1:$metrics_port/api/health/detailed |
      jq -e '.config_import.ok == false and (.config_import.error | test(\"agent.toml:[0-9]+:[0-9]+\"))'"
  check "the installed configuration was kept (health URL by name still set)" \
    wait_metric intmax_builder_health_ok "node=\"$node\"" 1
  wait_for_ssh || true
  check "the error is in the journal" \
    bash -c "ssh ${ssh_options[*]} -o BatchMode=yes pi@127.0.0.1 sudo journalctl -b -u nodewatch-import --no-pager | grep -q 'agent.toml'"
  shutdown_vm
  check "the broken file was renamed agent.toml.rejected" fat_has agent.toml.rejected
else
  fail "second boot with a broken agent.toml: /metrics answers" "$(tail -n 20 "$work/second-boot.log")"
fi

echo
echo "boot test: first good scrape ${first_scrape}s after qemu start (first boot), ${second_scrape:-?}s (second boot); target <= 120 s under TCG"
echo "$passed passed, $failed failed"
((failed == 0))
