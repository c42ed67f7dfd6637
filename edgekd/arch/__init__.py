"""Validate a model on another CPU architecture without its hardware.

`validate(model, "arm64", data)` runs edgekd's device runner with the arm64 builds of the
runtimes under qemu user-mode emulation (a cached, debootstrapped arm64 Debian root; no Docker,
no binfmt) and with the native builds here, and compares the logits.
"""

from edgekd.arch.validate import UsageError, validate

__all__ = ["UsageError", "validate"]
