#!/bin/sh
# Install the workstation image's Debian packages (packages.txt) and create its non-root user.
#   system.sh          install (as root, in the image)
#   system.sh --check  only resolve the package list with apt-get --simulate; changes nothing
set -eu
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/packages.txt" | tr '\n' ' ')
user=${EDGEKD_USER:-edgekd}
uid=${EDGEKD_UID:-1000}

if [ "${1:-}" = "--check" ]; then
  # shellcheck disable=SC2086  # one word per package
  apt-get install --simulate --no-install-recommends $packages >/dev/null
  echo "ok: $(echo $packages | wc -w) packages resolve"
  exit 0
fi

apt-get update
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages
rm -rf /var/lib/apt/lists/*
id "$user" >/dev/null 2>&1 || useradd --create-home --uid "$uid" --shell /bin/bash "$user"
# Mount points: /work (runs), /data (datasets), /cache (validate-arch's arm64 root, pip).
mkdir -p /work /data /cache
chown "$user:$user" /work /cache
