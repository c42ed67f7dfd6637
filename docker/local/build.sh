#!/bin/sh
# Build one of the images with buildah on a machine that reaches package registries but no
# container registry: the Dockerfile's BASE is a local stand-in (base.sh), and every other step
# of the Dockerfile runs for real, RUN steps in a chroot (buildah's chroot isolation, for hosts
# where an OCI runtime cannot start containers), arm64 ones under qemu through binfmt.
#   build.sh workstation|device-arm64|jetson [BUILDAH-BUD-OPTION...]
# Tags localhost/edgekd/IMAGE:standin and ends with one line: the time it took and its size.
# Options go to `buildah bud`, e.g. --build-arg ONNXRUNTIME=cpu. Needs root, buildah,
# debootstrap, and qemu-user-static for the arm64 images. Run from anywhere.
# EDGEKD_CA_BUNDLE: a CA bundle that RUN steps must trust (a TLS-intercepting proxy between
# this machine and PyPI): mounted at /etc/edgekd-build-ca.crt and named as pip's `cert` in an
# /etc/pip.conf, during the build only; the image keeps neither. (Not over the image's own
# /etc/ssl/certs/ca-certificates.crt: apt's ca-certificates trigger rewrites that file.)
set -eu
usage="usage: build.sh workstation|device-arm64|jetson [BUILDAH-BUD-OPTION...]"
image=${1:?$usage}
shift
here=$(cd "$(dirname "$0")" && pwd)
case $image in
  workstation) flavour=python arch=amd64 ;;
  device-arm64) flavour=python arch=arm64 ;;
  jetson) flavour=jetpack arch=arm64 ;;
  *) echo "build.sh: unknown image $image; $usage" >&2; exit 2 ;;
esac
if [ "$arch" != "$(dpkg --print-architecture 2>/dev/null || echo amd64)" ]; then
  "$here/binfmt.sh"
fi
base=$("$here/base.sh" "$flavour" "$arch")
tag=localhost/edgekd/$image:standin
cd "$here/../.."
old=$(buildah images --quiet "$tag" 2>/dev/null || true)
if [ -n "${EDGEKD_CA_BUNDLE:-}" ]; then
  pipconf=$(mktemp)
  trap 'rm -f "$pipconf"' EXIT
  printf '[global]\ncert = /etc/edgekd-build-ca.crt\n' >"$pipconf"
  chmod 644 "$pipconf"
  set -- --volume "$EDGEKD_CA_BUNDLE:/etc/edgekd-build-ca.crt:ro" \
    --volume "$pipconf:/etc/pip.conf:ro" "$@"
fi
start=$(date +%s)
buildah bud --isolation chroot --pull=never --arch "$arch" --build-arg "BASE=$base" \
  --ignorefile "docker/$image/Dockerfile.dockerignore" -f "docker/$image/Dockerfile" \
  -t "$tag" "$@" .
seconds=$(($(date +%s) - start))
# The previous build of this tag would otherwise stay behind, untagged (the workstation: 8 GB).
new=$(buildah images --quiet "$tag")
[ -z "$old" ] || [ "$old" = "$new" ] || buildah rmi "$old" >/dev/null 2>&1 || true
size=$(buildah images --noheading --format '{{.Size}}' "$tag" | head -n 1)
echo "build.sh: built $tag ($arch) in $seconds s, $size, on $base"
