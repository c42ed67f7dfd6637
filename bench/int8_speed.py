"""int8 vs fp32 latency on onnxruntime, LiteRT and ExecuTorch, before and after edgekd's
quantizer fixes.

    python -m bench.int8_speed [--tiny] [--models cnn_8,resnet18] [--rounds 7] [--runs 50]

For each model: fp32 ONNX / TFLite / .pte, and int8 built twice from the same QAT-prepared
model: "before" = plain XNNPACKQuantizer, PT2E QDQ ONNX as exported; "after" = edgekd's
quantizer (`edge_quantizer`) and `optimize_qdq_onnx`. The .pte files are ExecuTorch's XNNPACK
lowering of the same graphs (edgekd.export.executorch). Random weights (speed does not
depend on them), observers calibrated on a few random batches. Latency: batch 1, in-process,
through edgekd's device runner (`edgekd.devices.runner`), input converted to the file's layout
and dtype before the timed call (as benchmark_model does; the conversion is reported apart as
`input_ms`), the artifacts of a model measured interleaved in rounds, median of the round
medians (2 shared cores: noisy). `floor` is a one-op (ReLU) model at the same input shape: the
per-call cost no kernel can remove. Prints a markdown table; writes JSON with the environment,
parity and op counts (edgekd.quant.graph, edgekd.export.executorch).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RUNTIMES = (("onnxruntime", "onnx"), ("litert", "tflite"), ("executorch", "pte"))
MODELS = {  # name -> (builder, input shape)
    "cnn_8": ("cnn", (1, 8, 8)),
    "cnn_28": ("cnn", (1, 28, 28)),
    "mobilenet_v2": ("mobilenet_v2", (3, 96, 96)),
    "resnet18": ("resnet18", (3, 96, 96)),
    "mobilenet_v3_small": ("mobilenet_v3_small", (3, 96, 96)),
    # The same network with ReLU for hardswish: what hardswish costs int8 on each runtime.
    "mobilenet_v3_small_relu": ("mobilenet_v3_small_relu", (3, 96, 96)),
}


def build(arch: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """The student (Normalize + cnn) or a torchvision model with random weights."""
    import torchvision

    from edgekd.models.builders import Classifier, cnn

    torch.manual_seed(0)
    if arch == "cnn":
        net = cnn(10, 1, width=12, depth=2)
    else:
        net = torchvision.models.get_model(arch.removesuffix("_relu"), weights=None, num_classes=10)
        for module in net.modules() if arch.endswith("_relu") else ():
            for child_name, child in module.named_children():
                if isinstance(child, torch.nn.Hardswish):
                    setattr(module, child_name, torch.nn.ReLU(inplace=True))
    return Classifier(net, {"mean": [0.5] * shape[0], "std": [0.25] * shape[0]})


def quantize(model: torch.nn.Module, shape, fixes: bool, calib: torch.Tensor):
    """QAT-prepare with the chosen quantizer, run calibration batches, return the prepared
    model (eval mode)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd.quant.quantizer import qat_quantizer

    dim = torch.export.Dim("batch", min=1, max=1024)
    captured = torch.export.export(copy.deepcopy(model).train(), (calib[:8],),
                                   dynamic_shapes=({0: dim},)).module()
    prepared = prepare_qat_pt2e(captured, qat_quantizer(fixes=fixes))
    with torch.no_grad():
        for batch in calib.split(8):
            prepared(batch)
    move_exported_model_to_eval(prepared)
    return prepared


def export_onnx(model, x: torch.Tensor, path: Path) -> None:
    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                      opset_version=18, verbose=False)


def export_tflite(model, x: torch.Tensor, path: Path, quantized: bool) -> None:
    import litert_torch

    if quantized:
        from litert_torch.quantize.quant_config import QuantConfig

        from edgekd.quant.quantizer import litert_quantizer

        edge = litert_torch.convert(model, (x,),
                                    quant_config=QuantConfig(pt2e_quantizer=litert_quantizer()))
    else:
        edge = litert_torch.convert(model.eval(), (x,))
    edge.export(str(path))


