#!/usr/bin/env bash
# Install the Debian packages the device tests use, when they are missing and we can.
set -u
want=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || want+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 && command -v scp >/dev/null 2>&1 || want+=(openssh-client)
command -v adb >/dev/null 2>&1 || want+=(adb)
command -v qemu-aarch64-static >/dev/null 2>&1 || want+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
command -v fakeroot >/dev/null 2>&1 || want+=(fakeroot)  # validate-arch as a non-root user
# tests/docker/test_images.py: images built with buildah (chroot isolation), arm64 under qemu
command -v buildah >/dev/null 2>&1 || want+=(buildah)
# tests/test_report_html.py: report.html screenshotted by headless Chromium
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test tools: ${want[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}") \
    >/tmp/edgekd-apt.log 2>&1 || echo "apt-get failed (see /tmp/edgekd-apt.log); tests needing ${want[*]} will skip"
else
  echo "not root or no apt-get: tests needing ${want[*]} will skip"
fi
exit 0
