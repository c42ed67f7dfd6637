"""Exit codes of every edgekd command, in one place (README, "Exit codes")."""

OK = 0
INTERNAL = 1
"""An internal error: a bug or an unexpected failure (details in the run's error.log)."""
USAGE = 2
"""Bad usage or configuration: a file, field or flag is wrong; nothing ran that should not."""
GATE = 3
"""A budget gate failed (or, for validate-arch, the emulated outputs differ)."""
DEVICE_UNAVAILABLE = 4
"""The target device could not be reached after the retries."""
MODEL_FAILED_ON_DEVICE = 5
"""The model failed on the device (the runtime rejected it or its output was bad)."""
INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT), as shells report it."""
TERMINATED = 143
"""SIGTERM (128 + 15): a `kill` or a scheduler's stop, ended like Ctrl-C."""