def build_artifacts(name: str, work: Path) -> tuple[dict[str, Path], dict]:
    """fp32 / int8-before / int8-after files for one model, and int8 parity checks."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgekd.export.executorch import write_pte
    from edgekd.quant.onnx_qdq import optimize_qdq_onnx
    from edgekd.quant.qat import biases_on_int32_grid

    arch, shape = MODELS[name]
    model = build(arch, shape).eval()
    gen = torch.Generator().manual_seed(1)
    calib = torch.rand(32, *shape, generator=gen)
    x = calib[:1]
    files = {"fp32.onnx": work / f"{name}.fp32.onnx", "fp32.tflite": work / f"{name}.fp32.tflite",
             "fp32.pte": work / f"{name}.fp32.pte"}
    export_onnx(model, x, files["fp32.onnx"])
    export_tflite(model, x, files["fp32.tflite"], quantized=False)
    write_pte(model, shape, files["fp32.pte"])
    parity = {}
    for variant, fixes in (("before", False), ("after", True)):
        prepared = quantize(model, shape, fixes, calib)
        onnx_path = work / f"{name}.int8-{variant}.onnx"
        tflite_path = work / f"{name}.int8-{variant}.tflite"
        folded = convert_pt2e(copy.deepcopy(prepared), fold_quantize=True)
        biases_on_int32_grid(folded)  # the reference edgekd's export compares with
        export_onnx(folded, x, onnx_path)
        if fixes:
            optimize_qdq_onnx(onnx_path)
        unfolded = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        export_tflite(unfolded, x, tflite_path, quantized=True)
        pte_path = write_pte(folded, shape, work / f"{name}.int8-{variant}.pte")
        files[f"int8-{variant}.onnx"], files[f"int8-{variant}.tflite"] = onnx_path, tflite_path
        files[f"int8-{variant}.pte"] = pte_path
        test = torch.rand(16, *shape, generator=gen)
        with torch.no_grad():
            reference = folded(test).numpy()
        parity[variant] = {ext: compare(path, test.numpy(), reference) for ext, path in
                           (("onnx", onnx_path), ("tflite", tflite_path), ("pte", pte_path))}
    return files, parity


def session(path: Path, threads: int):
    """edgekd's device runner model for a file (onnxruntime, LiteRT or ExecuTorch by suffix):
    `prepare` converts a float NCHW batch to what the file takes (NHWC, int8), `run` is the
    timed call."""
    from edgekd.devices.runner import OnnxModel, PteModel, TfliteModel

    if path.suffix == ".onnx":
        return OnnxModel(str(path), threads)
    if path.suffix == ".pte":
        return PteModel(str(path), threads)
    return TfliteModel(str(path), "ai_edge_litert", threads)


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The file's outputs, one sample per call (the ONNX files here have a fixed batch of 1)."""
    from edgekd.export import runtimes

    if path.suffix == ".onnx":
        return runtimes.onnx_logits(path, x, batch_size=1)
    if path.suffix == ".pte":
        from edgekd.export.executorch import pte_logits

        return pte_logits(path, x)
    return runtimes.tflite_logits(path, x)


