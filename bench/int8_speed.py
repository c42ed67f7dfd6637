"""int8 vs fp32 latency on onnxruntime and LiteRT, before and after edgekd's quantizer fixes.

    python bench/int8_speed.py [--tiny] [--size 96] [--out bench/results/int8_speed.json]

For each model: fp32 ONNX / TFLite, and int8 built twice from the same QAT-prepared model:
"before" = plain XNNPACKQuantizer, PT2E QDQ ONNX as exported; "after" = edgekd's quantizer
(`edge_quantizer`) and `optimize_qdq_onnx`. Random weights (speed does not depend on them),
observers calibrated on a few random batches. Latency: batch 1, in-process, the artifacts of a
model measured interleaved in rounds, median of the round medians (2 shared cores: noisy).
Prints a markdown table; writes JSON with the environment and op counts (edgekd.quant.graph).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

MODELS = {  # name -> (builder, input shape)
    "cnn_8": ("cnn", (1, 8, 8)),
    "cnn_28": ("cnn", (1, 28, 28)),
    "mobilenet_v2": ("mobilenet_v2", (3, 96, 96)),
    "resnet18": ("resnet18", (3, 96, 96)),
    "mobilenet_v3_small": ("mobilenet_v3_small", (3, 96, 96)),
}


def build(arch: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """The student (Normalize + cnn) or a torchvision model with random weights."""
    from edgekd.models.builders import Classifier, cnn, torchvision_model

    torch.manual_seed(0)
    net = cnn(10, 1, width=12, depth=2) if arch == "cnn" else torchvision_model(arch, 10, 3)
    return Classifier(net, [0.5] * shape[0], [0.25] * shape[0])


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

    from edgekd.quant.onnx_qdq import optimize_qdq_onnx

    arch, shape = MODELS[name]
    model = build(arch, shape).eval()
    gen = torch.Generator().manual_seed(1)
    calib = torch.rand(32, *shape, generator=gen)
    x = calib[:1]
    files = {"fp32.onnx": work / f"{name}.fp32.onnx", "fp32.tflite": work / f"{name}.fp32.tflite"}
    export_onnx(model, x, files["fp32.onnx"])
    export_tflite(model, x, files["fp32.tflite"], quantized=False)
    parity = {}
    for variant, fixes in (("before", False), ("after", True)):
        prepared = quantize(model, shape, fixes, calib)
        onnx_path = work / f"{name}.int8-{variant}.onnx"
        tflite_path = work / f"{name}.int8-{variant}.tflite"
        folded = convert_pt2e(copy.deepcopy(prepared), fold_quantize=True)
        export_onnx(folded, x, onnx_path)
        if fixes:
            optimize_qdq_onnx(onnx_path)
        unfolded = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        export_tflite(unfolded, x, tflite_path, quantized=True)
        files[f"int8-{variant}.onnx"], files[f"int8-{variant}.tflite"] = onnx_path, tflite_path
        test = torch.rand(16, *shape, generator=gen)
        with torch.no_grad():
            reference = folded(test).numpy()
        parity[variant] = {"onnx": compare(onnx_path, test.numpy(), reference),
                           "tflite": compare(tflite_path, test.numpy(), reference)}
    return files, parity


def session(path: Path, threads: int):
    """A callable running one batch-1 input, onnxruntime or LiteRT by suffix."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        if tuple(inp["shape"]) != x.shape:
            x = x.transpose(0, 2, 3, 1)
        if np.issubdtype(inp["dtype"], np.integer):
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127)
        interp.set_tensor(inp["index"], np.ascontiguousarray(x.astype(inp["dtype"])))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y
    return run


def compare(path: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    """Max |int8 file - converted torch model|, in output quantization steps, and top-1
    agreement. The step is estimated from the reference's distinct output values."""
    run = session(path, 1)
    out = np.concatenate([run(x[i:i + 1]) for i in range(len(x))])
    values = np.unique(reference)
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    return {"max_abs_diff": float(np.abs(out - reference).max()),
            "max_diff_steps": float(np.abs(out - reference).max() / step),
            "top1_agreement": float((out.argmax(1) == reference.argmax(1)).mean())}


def measure(files: dict[str, Path], shape, threads: int, rounds: int, runs: int) -> dict:
    """Median latency (ms) per artifact, measured interleaved in `rounds` rounds."""
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    runners = {key: session(path, threads) for key, path in files.items()}
    for run in runners.values():
        for _ in range(max(3, runs // 5)):
            run(x)
    medians: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                run(x)
                times.append(time.perf_counter() - start)
            medians[key].append(float(np.median(times)) * 1e3)
    return {key: float(np.median(v)) for key, v in medians.items()}


def op_counts(files: dict[str, Path]) -> dict:
    from edgekd.quant import graph

    return {key: (graph.onnx_op_counts(path) if path.suffix == ".onnx"
                  else graph.tflite_op_counts(path)) for key, path in files.items()
            if key.startswith("int8")}


def environment() -> dict:
    from importlib.metadata import version

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    packages = ["torch", "torchao", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert"]
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "packages": {p: version(p) for p in packages}}


def table(results: dict) -> str:
    lines = ["| model | runtime | threads | fp32 ms | int8 before ms | x | int8 after ms | x |"
             " ops int8/float before | after | partitions before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for rt, ext in (("onnxruntime", "onnx"), ("litert", "tflite")):
            b, a = r["ops"][f"int8-before.{ext}"], r["ops"][f"int8-after.{ext}"]
            part = (f"{b['delegate_partitions']}/{a['delegate_partitions']}" if ext == "tflite"
                    else "-")
            for threads, lat in r["latency_ms"].items():
                fp, lb, la = lat[f"fp32.{ext}"], lat[f"int8-before.{ext}"], lat[f"int8-after.{ext}"]
                lines.append(
                    f"| {name} | {rt} | {threads} | {fp:.3f} | {lb:.3f} | {fp / lb:.2f} | "
                    f"{la:.3f} | {fp / la:.2f} | {b['ops_int8']}/{b['ops_float']} | "
                    f"{a['ops_int8']}/{a['ops_float']} | {part} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke setting: cnn_8, 1 thread")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names, threads, rounds, runs = args.models, (1, 2), args.rounds, args.runs
    if args.tiny:
        names, threads, rounds, runs = ["cnn_8"], (1,), 2, 5
    warnings.simplefilter("ignore")
    results = {"environment": environment(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            files, parity = build_artifacts(name, Path(tmp))
            shape = MODELS[name][1]
            results["models"][name] = {
                "input_shape": [1, *shape], "parity_after": parity["after"],
                "parity_before": parity["before"], "ops": op_counts(files),
                "latency_ms": {t: measure(files, shape, t, rounds, runs) for t in threads}}
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(results, indent=1))
        tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
