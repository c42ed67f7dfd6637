"""edgekd's benchmarks (issue 4): scripts that print markdown tables and write JSON to
bench/results/. `python -m bench.run_all` runs them all and rewrites bench/README.md."""