def compare(path: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    """|int8 file - converted torch model| in output quantization steps (max, and the share
    of outputs within one step), and top-1 agreement. The step is estimated from the
    reference's distinct output values."""
    out = outputs(path, x)
    values = np.unique(reference)
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    steps = np.abs(out - reference) / step
    return {"max_abs_diff": float(np.abs(out - reference).max()),
            "max_diff_steps": float(steps.max()),
            "within_one_step": float(np.mean(steps <= 1.001)),
            "top1_agreement": float((out.argmax(1) == reference.argmax(1)).mean())}


def floor_files(shape, work: Path) -> dict[str, Path]:
    """A one-op model (ReLU) per runtime at this input shape: the fixed cost of a call, which
    no int8 kernel can remove."""
    from edgekd.export.executorch import write_pte

    relu = torch.nn.ReLU().eval()
    x = torch.rand(1, *shape)
    files = {"floor.onnx": work / "floor.onnx", "floor.tflite": work / "floor.tflite",
             "floor.pte": work / "floor.pte"}
    export_onnx(relu, x, files["floor.onnx"])
    export_tflite(relu, x, files["floor.tflite"], quantized=False)
    write_pte(relu, shape, files["floor.pte"])
    return files


def measure(files: dict[str, Path], shape, threads: int, rounds: int, runs: int) -> dict:
    """Median latency (ms) per artifact, measured interleaved in `rounds` rounds; the input is
    converted (NHWC, int8) before timing, as benchmark_model and edgekd's profiler do, and
    that conversion is timed on its own (`input_ms`)."""
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    models = {key: session(path, threads) for key, path in files.items()}
    inputs, input_ms = {}, {}
    for key, model in models.items():
        start = time.perf_counter()
        for _ in range(runs):
            inputs[key] = model.prepare(x)
        input_ms[key] = (time.perf_counter() - start) / runs * 1e3
        for _ in range(max(3, runs // 5)):
            model.run(inputs[key])
    medians: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model.run(inputs[key])
                times.append(time.perf_counter() - start)
            medians[key].append(float(np.median(times)) * 1e3)
    return {"latency_ms": {key: float(np.median(v)) for key, v in medians.items()},
            "input_ms": input_ms}


def ort_profile(path: Path, runs: int) -> dict[str, float]:
    """onnxruntime's own profile of one file at 1 thread: microseconds per run by kind of
    op (convolutions split into dense and depthwise). The profiler adds a fixed cost per node,
    so compare kinds across files, not the totals with the latencies."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        groups = {node.name: next((helper.get_attribute_value(a) for a in node.attribute
                                   if a.name == "group"), 1)
                  for node in onnx.load(options.optimized_model_filepath).graph.node}
        x = {sess.get_inputs()[0].name: np.random.default_rng(0).random(
            [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape],
            dtype=np.float32)}
        for _ in range(runs):
            sess.run(None, x)
        events = json.loads(Path(sess.end_profiling()).read_text())
    kinds: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        if "Conv" in op:
            node = event["name"].removesuffix("_kernel_time")
            kind = "depthwise conv" if groups.get(node, 1) > 1 else "dense conv"
        elif op in ("QuantizeLinear", "DequantizeLinear"):
            kind = "quantize / dequantize"
        elif op in ("Transpose", "Reshape", "ReorderInput", "ReorderOutput"):
            kind = "layout"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + event["dur"] / runs
    return kinds


def profile_rows(models: dict) -> list[list]:
    kinds = ("dense conv", "depthwise conv", "other", "quantize / dequantize", "layout")
    rows = []
    for name, r in models.items():
        for variant in ("fp32", "int8-after"):
            p = r["ort_profile_us"][variant]
            rows.append([name, variant, *(p.get(k, 0.0) for k in kinds)])
    return rows


def op_counts(files: dict[str, Path]) -> dict:
    from edgekd.export.formats import runtime_for

    return {key: runtime_for(path).op_counts(path) for key, path in files.items()
            if key.startswith("int8")}


def speed_rows(models: dict) -> list[list]:
    """One row per model, runtime and thread count: the one-op floor, latencies, speed-ups."""
    rows = []
    for name, r in models.items():
        for runtime, ext in RUNTIMES:
            for threads, lat in r["latency_ms"].items():
                fp, before, after = (lat[f"{k}.{ext}"] for k in ("fp32", "int8-before",
                                                                 "int8-after"))
                rows.append([name, runtime, int(threads), lat[f"floor.{ext}"], fp, before,
                             f"{fp / before:.2f}x", after, f"{fp / after:.2f}x"])
    return rows


def ops_rows(models: dict) -> list[list]:
    """int8 ops / float ops / layout ops / Q+DQ nodes (and LiteRT's and ExecuTorch's
    XNNPACK delegate partitions)."""
    rows = []
    for name, r in models.items():
        for runtime, ext in RUNTIMES:
            cells = []
            for variant in ("before", "after"):
                c = r["ops"][f"int8-{variant}.{ext}"]
                cells.append(f"{c['ops_int8']} / {c['ops_float']} / {c['layout_ops']} / "
                             f"{c['quantize_nodes'] + c['dequantize_nodes']}")
                cells.append(c.get("delegate_partitions", "-"))
            rows.append([name, runtime, *cells])
    return rows


def parity_rows(models: dict) -> list[list]:
    rows = []
    for name, r in models.items():
        for runtime, ext in RUNTIMES:
            p = r["parity_after"][ext]
            rows.append([name, runtime, p["max_diff_steps"], p["within_one_step"],
                         p["top1_agreement"]])
    return rows


def notes(models: dict) -> list[str]:
    """Where int8 misses 2x at 1 thread and the per-call floor is a tenth of fp32's time or
    more: how much that floor alone limits the speed-up; and what random-weight parity means."""
    found = []
    for name, r in models.items():
        lat = r["latency_ms"].get("1") or r["latency_ms"].get(1)
        if lat is None:
            continue
        for runtime, ext in RUNTIMES:
            fp, after, floor = lat[f"fp32.{ext}"], lat[f"int8-after.{ext}"], lat[f"floor.{ext}"]
            if fp / after < 2 and floor / fp >= 0.1:
                found.append(
                    f"{name} on {runtime}: int8 {fp / after:.2f}x at 1 thread; the one-op call "
                    f"floor is {floor * 1e3:.1f} us = {floor / fp:.0%} of fp32's "
                    f"{fp * 1e3:.1f} us, so even free kernels would give at most "
                    f"{fp / floor:.1f}x")
    found.append("Parity here is on random weights and random inputs, where rounding flips "
                 "are amplified layer after layer (the two int8 runtimes then differ from "
                 "each other too); bench.quantization reports it for the "
                 "trained students on their test data.")
    return found


def main(argv: list[str] | None = None) -> dict:
    from bench.common import Report, parse_args

    args = parse_args(__doc__, argv, extra=[
        ("--models", {"default": ",".join(MODELS), "help": "comma-separated subset"}),
        ("--rounds", {"type": int, "default": 7}),
        ("--runs", {"type": int, "default": 50})])
    names, threads, rounds, runs = [m for m in args.models.split(",") if m], (1, 2), \
        args.rounds, args.runs
    if args.tiny:
        names, threads, rounds, runs = ["cnn_8"], (1,), 2, 5
    warnings.simplefilter("ignore")
    report = Report("int8_speed", args)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            files, parity = build_artifacts(name, work)
            shape = MODELS[name][1]
            files.update(floor_files(shape, work))
            timed = {str(t): measure(files, shape, t, rounds, runs) for t in threads}
            models[name] = {
                "input_shape": [1, *shape], "parity_after": parity["after"],
                "parity_before": parity["before"], "ops": op_counts(files),
                "latency_ms": {t: m["latency_ms"] for t, m in timed.items()},
                "input_ms": timed[str(threads[0])]["input_ms"],
                "ort_profile_us": {v: ort_profile(files[f"{v}.onnx"], runs * rounds)
                                   for v in ("fp32", "int8-after")}}
    report.doc["results"] = {"models": models}
    report.add_table("int8 vs fp32 latency (ms, batch 1) and int8 speed-up, before / after "
                     "edgekd's quantizer fixes",
                     ["model", "runtime", "threads", "floor", "fp32", "int8 before", "x",
                      "int8 after", "x"], speed_rows(models))
    report.add_table("How much of each int8 graph is integer: int8 / float / layout ops / Q+DQ "
                     "nodes, and the XNNPACK partitions of LiteRT and ExecuTorch",
                     ["model", "runtime", "before", "partitions", "after", "partitions"],
                     ops_rows(models))
    report.add_table("onnxruntime's profiler, 1 thread: us per run by kind of op (the profiler "
                     "adds a fixed cost per node; compare rows, not with the latencies)",
                     ["model", "file", "dense conv", "depthwise conv", "other",
                      "quantize / dequantize", "layout"], profile_rows(models))
    report.add_table("int8 (after) parity with the converted PyTorch model, random inputs",
                     ["model", "runtime", "max diff (output steps)", "share within 1 step",
                      "top-1 agreement"], parity_rows(models))
    for text in notes(models):
        report.note(text)
    report.write()
    return report.doc


if __name__ == "__main__":
    main()
