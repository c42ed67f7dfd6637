#!/bin/sh
# Let this x86 machine run arm64 programs inside a build's chroot: qemu-aarch64-static
# registered with binfmt_misc and its F flag (the kernel opens the interpreter once, here, so it
# need not exist inside the image). Needs root; changes nothing when already registered.
#   binfmt.sh          register (or enable) qemu-aarch64
#   binfmt.sh --check  exit 0 when registered with the F flag, 1 when not; changes nothing
set -eu
dir=/proc/sys/fs/binfmt_misc
entry=$dir/qemu-aarch64
# ELF64, little-endian, e_machine 183 (aarch64): Debian's /usr/share/binfmts/qemu-aarch64.
magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

registered() {
  [ -r "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags:.*F' "$entry"
}

if registered; then
  exit 0
fi
[ "${1:-}" = --check ] && exit 1

qemu=$(command -v qemu-aarch64-static) || {
  echo "binfmt.sh: needs qemu-aarch64-static (Debian package qemu-user-static)" >&2; exit 1; }
[ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" || {
  echo "binfmt.sh: cannot mount binfmt_misc on $dir (not root, or not allowed here)" >&2
  exit 1; }
if [ -e "$entry" ]; then
  if grep -q '^flags:.*F' "$entry"; then
    echo 1 > "$entry"  # registered (Debian's binfmt-support) but disabled
  else
    echo -1 > "$entry"  # registered without F: it would not work inside a chroot
  fi
fi
registered || printf ':qemu-aarch64:M::%s:%s:%s:F\n' "$magic" "$mask" "$qemu" > "$dir/register"
registered || { echo "binfmt.sh: qemu-aarch64 did not register" >&2; exit 1; }
echo "binfmt.sh: qemu-aarch64 registered ($qemu, $(sed -n 's/^flags: //p' "$entry"))" >&2
