"""Devices: profiles, transports (local, SSH, ADB), the standalone device runner and the
vendor tools (benchmark_model, trtexec) that measure models on them."""
