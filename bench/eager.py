"""Time a PyTorch model file (edgekd's format) in eager mode, fp32, batch 1, in this process.

    python bench/eager.py MODEL.pt [--threads K] [--runs N] [--warmup W]

The baseline a user starts from. Prints one JSON line with the same keys as edgekd's device
runner (latency_ms_p50, latency_ms_p90, ...), so the two read alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    import torch

    from edgekd.devices.runner import summarize
    from edgekd.models import load_model

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.model).eval()
    load_ms = (time.perf_counter() - start) * 1e3
    shape = torch.load(args.model, map_location="cpu", weights_only=False)["meta"]["input_shape"]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps({"ok": True, "runtime": f"torch {torch.__version__} eager",
                      "threads": args.threads, "load_ms": load_ms, **summarize(times)}))


if __name__ == "__main__":
    main()
