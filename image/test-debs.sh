#!/usr/bin/env bash
# shellcheck disable=SC2016  # dpkg-query formats and scripts for bash -c are literal
# Tests of nodewatch's five .deb packages in target/deb/ (built by image/debs.sh when
# missing): control fields, lintian, the units (systemd-analyze verify and security), and
# install / upgrade / purge of the amd64 packages in a Debian bookworm chroot, including
# the agent's install while another program (Debian's node_exporter) holds its port.
# usage: image/test-debs.sh      (root; installs what it needs with apt-get)
# Settings: NODEWATCH_DEBTEST_CACHE (default /var/cache/nodewatch) for the cached chroot,
# NODEWATCH_DEBTEST_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cross/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DEB_DIR=$REPO/target/deb
CACHE=${NODEWATCH_DEBTEST_CACHE:-/var/cache/nodewatch}
CACHE=${CACHE%/}
MIRROR=${NODEWATCH_DEBTEST_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Exposure ceilings of `systemd-analyze security` (issue: agent <= 3.0, exporters <= 2.0).
MAX_EXPOSURE_AGENT=3.0
MAX_EXPOSURE_EXPORTER=2.0
MAX_GLIBC=2.36
HOST_PACKAGES=(lintian mmdebstrap dpkg-dev systemd debian-archive-keyring util-linux
  iproute2 file prometheus-node-exporter)
# The chroot: enough for `apt-get install ./x.deb` of our packages with no download.
CHROOT_PACKAGES=(systemd passwd)
CHROOT_VERSION=1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { local s=$((SECONDS - $1)); printf '%dm %02ds' $((s / 60)) $((s % 60)); }
passed=0
failed=0
ok() { printf 'ok: %s\n' "$*"; passed=$((passed + 1)); }
bad() { printf 'FAILED: %s\n' "$*" >&2; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
not() { ! "$@"; }
indent() { sed 's/^/  /'; }
declare -a STEPS=()
step_done() { STEPS+=("$(printf '%-52s %s' "$1" "$(elapsed "$2")")"); }

[[ $(id -u) -eq 0 ]] || die "must run as root (chroot, mounts, apt-get)"
t0=$SECONDS

# --- host tools ------------------------------------------------------------------------
start=$SECONDS
nw_apt_install "${HOST_PACKAGES[@]}"
step_done "host packages" "$start"

# --- the packages ----------------------------------------------------------------------
start=$SECONDS
shopt -s nullglob
debs=("$DEB_DIR"/nodewatch-agent_*.deb "$DEB_DIR"/nodewatch-exporters_*.deb)
shopt -u nullglob
if ((${#debs[@]} != 5)); then
  log "target/deb has ${#debs[@]} of the 5 packages: building them (image/debs.sh)"
  bash "$REPO/image/debs.sh"
  debs=("$DEB_DIR"/nodewatch-agent_*.deb "$DEB_DIR"/nodewatch-exporters_*.deb)
fi
((${#debs[@]} == 5)) || die "expected 5 packages in target/deb, found ${#debs[@]}"
step_done "packages present" "$start"

deb_of() { # deb_of PACKAGE ARCH
  local f
  for f in "${debs[@]}"; do
    [[ ${f##*/} == "$1"_*_"$2".deb ]] && { echo "$f"; return 0; }
  done
  die "no $1 package for $2 in target/deb"
}

WORK=$(mktemp -d /tmp/nodewatch-debtest.XXXXXX)
ROOT=
cleanup() {
  if [[ -n $ROOT ]]; then
    umount -R "$ROOT/dev" 2>/dev/null || true
    umount "$ROOT/proc" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# --- control fields: Architecture, Depends, conffiles, the binaries' machine -------------
start=$SECONDS
echo
echo "=== dpkg-deb -I"
machine_of() { # the `file` word for a Debian architecture's binaries
  case $1 in
    amd64) echo x86-64 ;;
    arm64) echo aarch64 ;;
    armhf) echo "ARM, EABI5" ;;
  esac
}
for spec in nodewatch-agent:amd64 nodewatch-agent:arm64 nodewatch-agent:armhf \
  nodewatch-exporters:amd64 nodewatch-exporters:arm64; do
  package=${spec%%:*}
  arch=${spec#*:}
  deb=$(deb_of "$package" "$arch")
  fields=$(dpkg-deb -f "$deb" Package Architecture Depends)
  printf '%s (%s bytes)\n' "${deb##*/}" "$(stat -c %s "$deb")"
  indent <<<"$fields"
  check "$package $arch: Package field" test "$(dpkg-deb -f "$deb" Package)" = "$package"
  check "$package $arch: Architecture $arch" test "$(dpkg-deb -f "$deb" Architecture)" = "$arch"
  depends=$(dpkg-deb -f "$deb" Depends)
  libc=$(sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p' <<<"$depends")
  check "$package $arch: Depends has libc6 (>= X) from dpkg-shlibdeps (X = ${libc:-none})" test -n "$libc"
  check "$package $arch: needs glibc ${libc:-?} <= $MAX_GLIBC" \
    dpkg --compare-versions "${libc:-99}" le "$MAX_GLIBC"
  check "$package $arch: Depends has systemd and passwd" \
    grep -Eq '(^|, )systemd(,|$).*passwd|passwd.*(^|, )systemd(,|$)' <<<"$depends"
  tree=$WORK/tree-$package-$arch
  dpkg-deb -x "$deb" "$tree"
  if [[ $package == nodewatch-agent ]]; then
    bins=(nodewatch-agent)
    conffiles=(/etc/nodewatch/agent.toml)
  else
    bins=(nodewatch-wallet-exporter nodewatch-reward-exporter)
    conffiles=(/etc/nodewatch/wallet-exporter.toml /etc/nodewatch/reward-exporter.toml)
  fi
  for bin in "${bins[@]}"; do
    desc=$(file -b "$tree/usr/bin/$bin")
    check "$package $arch: $bin is a dynamically linked $(machine_of "$arch") ELF" \
      grep -q "$(machine_of "$arch").*dynamically linked" <<<"$desc"
  done
  listed=$(dpkg-deb -I "$deb" conffiles)
  for c in "${conffiles[@]}"; do
    check "$package $arch: $c is a conffile" grep -qx "$c" <<<"$listed"
  done
done
# The units are the same files in every architecture's package.
same3() { cmp -s "$1" "$2" && cmp -s "$1" "$3"; }
for unit in usr/lib/systemd/system/nodewatch-agent.service \
  usr/lib/systemd/system/nodewatch-agent.service.d/docker.conf; do
  check "$unit identical in amd64, arm64, armhf" \
    same3 "$WORK/tree-nodewatch-agent-amd64/$unit" \
    "$WORK/tree-nodewatch-agent-arm64/$unit" "$WORK/tree-nodewatch-agent-armhf/$unit"
done
for unit in nodewatch-wallet-exporter.service nodewatch-reward-exporter.service; do
  check "$unit identical in amd64, arm64" cmp -s \
    "$WORK/tree-nodewatch-exporters-amd64/usr/lib/systemd/system/$unit" \
    "$WORK/tree-nodewatch-exporters-arm64/usr/lib/systemd/system/$unit"
done
step_done "dpkg-deb checks" "$start"

# --- lintian ---------------------------------------------------------------------------
start=$SECONDS
echo
echo "=== lintian"
for deb in "${debs[@]}"; do
  out=$(lintian --fail-on error --display-level '>=info' "$deb" 2>&1) && rc=0 || rc=$?
  printf '%s: %s\n' "${deb##*/}" "$( [[ -n $out ]] && echo "" || echo "no tags")"
  [[ -z $out ]] || indent <<<"$out"
  check "lintian: no errors in ${deb##*/}" test "$rc" -eq 0
done
step_done "lintian (5 packages)" "$start"

# --- systemd-analyze security ----------------------------------------------------------
start=$SECONDS
echo
echo "=== systemd-analyze security --offline=true (exposure, lower is better)"
exposure() {
  systemd-analyze security --offline=true "$1" 2>/dev/null |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p'
}
agent_tree=$WORK/tree-nodewatch-agent-amd64
exporters_tree=$WORK/tree-nodewatch-exporters-amd64
declare -A LIMIT=(
  [$agent_tree/usr/lib/systemd/system/nodewatch-agent.service]=$MAX_EXPOSURE_AGENT
  [$exporters_tree/usr/lib/systemd/system/nodewatch-wallet-exporter.service]=$MAX_EXPOSURE_EXPORTER
  [$exporters_tree/usr/lib/systemd/system/nodewatch-reward-exporter.service]=$MAX_EXPOSURE_EXPORTER
)
printf '%-40s %s\n' unit exposure
units=("$agent_tree/usr/lib/systemd/system/nodewatch-agent.service"
  "$exporters_tree/usr/lib/systemd/system/nodewatch-wallet-exporter.service"
  "$exporters_tree/usr/lib/systemd/system/nodewatch-reward-exporter.service")
for unit in "${units[@]}"; do
  e=$(exposure "$unit")
  printf '%-40s %s (target <= %s)\n' "${unit##*/}" "${e:-?}" "${LIMIT[$unit]}"
  check "${unit##*/}: exposure ${e:-?} <= ${LIMIT[$unit]}" \
    awk -v e="${e:-99}" -v m="${LIMIT[$unit]}" 'BEGIN { exit !(e <= m) }'
done
ne_unit=/lib/systemd/system/prometheus-node-exporter.service
printf '%-40s %s (Debian, for comparison)\n' "${ne_unit##*/}" "$(exposure "$ne_unit")"
step_done "systemd-analyze security" "$start"

# --- the bookworm chroot (cached, keyed on its inputs) ----------------------------------
start=$SECONDS
base=$CACHE/debtest-$SUITE-amd64
stamp_text=$(printf 'nodewatch-debtest %s\nsuite %s\nmirror %s\npackages %s\n' \
  "$CHROOT_VERSION" "$SUITE" "$MIRROR" "${CHROOT_PACKAGES[*]}")
mkdir -p "$CACHE"
exec {lock_fd}>"$base.lock"
flock "$lock_fd"
if [[ ! -f $base/.nodewatch-debtest-stamp ]] || [[ $(cat "$base/.nodewatch-debtest-stamp") != "$stamp_text" ]]; then
  log "creating the Debian $SUITE amd64 test chroot $base"
  rm -rf "$base" "$base.new"
  # The archive may be a frozen snapshot: don't reject its Release file as expired.
  mmdebstrap --variant=apt --architectures=amd64 \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$(IFS=,; echo "${CHROOT_PACKAGES[*]}")" \
    "$SUITE" "$base.new" "$MIRROR" </dev/null
  printf '%s\n' "$stamp_text" >"$base.new/.nodewatch-debtest-stamp"
  mv "$base.new" "$base"
fi
ROOT=$WORK/root
cp -a "$base" "$ROOT"
flock -u "$lock_fd"
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
# Maintainer scripts see a running systemd (they then ask to start units) and every start
# goes through policy-rc.d, Debian's gate for services in chroots: it logs the request and
# refuses it (101). So the tests see whether postinst asked to start the agent; starting it
# for real is the boot test's part (image/boot-test.sh).
mkdir -p "$ROOT/run/systemd/system"
cat >"$ROOT/usr/sbin/policy-rc.d" <<'POLICY'
#!/bin/sh
echo "$*" >>/var/log/nodewatch-policy-rc.d.log
exit 101
POLICY
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
step_done "test chroot ($SUITE amd64, cached base)" "$start"

# Version 2 of the amd64 packages: the very same packages with a higher Version (repacked
# with dpkg-deb), so the upgrade test sees only what an upgrade itself does, whatever
# changed in the work tree since target/deb was built.
start=$SECONDS
agent1=$(deb_of nodewatch-agent amd64)
exporters1=$(deb_of nodewatch-exporters amd64)
v1=$(dpkg-deb -f "$agent1" Version)
v2=$v1.1
mkdir -p "$WORK/v2"
for deb in "$agent1" "$exporters1"; do
  unpacked=$WORK/repack-${deb##*/}
  dpkg-deb -R "$deb" "$unpacked"
  sed -i "s/^Version: .*/Version: $v2/" "$unpacked/DEBIAN/control"
  dpkg-deb -b "$unpacked" "$WORK/v2/" >/dev/null
done
agent2=$(echo "$WORK"/v2/nodewatch-agent_*_amd64.deb)
exporters2=$(echo "$WORK"/v2/nodewatch-exporters_*_amd64.deb)
check "upgrade packages are version $v2 > $v1" dpkg --compare-versions "$(dpkg-deb -f "$agent2" Version)" gt "$v1"
cp "$agent1" "$exporters1" "$agent2" "$exporters2" "$ROOT/tmp/"
step_done "version-2 packages (dpkg-deb repack)" "$start"

# in_root CMD...: run in the chroot, no stdin (a prompt would fail), apt non-interactive.
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}
# in_netns SCRIPT: run bash SCRIPT in a new network namespace (loopback only): nothing
# the packages do can reach the network, and :9100 there is ours to hold or leave free.
in_netns() {
  unshare --net -- bash -c 'ip link set lo up && eval "$1"' _ "$1"
}
policy_log=$ROOT/var/log/nodewatch-policy-rc.d.log

# --- install version 1 ------------------------------------------------------------------
start=$SECONDS
echo
echo "=== install $v1 (port 9100 free)"
: >"$policy_log"
out=$(in_netns "$(declare -f in_root); ROOT='$ROOT'; in_root apt-get install -y /tmp/${agent1##*/} /tmp/${exporters1##*/}" 2>&1) ||
  { echo "$out"; die "apt-get install of version 1 failed"; }
indent <<<"$out" | tail -n 20
check "install: agent's postinst asked to start it" grep -q 'nodewatch-agent.service start' "$policy_log"
check "install: the exporters were not started (not enabled until configured)" \
  not grep -q exporter "$policy_log"
check "install: the agent is enabled" \
  test -L "$ROOT/etc/systemd/system/multi-user.target.wants/nodewatch-agent.service"
check "install: the exporters are not enabled" \
  not compgen -G "$ROOT/etc/systemd/system/multi-user.target.wants/nodewatch-*-exporter.service"
check "install: user nodewatch, no login shell, home /var/lib/nodewatch" \
  test "$(in_root getent passwd nodewatch | cut -d: -f6,7)" = /var/lib/nodewatch:/usr/sbin/nologin
groups=$(in_root id -nG nodewatch)
for g in nodewatch gpio i2c spi dialout; do
  check "install: nodewatch is in group $g ($groups)" grep -qw "$g" <<<"$groups"
done
check "install: nodewatch is not in group docker (the unit's drop-in grants it)" \
  not grep -qw docker <<<"$groups"
check "install: group docker exists for the drop-in" in_root getent group docker
check "install: /var/lib/nodewatch owned by nodewatch, 0750" \
  test "$(in_root stat -c '%U:%G %a' /var/lib/nodewatch)" = "nodewatch:nodewatch 750"
check "install: wallet-exporter.toml root:nodewatch 0640" \
  test "$(in_root stat -c '%U:%G %a' /etc/nodewatch/wallet-exporter.toml)" = "root:nodewatch 640"
check "install: udev rules for gpio, i2c-dev, spidev" \
  grep -c 'GROUP="\(gpio\|i2c\|spi\)"' "$ROOT/usr/lib/udev/rules.d/60-nodewatch-hardware.rules"
step_done "install $v1" "$start"

start=$SECONDS
echo
echo "=== systemd-analyze verify (bookworm's systemd, in the chroot)"
for unit in nodewatch-agent.service nodewatch-wallet-exporter.service nodewatch-reward-exporter.service; do
  vout=$(in_root systemd-analyze verify --man=no "$unit" 2>&1) && rc=0 || rc=$?
  [[ -z $vout ]] || indent <<<"$vout"
  check "systemd-analyze verify $unit" test "$rc" -eq 0 -a -z "$vout"
done
step_done "systemd-analyze verify" "$start"

# --- upgrade to version 2, keeping the operator's edits and the state --------------------
start=$SECONDS
echo
echo "=== upgrade $v1 -> $v2"
echo '# edited by the operator (upgrade test)' >>"$ROOT/etc/nodewatch/agent.toml"
sed -i 's/^interval_seconds = 300$/interval_seconds = 120/' "$ROOT/etc/nodewatch/wallet-exporter.toml"
grep -q '^interval_seconds = 120$' "$ROOT/etc/nodewatch/wallet-exporter.toml" || die "could not edit wallet-exporter.toml"
echo "acknowledged=1" >"$ROOT/var/lib/nodewatch/upgrade-test.state"
: >"$policy_log"
out=$(in_netns "$(declare -f in_root); ROOT='$ROOT'; in_root apt-get install -y /tmp/${agent2##*/} /tmp/${exporters2##*/}" 2>&1) ||
  { echo "$out"; die "upgrade to version 2 failed (a prompt fails too: no stdin)"; }
indent <<<"$out" | tail -n 12
check "upgrade: both packages at $v2" \
  test "$(in_root dpkg-query -W -f='${Version}\n' nodewatch-agent nodewatch-exporters | sort -u)" = "$v2"
check "upgrade: no conffile prompt" not grep -qi "configuration file" <<<"$out"
check "upgrade: the edit of agent.toml survived" \
  grep -qx '# edited by the operator (upgrade test)' "$ROOT/etc/nodewatch/agent.toml"
check "upgrade: the edit of wallet-exporter.toml survived" \
  grep -qx 'interval_seconds = 120' "$ROOT/etc/nodewatch/wallet-exporter.toml"
check "upgrade: wallet-exporter.toml still root:nodewatch 0640" \
  test "$(in_root stat -c '%U:%G %a' /etc/nodewatch/wallet-exporter.toml)" = "root:nodewatch 640"
check "upgrade: the state survived" grep -qx 'acknowledged=1' "$ROOT/var/lib/nodewatch/upgrade-test.state"
check "upgrade: the agent is still enabled" \
  test -L "$ROOT/etc/systemd/system/multi-user.target.wants/nodewatch-agent.service"
step_done "upgrade to $v2" "$start"

# --- purge -------------------------------------------------------------------------------
start=$SECONDS
echo
echo "=== purge"
out=$(in_root apt-get purge -y nodewatch-agent 2>&1) || { echo "$out"; die "purge of nodewatch-agent failed"; }
check "purge agent: /var/lib/nodewatch removed" test ! -e "$ROOT/var/lib/nodewatch"
check "purge agent: user kept while nodewatch-exporters is installed" in_root getent passwd nodewatch
check "purge agent: agent.toml removed" test ! -e "$ROOT/etc/nodewatch/agent.toml"
out=$(in_root apt-get purge -y nodewatch-exporters 2>&1) || { echo "$out"; die "purge of nodewatch-exporters failed"; }
check "purge both: user nodewatch removed" not in_root getent passwd nodewatch
check "purge both: group nodewatch removed" not in_root getent group nodewatch
check "purge both: /etc/nodewatch removed" test ! -e "$ROOT/etc/nodewatch"
check "purge both: no statoverride left" not grep -q nodewatch <<<"$(in_root dpkg-statoverride --list)"
check "purge both: units and drop-in removed" not compgen -G "$ROOT/usr/lib/systemd/system/nodewatch-*"
check "purge both: no enablement links left" not compgen -G "$ROOT/etc/systemd/system/*/nodewatch-*"
step_done "purge" "$start"

# --- install while node_exporter holds :9100 ---------------------------------------------
start=$SECONDS
echo
echo "=== install $v2 while prometheus-node-exporter listens on :9100"
: >"$policy_log"
# Debian's node_exporter (the host's package), in the same network namespace as the
# install; its PID is printed first so the script can stop it.
script=$(
  cat <<SCRIPT
$(declare -f in_root)
ROOT='$ROOT'
/usr/bin/prometheus-node-exporter --web.listen-address=:9100 --collector.disable-defaults >/dev/null 2>&1 &
ne=\$!
for _ in \$(seq 50); do
  grep -q ':238C .* 0A ' /proc/net/tcp6 /proc/net/tcp 2>/dev/null && break
  sleep 0.1
done
in_root apt-get install -y /tmp/${agent2##*/} && rc=0 || rc=\$?
kill \$ne
wait \$ne 2>/dev/null || true
exit \$rc
SCRIPT
)
out=$(in_netns "$script" 2>&1) && rc=0 || rc=$?
indent <<<"$out" | tail -n 12
check "port taken: apt-get install exits 0" test "$rc" -eq 0
check "port taken: postinst names the port and the holder" \
  grep -q 'NOT started: TCP port 9100 is already in use by prometheus-node (pid [0-9]*)' <<<"$out"
check "port taken: postinst did not ask to start the agent" not grep -q "nodewatch-agent.service start" "$policy_log"
check "port taken: the package is installed and configured" \
  test "$(in_root dpkg-query -W -f='${db:Status-Abbrev}' nodewatch-agent)" = "ii "
check "port taken: the agent is enabled (starts at boot, exits 98 without a restart loop if the port is still taken)" \
  test -L "$ROOT/etc/systemd/system/multi-user.target.wants/nodewatch-agent.service"
check "the unit does not retry exit status 78 or 98" \
  grep -qx 'RestartPreventExitStatus=78 98' "$ROOT/usr/lib/systemd/system/nodewatch-agent.service"
step_done "install with :9100 taken" "$start"

echo
echo "=== time per step (total $(elapsed "$t0"))"
printf '%s\n' "${STEPS[@]}"
echo
echo "$passed passed, $failed failed"
((failed == 0))
