#!/bin/sh
# Set up the Jetson image: the runtimes and the runner (install-runtime.sh), and trtexec on
# PATH. JetPack's TensorRT ships trtexec in /usr/src/tensorrt/bin, off PATH.
#   install.sh DEST
# TENSORRT_BIN (default /usr/src/tensorrt/bin), BIN_DIR (default /usr/local/bin) and
# REQUIREMENTS (default requirements.txt here; e.g. one pinning onnxruntime-gpu) can be changed;
# PYTHON as for install-runtime.sh.
set -eu
dest=${1:?usage: install.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
tensorrt_bin=${TENSORRT_BIN:-/usr/src/tensorrt/bin}
bin_dir=${BIN_DIR:-/usr/local/bin}

"$here/../install-runtime.sh" "${REQUIREMENTS:-$here/requirements.txt}" "$dest"

if [ ! -x "$tensorrt_bin/trtexec" ]; then
  echo "jetson/install.sh: no trtexec in $tensorrt_bin (is this a JetPack image?)" >&2
  exit 1
fi
mkdir -p "$bin_dir"
ln -sf "$tensorrt_bin/trtexec" "$bin_dir/trtexec"
"$bin_dir/trtexec" --help >/dev/null 2>&1 || {
  echo "jetson/install.sh: $bin_dir/trtexec does not run" >&2; exit 1; }
echo "trtexec: $bin_dir/trtexec -> $tensorrt_bin/trtexec"
