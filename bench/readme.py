"""bench/README.md from the JSON in bench/results: the goals, the latest tables, how to rerun.

    python -m bench.readme [RESULTS_DIR] > bench/README.md   (run_all does this itself)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS, pm, table

ORDER = ("kd_task", "kd_task_long", "distill_quality", "kd_methods", "quantization", "speed",
         "gemm", "pipeline_cost", "peer", "int8_speed", "train_throughput", "estimator")
TITLES = {
    "kd_task": "0. A task where distillation matters (issue 14): 100 classes of two-digit "
               "numbers, every KD method over 3 seeds, torchdistill as the peer",
    "kd_task_long": "0b. The same task at a longer schedule (24 epochs, 10,000 test "
                    "composites), run once on a GPU machine",
    "distill_quality": "1. Distillation quality on digits and MNIST (10 classes)",
    "kd_methods": "1b. Distillation methods (issue 6): logit, hint, attention, relational, "
                  "ensemble, assistant chain, on a 10-class task",
    "quantization": "2. Quantization: fp32 vs int8 QAT vs int8 PTQ",
    "speed": "3. The per-call floor: speed of the tiny pipeline students (microseconds per "
             "inference, where call overhead, not arithmetic, sets the time)",
    "gemm": "4. Where the limit is: GEMM peak and achieved MAC rate",
    "pipeline_cost": "5. Pipeline cost",
    "peer": "6. A peer in the same run (Olive)",
    "int8_speed": "7. int8 where it pays: real students at 96 and 224 px on onnxruntime, "
                  "LiteRT and ExecuTorch (issues 5 and 14)",
    "train_throughput": "8. Training at real scale (issue 12): throughput against a plain "
                        "PyTorch KD loop, peak memory against dataset size",
    "estimator": "9. Estimates for unreachable devices (issue 16): published Raspberry Pi "
                 "latencies against edgekd's estimate of each",
}
OWN_SECTIONS = {"kd_task": "bench.kd_task", "kd_task_long": "bench.kd_task",
                "int8_speed": "bench.int8_speed", "estimator": "bench.estimator"}
"""Benchmarks that render their own section, goals and reasons (`section(doc)`,
`goals(doc)`, `why(doc)`) from their JSON."""
RUN_ELSEWHERE = {"kd_task_long": "`python -m bench.kd_task --long --device cuda`, one process "
                                 "per seed, joined by `python -m bench.kd_task merge`; not "
                                 "part of `make bench` (a CPU would need hours)"}
"""Results committed from a run on another machine: how they were made."""
TRAINING_CHANGED = "2026-11-30T22:29"
"""When edgekd's training loop last changed what a run measures (489239d: the kept epoch is
chosen on BatchNorm-recalibrated accuracy): a result from another machine made before it is
flagged as older code."""
SMOKE = ("tiny", "quick")


def _own(name: str):
    import importlib

    return importlib.import_module(OWN_SECTIONS[name])


HOW = """\
## How to reproduce

```
make bench                          # = .venv/bin/python -m bench.run_all (full setting)
.venv/bin/python -m bench.run_all --quick                    # smoke run (CI), about 10 min cold
.venv/bin/python -m bench.speed [--quick] [--datasets digits]  # one benchmark
.venv/bin/python -m bench.int8_speed --models cnn_8,mobilenet_v3_small  # some models only
```

Each script prints markdown tables and writes `bench/results/<name>.json` with the setting
(`full`, or `tiny` / `quick` for the smoke run), the environment (CPU, cores, load average,
package versions) and every raw figure; `run_all` then rewrites this file from those JSON
files. Models are built by edgekd's own pipeline in `bench/.work/` (git-ignored) and reused
through its stage cache, so the scripts share one distilled, QAT-quantized and exported student
per dataset.

