#!/bin/sh
# Install a device image's inference runtimes and edgekd's device runner, then check that the
# runner sees the runtimes. Shared by the device-arm64 and jetson images.
#   install-runtime.sh REQUIREMENTS DEST
# REQUIREMENTS pins numpy, onnxruntime and ai-edge-litert; runner.py is copied to DEST.
# PYTHON (default python3) is the interpreter that gets them.
set -eu
requirements=${1:?usage: install-runtime.sh REQUIREMENTS DEST}
dest=${2:?usage: install-runtime.sh REQUIREMENTS DEST}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
runner="$here/../edgekd/devices/runner.py"

"$python" -m pip install --no-cache-dir -r "$requirements"
mkdir -p "$dest"
cp "$runner" "$dest/runner.py"

# The runner must find every runtime the requirements name, or the image is broken.
found=$("$python" "$dest/runner.py" --list-runtimes)
echo "$found"
for wanted in ai_edge_litert onnxruntime; do
  case "$found" in
    *"\"$wanted\""*) ;;
    *) echo "install-runtime.sh: the runner does not see $wanted" >&2; exit 1 ;;
  esac
done
