"""Run every benchmark, then rewrite bench/README.md from the JSON they wrote.

    python -m bench.run_all [--quick] [--only speed,gemm] [--datasets digits,mnist]

(`make bench` runs the full setting.) Each benchmark runs in its own process, one after the
other, so a failure in one is recorded and the others still run; the exit status is 1 if any
failed. bench/results/run_all.json records each one's status and wall time. The full setting
stops at once (exit 2) when the MNIST test set it needs is missing (EDGEKD_MNIST); the
`--quick` smoke run skips what needs it and says so in each JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATASETS, MNIST_DIR, RESULTS, ROOT, WORK, environment
from bench.readme import render

# Speed before gemm: gemm reads speed.json for each model's share of the peak.
BENCHMARKS = ("kd_task", "distill_quality", "kd_methods", "quantization", "speed", "gemm",
              "pipeline_cost", "peer", "int8_speed", "train_throughput", "estimator")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", "--tiny", dest="tiny", action="store_true",
                        help="smoke setting for every benchmark (CI; figures show shape only)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated benchmarks to run: " + ", ".join(BENCHMARKS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--readme", type=Path, default=None,
                        help="where the README goes [bench/README.md with the default "
                             "--results, else RESULTS/README.md]")
    parser.add_argument("--extra", action="append", default=[],
                        help="an extra argument for every benchmark (repeatable)")
    args = parser.parse_args(argv)
    if args.readme is None:  # results elsewhere never rewrite the committed README
        args.readme = ROOT / "bench" / "README.md" if args.results.resolve() == \
            RESULTS.resolve() else args.results / "README.md"
    chosen = [b for b in args.only.split(",") if b]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    datasets = [d for d in args.datasets.split(",") if d]
    if not args.tiny and not MNIST_DIR.is_dir() and ("kd_task" in chosen or "mnist" in datasets):
        # An hour of benchmarks that silently leave out the KD task would read as a full run.
        print(f"bench: the full setting needs the MNIST test set, {MNIST_DIR} not found: set "
              "EDGEKD_MNIST to its folder, or leave it out (--only without kd_task and "
              "--datasets digits)", file=sys.stderr)
        return 2
    common = ["--datasets", args.datasets, "--results", str(args.results), "--work",
              str(args.work), *(["--tiny"] if args.tiny else []), *args.extra]
    status = {}
    started = time.time()
    for name in [b for b in BENCHMARKS if b in chosen]:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *common], cwd=ROOT)
        status[name] = {"exit_code": proc.returncode,
                        "wall_s": round(time.perf_counter() - start, 1)}
        print(f"=== bench.{name}: exit {proc.returncode} in {status[name]['wall_s']} s ===",
              flush=True)
    doc = {"setting": "quick" if args.tiny else "full", "benchmarks": status,
           "wall_s": round(time.time() - started, 1),
           "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment()}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "run_all.json").write_text(json.dumps(doc, indent=2) + "\n")
    args.readme.write_text(render(args.results))
    print(f"\nwrote {args.readme}; total {doc['wall_s']} s")
    failed = [n for n, s in status.items() if s["exit_code"] != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
