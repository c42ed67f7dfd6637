"""The one exception device code raises, kept in its own module so transports and measure
can both use it."""

from __future__ import annotations

from typing import Literal

# Reasons an infrastructure failure may have; "setup" (no Python, no runtime, a binary
# missing) is not worth retrying, the others may pass.
TRANSIENT = ("unreachable", "auth", "host_key", "offline", "disconnected", "timeout")


class DeviceError(Exception):
    """A profiling failure. `kind` keeps infrastructure (unreachable, auth, timeout) apart
    from model failures (the runtime rejected the model or produced bad output).

    `reason` says more: unreachable, auth, host_key, offline, disconnected, timeout, setup
    (infrastructure), model, or input (the data given does not fit the model: the user's
    input, exit 2 in `edgekd profile`). `attempts` is how many times the measurement was tried.
    """

    def __init__(self, message: str, kind: Literal["infrastructure", "model"],
                 reason: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.reason = reason or ("model" if kind == "model" else "unreachable")
        self.attempts = 1

    @property
    def retriable(self) -> bool:
        return self.kind == "infrastructure" and self.reason in TRANSIENT
