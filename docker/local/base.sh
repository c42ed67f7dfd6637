#!/bin/sh
# Make a stand-in for an image's base where no container registry is reachable, from Debian's
# package registry, and print its name. It gives what the real base gives the Dockerfile, and no
# more; the differences are listed in docker/README.md ("Stand-in bases").
#   base.sh python ARCH    for python:3.11-slim-bookworm: Debian bookworm (minbase) with
#                          python3, pip and venv, usable system-wide as in the official image
#                          (no EXTERNALLY-MANAGED marker; `python` and `pip` on PATH)
#   base.sh jetpack arm64  for nvcr.io/nvidia/l4t-jetpack: bookworm with python3 (no pip, no
#                          marker, as on Ubuntu 22.04) and a stand-in for TensorRT's trtexec
# ARCH is a Debian architecture (amd64, arm64); arm64 on an x86 machine needs binfmt.sh first.
# The image (localhost/edgekd-standin/FLAVOUR:bookworm-ARCH) stays in buildah's storage,
# labelled with a hash of this script and its arguments, and is reused while that matches.
# EDGEKD_DEBIAN_MIRROR picks another Debian mirror. Needs root, buildah and debootstrap.
set -eu
usage="usage: base.sh python|jetpack ARCH"
flavour=${1:?$usage}
arch=${2:?$usage}
mirror=${EDGEKD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
case $flavour in
  python) packages=python3,python3-pip,python3-venv,ca-certificates ;;
  jetpack) packages=python3,ca-certificates ;;
  *) echo "base.sh: unknown flavour $flavour; $usage" >&2; exit 2 ;;
esac
name=localhost/edgekd-standin/$flavour:bookworm-$arch
key=$({ cat "$0"; echo "$flavour $arch $mirror"; } | sha256sum | cut -c1-16)

have=$(buildah inspect --type image \
  --format '{{index .OCIv1.Config.Labels "org.edgekd.standin.key"}}' "$name" 2>/dev/null || true)
if [ "$have" = "$key" ]; then
  echo "$name"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/edgekd-standin.XXXXXX")
ctr=""
mounted() {  # mount points under $1, deepest first (debootstrap mounts /proc, /sys, /dev)
  awk -v top="$1/" 'index($2, top) == 1 { print $2 }' /proc/mounts | sort -r
}
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  for point in $(mounted "$work"); do umount -l "$point" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
root=$work/rootfs
start=$(date +%s)
echo "base.sh: making $name from $mirror (once; a few minutes)" >&2
debootstrap --arch="$arch" --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  echo "base.sh: debootstrap failed (log above)" >&2
  exit 1; }

# Both real bases let pip install system-wide: python:*-slim has its own Python in /usr/local,
# Ubuntu 22.04 has no marker. A diversion keeps Debian's marker away across package upgrades.
for marker in "$root"/usr/lib/python3*/EXTERNALLY-MANAGED; do
  [ -e "$marker" ] || continue
  chroot "$root" dpkg-divert --quiet --local --rename --add "${marker#"$root"}"
done
case $flavour in
  python)
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
    [ -e "$root/usr/bin/pip" ] || ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip" ;;
  jetpack)
    # JetPack 6.1's TensorRT 10.3 has trtexec here; the real one is NVIDIA's binary.
    mkdir -p "$root/usr/src/tensorrt/bin"
    cat >"$root/usr/src/tensorrt/bin/trtexec" <<'EOF'
#!/bin/sh
# Stand-in for TensorRT's trtexec (made by edgekd's docker/local/base.sh): its banner and exit
# status, in trtexec's own format. The real binary needs an NVIDIA GPU.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
echo "=== Model Options ==="
echo "  --onnx=<file>               ONNX model"
EOF
    chmod 755 "$root/usr/src/tensorrt/bin/trtexec" ;;
esac
# The same package sources as the official Debian images; no lists or caches, as in them.
if [ "$mirror" = http://deb.debian.org/debian ]; then
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
fi
if [ -n "$(mounted "$root")" ]; then
  echo "base.sh: still mounted after debootstrap: $(mounted "$root")" >&2
  exit 1
fi
rm -rf --one-file-system "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/dev/* "$root/etc/resolv.conf" \
  "$root/etc/hostname"

ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
tar -C "$root" -cf - . | tar -C "$mnt" -xpf - --numeric-owner
buildah umount "$ctr" >/dev/null
buildah config --arch "$arch" --os linux --cmd python3 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --label "org.edgekd.standin.key=$key" --label "org.edgekd.standin.flavour=$flavour" "$ctr"
old=$(buildah images --quiet "$name" 2>/dev/null || true)
buildah commit --quiet --rm "$ctr" "$name" >/dev/null
ctr=""
[ -z "$old" ] || buildah rmi "$old" >/dev/null 2>&1 || true
echo "base.sh: made $name in $(($(date +%s) - start)) s" >&2
echo "$name"
