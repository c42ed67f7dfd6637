#!/bin/sh
# Set up the Jetson image: the runtimes and the runner (install-runtime.sh), and trtexec on
# PATH. JetPack's TensorRT ships trtexec in /usr/src/tensorrt/bin, off PATH.
#   install.sh DEST
# ONNXRUNTIME: `gpu` (default) installs requirements-gpu.txt, whose onnxruntime-gpu comes from
# NVIDIA's Jetson AI Lab index ORT_INDEX_URL (default: the one for JetPack 6 / CUDA 12.6), and
# checks that it has the CUDA provider; `cpu` installs requirements.txt (PyPI's onnxruntime).
# TENSORRT_BIN (default /usr/src/tensorrt/bin), BIN_DIR (default /usr/local/bin) and
# REQUIREMENTS (default: the file ONNXRUNTIME picks) can be changed; PYTHON as for
# install-runtime.sh.
set -eu
dest=${1:?usage: install.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
tensorrt_bin=${TENSORRT_BIN:-/usr/src/tensorrt/bin}
bin_dir=${BIN_DIR:-/usr/local/bin}
onnxruntime=${ONNXRUNTIME:-gpu}
index=${ORT_INDEX_URL:-https://pypi.jetson-ai-lab.io/jp6/cu126}
python=${PYTHON:-python3}

case $onnxruntime in
  cpu)
    "$here/../install-runtime.sh" "${REQUIREMENTS:-$here/requirements.txt}" "$dest" ;;
  gpu)
    # PyPI has no aarch64 onnxruntime-gpu, so the pinned one can only come from this index;
    # when it cannot, the build stops here rather than install something else.
    PIP_EXTRA_INDEX_URL=$index "$here/../install-runtime.sh" \
      "${REQUIREMENTS:-$here/requirements-gpu.txt}" "$dest" || {
      echo "jetson/install.sh: could not install onnxruntime-gpu from $index (NVIDIA's" \
           "Jetson AI Lab index for JetPack 6 / CUDA 12.6; see docker/README.md, jetson)." \
           "Give the right index with --build-arg ORT_INDEX_URL=..., or build the CPU-only" \
           "image with --build-arg ONNXRUNTIME=cpu." >&2
      exit 1; }
    "$python" -c "import onnxruntime, sys
providers = onnxruntime.get_available_providers()
print('onnxruntime providers:', ', '.join(providers))
sys.exit('CUDAExecutionProvider' not in providers)" || {
      echo "jetson/install.sh: the onnxruntime from $index has no CUDA provider" >&2; exit 1; }
    ;;
  *)
    echo "jetson/install.sh: ONNXRUNTIME must be gpu or cpu, not $onnxruntime" >&2; exit 2 ;;
esac

if [ ! -x "$tensorrt_bin/trtexec" ]; then
  echo "jetson/install.sh: no trtexec in $tensorrt_bin (is this a JetPack image?)" >&2
  exit 1
fi
mkdir -p "$bin_dir"
ln -sf "$tensorrt_bin/trtexec" "$bin_dir/trtexec"
"$bin_dir/trtexec" --help >/dev/null 2>&1 || {
  echo "jetson/install.sh: $bin_dir/trtexec does not run" >&2; exit 1; }
echo "trtexec: $bin_dir/trtexec -> $tensorrt_bin/trtexec"
