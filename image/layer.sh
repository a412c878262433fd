#!/usr/bin/env bash
# Layers nodewatch on a copy of the base rootfs (image/build.sh): the files of
# image/rootfs/, the agent package, the login user, boot settings, and the clean-up that
# makes every card its own machine (no host keys, no machine id).
# usage: layer.sh STAGE_DIR AGENT_DEB   (as root; arm64 programs run through qemu-user)
set -euo pipefail
stage=$1
agent_deb=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

in_root() { chroot "$stage" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

mount -t proc proc "$stage/proc"
trap 'umount "$stage/proc"; rm -f "$stage/usr/sbin/policy-rc.d"' EXIT
# Nothing starts inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$stage/usr/sbin/policy-rc.d"
chmod 755 "$stage/usr/sbin/policy-rc.d"

# --- files of the image (fstab, network, sshd, sudo, first-boot services) -------------
cp -r --preserve=mode,timestamps --no-preserve=ownership "$here/rootfs/." "$stage/"
chmod 0440 "$stage/etc/sudoers.d/010-pi-nopasswd"
chmod 0755 "$stage"/usr/libexec/nodewatch-image/*

# --- boot: Debian's kernel through the Pi firmware --------------------------------------
# raspi-firmware writes cmdline.txt and config.txt from these settings whenever a kernel
# is installed. Without ROOTPART it would name the build host's root; no serial console,
# so the UART stays free for a LoRa module.
sed -i -e 's|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|' \
  -e 's|^#\?CONSOLES=.*|CONSOLES="tty0"|' "$stage/etc/default/raspi-firmware"
# I2C for the OLED and SPI for a LoRa radio; the UART is enabled by raspi-firmware.
cat >"$stage/etc/default/raspi-firmware-custom" <<'EOF'
dtparam=i2c_arm=on
dtparam=spi=on
EOF
in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
grep -q 'root=LABEL=RASPIROOT' "$stage/boot/firmware/cmdline.txt" || {
  echo "error: cmdline.txt does not name root=LABEL=RASPIROOT: $(cat "$stage/boot/firmware/cmdline.txt")" >&2
  exit 1
}
grep -q '^dtparam=i2c_arm=on' "$stage/boot/firmware/config.txt" || {
  echo "error: config.txt lacks the I2C/SPI settings of /etc/default/raspi-firmware-custom" >&2
  exit 1
}

# --- the agent ----------------------------------------------------------------------------
cp "$agent_deb" "$stage/tmp/"
in_root dpkg -i "/tmp/${agent_deb##*/}"
rm -f "$stage/tmp/${agent_deb##*/}"
[[ -e $stage/etc/systemd/system/multi-user.target.wants/nodewatch-agent.service ]] ||
  in_root systemctl enable nodewatch-agent.service

# --- the login user: pi, SSH keys only, sudo without a password -----------------------
groups=()
for g in sudo adm systemd-journal gpio i2c spi dialout docker; do
  in_root getent group "$g" >/dev/null && groups+=("$g")
done
in_root useradd --create-home --shell /bin/bash --groups "$(IFS=,; echo "${groups[*]}")" pi
# A locked password ("!"): no password login anywhere, SSH public keys still work.
in_root passwd --lock pi >/dev/null
in_root passwd --lock root >/dev/null

# --- services -------------------------------------------------------------------------------
in_root systemctl enable systemd-networkd.service systemd-resolved.service \
  nodewatch-grow-rootfs.service nodewatch-import.service nodewatch-ssh-host-keys.service
# systemd-firstboot would prompt on the console on a headless node.
in_root systemctl mask systemd-firstboot.service
# Wi-Fi starts when wlan0 appears and the import has written its settings.
wants="$stage/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
mkdir -p "$wants" "$stage/etc/systemd/system/wpa_supplicant@wlan0.service.d"
ln -sf /usr/lib/systemd/system/wpa_supplicant@.service "$wants/wpa_supplicant@wlan0.service"
cat >"$stage/etc/systemd/system/wpa_supplicant@wlan0.service.d/nodewatch.conf" <<'EOF'
[Unit]
ConditionPathExists=/etc/wpa_supplicant/wpa_supplicant-wlan0.conf
EOF

# --- identity: every card its own -------------------------------------------------------
echo nodewatch >"$stage/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnodewatch\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$stage/etc/hosts"
rm -f "$stage"/etc/ssh/ssh_host_*
: >"$stage/etc/machine-id"
rm -f "$stage/var/lib/dbus/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$stage/etc/resolv.conf"

# --- the boot partition's nodewatch/ folder ---------------------------------------------
mkdir -p "$stage/boot/firmware/nodewatch"
cp "$here/boot-folder-README.txt" "$stage/boot/firmware/nodewatch/README.txt"

# --- what need not ship ---------------------------------------------------------------
rm -rf "$stage"/var/lib/apt/lists/* "$stage"/var/cache/apt/*.bin "$stage"/var/cache/apt/archives/*.deb
rm -rf "$stage"/tmp/* "$stage"/var/tmp/*