Data: the built-in digits set, and the MNIST test set from `../shared/data/mnist-t10k`
(override with `EDGEKD_MNIST=DIR`), written as an .npz the way a user brings data and split by
the pipeline (seed 0: 7,000 train / 1,000 val / 2,000 test, stratified). Without that folder
the MNIST rows are skipped with a message. Olive runs in its own venv `bench/.olive-venv`
(installed by `bench.peer` on a full run when missing; `EDGEKD_OLIVE_PYTHON` points at an
existing one). Timings are fresh-process, batch 1, medians over interleaved rounds; on a
shared machine they are noisy: compare figures within one run, not across runs.
"""


def load(results: Path) -> dict[str, dict]:
    docs = {}
    for name in (*ORDER, "run_all"):
        path = results / f"{name}.json"
        if path.is_file():
            docs[name] = json.loads(path.read_text())
    return docs


def _qat_rows(quant: dict, dataset: str) -> list[dict]:
    res = quant.get("results", {}).get(dataset, {})
    return [r for r in res.get("rows", []) if r["variant"].startswith("int8 QAT")]


def goals(docs: dict) -> list[list]:
    """One row per goal (issues 4, 5, 12 and 14): target, measured, verdict, margin."""
    rows = [row for name in ("kd_task", "kd_task_long") if name in docs
            for row in _own(name).goals(docs[name])]
    quant, speed, cost = docs.get("quantization", {}), docs.get("speed", {}), \
        docs.get("pipeline_cost", {})

    qat = _qat_rows(quant, "mnist")
    if qat:
        ref = quant["results"]["mnist"]["reference"]
        worst = min(r["teacher_retention"] for r in qat)
        ratio = ref["param_ratio"]
        ok = worst >= 0.99 and ratio >= 10
        rows.append(["int8 student >= 99 % of teacher accuracy on MNIST, >= 10x fewer params",
                     f"{worst * 100:.2f} % of teacher (worst runtime), {ratio:.1f}x fewer",
                     "met" if ok else "MISSED",
                     f"{(worst - 0.99) * 100:+.2f} pt of retention; params {ratio / 10:.2f}x "
                     "the 10x goal"])
    else:
        rows.append(["int8 student >= 99 % of teacher accuracy on MNIST, >= 10x fewer params",
                     "not measured (MNIST absent)" if quant else
                     "not measured (bench.quantization not run)", "-", "-"])

    drops = [(d, r) for d in quant.get("results", {}) for r in _qat_rows(quant, d)]
    if drops:
        d, worst = max(drops, key=lambda item: item[1]["drop_pt"])
        rows.append(["int8 (QAT) accuracy loss <= 0.3 pt",
                     f"worst {worst['drop_pt']:.2f} pt ({d}, {worst['runtime']})",
                     "met" if worst["drop_pt"] <= 0.3 else "MISSED",
                     f"{worst['drop_pt'] - 0.3:+.2f} pt over the limit"
                     if worst["drop_pt"] > 0.3 else f"{0.3 - worst['drop_pt']:.2f} pt to spare"])

    one = [(d, c) for d, res in speed.get("results", {}).items() for c in res["comparisons"]
           if c["threads"] == 1]
    if one:
        worst = min(one, key=lambda item: item[1]["int8_speedup"])
        text = ", ".join(f"{d} {c['runtime']} {c['int8_speedup']:.2f}x" for d, c in one)
        ok = worst[1]["int8_speedup"] >= 3
        rows.append(["int8 >= 3x faster than fp32 on the tiny pipeline students, both "
                     "runtimes, 1 thread (issue 4; the per-call floor, section 3)", text,
                     "met" if ok else "MISSED",
                     f"worst {worst[1]['int8_speedup']:.2f}x = "
                     f"{worst[1]['int8_speedup'] / 3 * 100:.0f} % of the goal"])

    epochs = {d: e for d, e in cost.get("results", {}).get("epochs", {}).items()
              if e.get("cached_over_plain") is not None}
    if epochs:
        text = ", ".join(f"{d} {e['cached_over_plain']:.2f}x (online "
                         f"{e['online_over_plain']:.2f}x)" for d, e in epochs.items())
        worst = max(e["cached_over_plain"] for e in epochs.values())
        rows.append(["cached-teacher distillation <= 1.15x plain training (per epoch)", text,
                     "met" if worst <= 1.15 else "MISSED", f"worst {worst:.2f}x vs 1.15x"])
    mobile = cost.get("results", {}).get("mobile")
    if mobile:
        warm = mobile["warm"]["wall_s"]
        rows.append(["warm rerun of mobile.yaml <= 10 s", f"{warm:.1f} s (whole `edgekd run` "
                     "process)", "met" if warm <= 10 else "MISSED",
                     f"{warm - 10:.1f} s over" if warm > 10 else f"{10 - warm:.1f} s to spare"])
    for name in ("int8_speed", "estimator"):
        if name in docs:
            rows += _own(name).goals(docs[name])
    rows += _parity_goal(quant.get("results", {}))
    rows += _scale_goals(docs.get("train_throughput", {}).get("results", {}))
    return rows + _hour_goal(docs.get("run_all", {}), docs.get("int8_speed", {}))


HOUR_S = 66 * 60
"""The full `make bench` is to take "about an hour" (issue 14): an hour and 10 % at most."""


def _hour_goal(run_all: dict, int8_speed: dict | None = None) -> list[list]:
    """The full run's wall time against HOUR_S, with its three longest benchmarks; a run that
    reused int8_speed's converted files (bench/.work) is also judged cold, with their build
    times added (a fresh clone's first run pays them)."""
    if run_all.get("setting") != "full" or not run_all.get("benchmarks"):
        return []
    wall, every = run_all["wall_s"], run_all["benchmarks"]
    longest = sorted(every, key=lambda n: -every[n]["wall_s"])[:3]
    models = (int8_speed or {}).get("results", {}).get("models", {})
    reused = sum(m.get("build_s") or 0 for m in models.values() if m.get("reused_files"))
    measured = (f"{wall / 60:.1f} min ({wall:.0f} s, {len(every)} benchmarks; longest "
                + ", ".join(f"{n} {every[n]['wall_s']:.0f} s" for n in longest) + ")")
    verdict, margin = "met" if wall <= HOUR_S else "MISSED", \
        f"{(HOUR_S - wall) / 60:+.1f} min to the limit"
    if reused:
        cold = wall + reused
        measured += (f"; int8_speed's converted files were reused from bench/.work: cold, "
                     f"with their build time ({reused / 60:.0f} min), {cold / 60:.0f} min")
        verdict = f"{verdict} warm, {'met' if cold <= HOUR_S else 'MISSED'} cold"
        margin += f" warm, {(HOUR_S - cold) / 60:+.1f} min cold"
    return [[f"the full `make bench` in about an hour on {run_all['environment']['cpu_count']} "
             f"cores (<= {HOUR_S // 60} min)", measured, verdict, margin]]


def _scale_goals(scale: dict) -> list[list]:
    """Issue 12: distill throughput >= 0.9x a plain PyTorch KD loop on the same PNG folders,
    and peak memory flat (<= 1.25x) while the data grows 16x."""
    rows = []
    speed = scale.get("throughput")
    if speed:
        rows.append([f"distill throughput >= {speed['goal']}x a plain PyTorch KD loop, same "
                     "PNG folders (issue 12)",
                     f"{speed['edgekd_median']:.0f} vs {speed['plain_median']:.0f} images/s = "
                     f"{speed['ratio']:.2f}x", "met" if speed["ratio"] >= speed["goal"]
                     else "MISSED", f"{(speed['ratio'] - speed['goal']) * 100:+.0f} pt of plain"])
    mem = scale.get("memory")
    if mem:
        first, last = mem["rows"][0], mem["rows"][-1]
        key = mem["measure"]
        rows.append([f"peak memory at {last['images']:,} images <= {mem['goal']}x the peak at "
                     f"{first['images']:,} (issue 12)",
                     f"{last[key]:.0f} vs {first[key]:.0f} MiB "
                     f"({mem['measure_label']}) = "
                     f"{mem['growth']:.2f}x", "met" if mem["growth"] <= mem["goal"] else "MISSED",
                     f"{(last[key] - first[key]) / (last['images'] - first['images']) * 1000:.1f}"
                     " MiB per 1,000 more images"])
    return rows


def _parity_goal(quant: dict) -> list[list]:
    """Issue 5: int8 files within one output step of the QAT model, top-1 agreement >= 0.99,
    on the pipeline's trained students and real test data."""
    parity = [(f"{d} {name}", p) for d, r in quant.items()
              for name, p in r.get("qat_parity", {}).items()]
    if not parity:
        return []
    worst = max(parity, key=lambda item: item[1]["max_diff_steps"])
    within = min(p["within_one_step"] for _, p in parity)
    top1 = min(p["top1_agreement"] for _, p in parity)
    apart = [p["vs_onnx_steps"] for _, p in parity if p.get("vs_onnx_steps") is not None]
    ok = worst[1]["max_diff_steps"] <= 1.001 and top1 >= 0.99
    return [["int8 files within one output step of the QAT model, top-1 agreement >= 0.99 "
             "(issue 5)", f"worst {worst[1]['max_diff_steps']:.1f} steps ({worst[0]}); "
             f"{within * 100:.2f} % of outputs within one step; top-1 {top1:.4f}",
             "met" if ok else "MISSED",
             f"{(1 - within) * 100:.2f} % of outputs beyond one step; the two int8 runtimes "
             f"at most {max(apart):.0f} steps apart (section 2)" if apart else "-"]]


def _why_scale(scale: dict) -> list[str]:
    """Issue 12's memory figure against what holding the decoded images would cost."""
    mem = scale.get("memory")
    if not mem:
        return []
    first, last = mem["rows"][0], mem["rows"][-1]
    height, width = mem["image_size"]
    decoded = (last["images"] - first["images"]) * height * width * 3 / 2**20
    return [
        "- **Memory vs dataset size.** The tree's RSS sums every process of the run (edgekd "
        "and its DataLoader workers; a page they share counts in each), PSS splits shared "
        f"pages between them (the real footprint). From {first['images']:,} to "
        f"{last['images']:,} images, holding every decoded image in memory would add "
        f"{decoded:.0f} MiB as uint8 and {decoded * 4:.0f} MiB as float32; the peak "
        f"({mem['measure_label']}) grew "
        f"{last[mem['measure']] - first[mem['measure']]:.0f} MiB."]


def _why_parity(quant: dict) -> list[str]:
    beyond = {d: r["qat_parity"] for d, r in quant.items()
              if any(p["max_diff_steps"] > 1.001 for p in r.get("qat_parity", {}).values())}
    if not beyond:
        return []
    text = "; ".join(
        f"{d}: {(1 - max(p['within_one_step'] for p in par.values())) * 100:.2f} % of outputs "
        f"at {max(p['max_diff_steps'] for p in par.values()):.0f} steps, the int8 ONNX and "
        f"TFLite files {par.get('student_int8_tflite', {}).get('vs_onnx_steps') or 0:.0f} steps "
        "apart" for d, par in beyond.items())
    return [
        "- **int8 within one output step.** " + text + ". The two integer engines agree with "
        "each other; what they differ from is PyTorch's float emulation of the same quantized "
        "model (each layer computed in float32, then rounded), which lands on the other side "
        "of a rounding boundary now and then; a one-step difference inside the network "
        "(each quantized tensor of the mobile student was within one step of it, checked "
        "tensor by tensor with onnxruntime) can reach two steps at the output after the last "
        "layer's weights."]


def why(docs: dict) -> str:
    """The reasons behind each goal's figure, with the figures of this run where they exist."""
    gemm = docs.get("gemm", {}).get("results", {})
    speed = docs.get("speed", {}).get("results", {})
    quality = docs.get("distill_quality", {}).get("results", {})
    cost = docs.get("pipeline_cost", {}).get("results", {})
    lines = ["### Why\n"]

    ratio = gemm.get("int8_over_fp32_peak", {}).get("1")
    best = {}
    for r in gemm.get("achieved", []):
        if r["threads"] == 1 and r["fraction_of_peak"] is not None and \
                r["file"] in ("onnx_int8", "tflite_int8"):
            best[r["file"]] = max(best.get(r["file"], 0), r["fraction_of_peak"])
    fp32_us = ", ".join(f"{d} {res['files']['onnx_fp32']['threads_1']['p50_ms'] * 1e3:.0f} us "
                        f"(ONNX) / {res['files']['tflite_fp32']['threads_1']['p50_ms'] * 1e3:.0f}"
                        " us (TFLite)" for d, res in speed.items())
    lines.append(
        "- **int8 >= 3x faster than fp32 on the tiny students.** The students are small "
        f"(under a million MACs at 8x8 and 28x28), so an fp32 inference already takes only "
        f"{fp32_us or 'microseconds'} at batch 1. "
        "At that size the cost is per-operator dispatch, layout changes and the quantize / "
        "dequantize at the graph edges, not multiply-accumulates: the int8 files reach at best "
        + (f"{best.get('onnx_int8', 0) * 100:.0f} % (ONNX) and "
           f"{best.get('tflite_int8', 0) * 100:.0f} % (TFLite) of this CPU's int8 GEMM peak "
           if best else "a small share of this CPU's int8 GEMM peak ")
        + "(section 4). Even a GEMM-bound model could gain at most the int8 / fp32 peak ratio, "
        + (f"{ratio:.1f}x here with 1 thread. " if ratio else "section 4. ")
        + "onnxruntime: its optimised int8 graph of a student is fully integer (QLinearConv, "
        "QGemm, QLinearGlobalAveragePool, the input normalisation as QLinearAdd / QLinearMul) "
        "but runs in NHWC, so it adds two Transposes, a QuantizeLinear and a DequantizeLinear "
        "to the fp32 graph's ten-odd nodes; at about a microsecond per node that overhead eats "
        "most of the integer arithmetic saved (section 7 measures the per-call floor). LiteRT "
        "(XNNPACK) gains less than 2x on these files (section 3). Reaching 3x needs models "
        "where MACs dominate (section 7: resnet18) or batching.")
    for name in OWN_SECTIONS:
        if name in docs:
            lines += _own(name).why(docs[name])
    lines += _why_parity(docs.get("quantization", {}).get("results", {}))
    lines += _why_scale(docs.get("train_throughput", {}).get("results", {}))
    first = next(iter(quality.get("mnist", {}).get("students", {}).values()), None)
    if first:
        s = first["summary"]
        qat = _qat_rows(docs.get("quantization", {}), "mnist")
        qat_moves = "/".join(f"{-r['drop_pt']:+.2f}" for r in qat) or "?"
        lines.append(
            "- **Student >= 99 % of the teacher on MNIST at >= 10x fewer parameters.** The "
            f"fp32 KD student (1/{s['param_ratio']:.0f} of the parameters) already keeps only "
            f"{pm(s['teacher_retention'], 100)} % of the teacher over 3 seeds (section 1) "
            "before any quantization, and int8 QAT changes its accuracy by "
            f"{qat_moves} pt (section 2): the miss is the student's capacity and schedule "
            f"({quality['mnist']['distill_epochs']} epochs on 7,000 images, no augmentation), "
            "not int8. KD itself adds "
            f"only {pm(s['kd_gain'], 100)} pt over "
            "hard labels here; for the capacity-bound student KD costs accuracy (the capacity "
            "gap), as section 1 shows on both datasets.")
    lines.append(
        "- **int8 accuracy loss.** With 2,000 (MNIST) or 450 (digits) test samples one sample is "
        "0.05 / 0.22 pt: a 0.3 pt limit is 6 / 1.4 samples, within the seed-to-seed spread of "
        "section 1, so a single-seed drop near the limit is not a significant difference.")
    epochs = cost.get("epochs", {})
    if epochs:
        fixed = ", ".join(f"{d} {e['fixed_s']['cached']:.1f} s" for d, e in epochs.items())
        lines.append(
            "- **Cached teacher <= 1.15x plain training.** With cached logits an epoch does the "
            "work of plain training plus a table lookup and a KL term; the teacher's one pass "
            f"over the train split is paid once per run (fixed cost with the cache: {fixed}, "
            "test predictions and saving included). The per-epoch figures are differences of "
            "stage times (minimum of 3 repeats) and swing on a loaded machine by more than the "
            "15 % at stake. With the teacher online, every batch runs the teacher forward, "
            "which for these pairs costs more than the student's forward and backward together.")
        slow = {d: e["alpha0_over_plain"] for d, e in epochs.items()
                if (e.get("alpha0_over_plain") or 0) > 1.3}
        if slow:
            lines.append(
                "- **`alpha: 0` is not free.** With KD off (`alpha: 0`, `cache_teacher: false`) "
                "an epoch still costs " + ", ".join(f"{d} {r:.2f}x" for d, r in slow.items())
                + " plain training, close to the online-teacher figure: the distill stage "
                "appears to run the teacher on every batch even when its outputs get weight 0.")
    sizes = docs.get("quantization", {}).get("results", {})
    bigger = [d for d, res in sizes.items()
              if any(r["variant"].startswith("int8 QAT") and r["runtime"] == "onnxruntime"
                     and r["bytes"] > next(x["bytes"] for x in res["rows"]
                                           if x["variant"] == "fp32" and
                                           x["runtime"] == "onnxruntime")
                     for r in res["rows"])]
    if bigger:
        lines.append(
            f"- **int8 ONNX files larger than fp32 ({', '.join(bigger)}).** torch.onnx's dynamo "
            "exporter stores metadata on every node (stack trace, module scopes); with a few "
            "thousand weights that outweighs them, and the QDQ graph has three times the nodes. "
            "Clearing the nodes' metadata_props took the digits int8 file from 44 KB to 12 KB "
            "(checked by hand; not done by edgekd's export).")
    peaks = gemm.get("peak", {})
    for precision in ("fp32", "int8"):
        one, two = peaks.get(f"{precision}_threads_1"), peaks.get(f"{precision}_threads_2")
        if one and two and two["gmacs"] < one["gmacs"]:
            lines.append(
                f"- **2-thread peaks.** The {precision} GEMM peak with 2 threads "
                f"({two['gmacs']:.0f} GMAC/s) came out below 1 thread's ({one['gmacs']:.0f}): "
                "the second core was busy with other work during the run, so 2-thread figures "
                "(and the 2-thread int8 / fp32 ratio) are not this CPU's limit.")
            break
    peer = docs.get("peer", {})
    runs = peer.get("results", {}).get("olive_runs", {})
    if runs:
        version = next(iter(runs.values())).get("olive")
        lines.append(
            f"- **Olive {version}** installs into its own venv (`bench/.olive-venv`, about "
            "6 GB: it pulls torch with CUDA libraries) and runs, but imports `requests` at "
            "start-up without declaring it, so bench.peer installs that too. Its ONNX "
            "quantization passes wrap onnxruntime's quantizer, and their defaults give the same "
            "accuracy and speed as onnxruntime's own defaults (section 6).")
    elif peer.get("olive", {}).get("why"):
        lines.append(f"- **Olive not compared:** {peer['olive']['why'][-300:]}")
    lines.append(
        "- **Warm rerun <= 10 s.** A cached rerun starts Python and the CLI, hashes every "
        "artifact to check it is intact and rewrites the report; no stage runs.\n")
    return "\n".join(lines)


def _elsewhere(doc: dict) -> str:
    """Where a result made on another machine came from, and whether its code is older."""
    env, compute = doc.get("environment", {}), doc.get("results", {}).get("compute") or {}
    packages = env.get("packages", {})
    line = (f"> Made on another machine: {compute.get('gpu') or env.get('cpu')}, "
            f"{env.get('cpu_count')} CPU cores, Python {env.get('python')}, torch "
            f"{packages.get('torch')}, onnxruntime {packages.get('onnxruntime')}")
    if str(doc.get("generated_at", "")) < TRAINING_CHANGED:
        line += (f"; made before the training loop changed ({TRAINING_CHANGED}: the kept "
                 "epoch is now chosen on BatchNorm-recalibrated accuracy) and not re-run since: "
                 "its figures are from the older code")
    return line + ".\n"


def render(results: Path = RESULTS) -> str:
    docs = load(results)
    parts = ["# edgekd benchmarks\n",
             "Distillation where it pays and where it does not, int8 accuracy, runtime speed on "
             "real students and on tiny ones, the CPU's limit and the pipeline's own cost, "
             "measured side by side in one run; written by "
             "`python -m bench.run_all` from `bench/results/*.json`.\n"]
    env = next((d["environment"] for n, d in docs.items()
                if "environment" in d and n not in RUN_ELSEWHERE), None)
    settings = sorted({d.get("setting") for n, d in docs.items() if n in ORDER})
    if env:
        run_all = docs.get("run_all", {})
        parts.append(f"Latest run: {run_all.get('generated_at', '?')}, setting "
                     f"**{', '.join(s for s in settings if s)}**, {env['cpu']} "
                     f"({env['cpu_count']} cores, 1-minute load {env.get('loadavg_1m') or 0:.1f}), "
                     f"Python {env['python']}, torch {env['packages'].get('torch')}, onnxruntime "
                     f"{env['packages'].get('onnxruntime')}, ai-edge-litert "
                     f"{env['packages'].get('ai-edge-litert')}, litert-torch "
                     f"{env['packages'].get('litert-torch')}; total {run_all.get('wall_s')} s.\n")
    if set(settings) & set(SMOKE):
        parts.append("> **These figures come from a `--quick` smoke run** (1-2 epochs, a few "
                     "timed runs): they show the tables' shape, not edgekd's quality or "
                     "speed. Run `make bench` for the real figures.\n")
    failed = [n for n, s in docs.get("run_all", {}).get("benchmarks", {}).items()
              if s["exit_code"] != 0]
    if failed:
        parts.append(f"> Failed in the latest run: {', '.join(failed)} (their figures below, if "
                     "any, are older).\n")
    skipped = docs.get("run_all", {}).get("not_run", {})
    if skipped:
        parts.append("> Not run in the latest run: " + "; ".join(
            f"{name} ({why})" for name, why in skipped.items()) + ".\n")
    parts.append("## Goals\n")
    parts.append(table(["goal", "measured", "verdict", "by how much"], goals(docs)) + "\n")
    parts.append(why(docs))
    for name in ORDER:
        doc = docs.get(name)
        parts.append(f"## {TITLES[name]}\n")
        if doc is None:
            how = RUN_ELSEWHERE[name].split("`")[1] if name in RUN_ELSEWHERE \
                else f"python -m bench.{name}"
            parts.append(f"Not run yet (`{how}`).\n")
            continue
        how = RUN_ELSEWHERE.get(name, f"`bench/{name}.py`, {doc['setting']} setting")
        parts.append(f"{how}, {doc['generated_at']}, {doc['wall_s']} s. Raw figures: "
                     f"`bench/results/{name}.json`.\n")
        if name in RUN_ELSEWHERE:
            parts.append(_elsewhere(doc))
        if name in OWN_SECTIONS:
            parts.append(_own(name).section(doc))
            continue
        for t in doc["tables"]:
            parts.append(f"**{t['title']}**\n\n{t['markdown']}\n")
        for note in doc.get("notes", []):
            parts.append(f"- {note}")
        if doc.get("notes"):
            parts.append("")
    parts.append(HOW)
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
