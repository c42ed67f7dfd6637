"""Run exported files with their own runtimes (onnxruntime, ai-edge-litert) on a whole split."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_logits(path: Path, x: np.ndarray, threads: int = 1, batch_size: int = 256) -> np.ndarray:
    """onnxruntime (CPU) logits over `x` (N x C x H x W float32), in batches; N x classes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def tflite_logits(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Batch-1 LiteRT logits over `x` (N x C x H x W float32), N x classes.

    Run by the device runner itself (edgekd/devices/runner.py, in a fresh process with
    `--outputs`), so the export check feeds a file exactly as devices do: the same input
    quantization, layout and output dequantization, with no second copy of that code."""
    import json
    import subprocess
    import sys
    import tempfile
    from importlib.resources import files

    runner = files("edgekd.devices") / "runner.py"
    with tempfile.TemporaryDirectory(prefix="edgekd-eval-") as tmp:
        data, out = Path(tmp) / "x.npz", Path(tmp) / "logits.npy"
        np.savez(data, x=x.astype(np.float32), y=np.zeros(len(x), np.int64))
        done = subprocess.run(
            [sys.executable, str(runner), str(path), "--runs", "1", "--warmup", "0",
             "--threads", str(threads), "--runtime", "ai_edge_litert", "--data", str(data),
             "--outputs", str(out)], capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        doc = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if not doc.get("ok") or not out.is_file():
            why = doc.get("error") or done.stderr.strip()[-500:] or f"exit {done.returncode}"
            raise RuntimeError(f"{path}: LiteRT could not run it: {why}")
        return np.load(out)


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of a model file over `x` by its own runtime (edgekd.export.formats.RUNTIMES).

    Raises ValueError for a file no runtime takes."""
    from edgekd.export.formats import runtime_for

    return runtime_for(path).evaluate(path, x)


def output_scale(path: Path) -> float | None:
    """The quantization scale of an int8 file's output (None for float outputs).

    Raises ValueError for a file no runtime takes."""
    from edgekd.export.formats import runtime_for

    return runtime_for(path).output_scale(path)


def tflite_output_scale(path: Path) -> float | None:
    """The scale of the TFLite output tensor (None when it is float)."""
    from ai_edge_litert.interpreter import Interpreter

    out = Interpreter(model_path=str(path)).get_output_details()[0]
    scale = out["quantization"][0]
    return float(scale) if scale else None


def onnx_output_scale(path: Path) -> float | None:
    """The scale of the DequantizeLinear producing the ONNX output (None when there is none)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    output = graph.output[0].name
    producer = next((n for n in graph.node if output in n.output), None)
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scales.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims == []})
    scale = scales.get(producer.input[1])
    return float(scale) if scale is not None and scale.size == 1 else None
