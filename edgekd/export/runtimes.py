"""Run exported files with their own runtimes (onnxruntime, ai-edge-litert) on a whole split."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_logits(path: Path, x: np.ndarray, threads: int = 1, batch_size: int = 256) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def tflite_logits(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Batch-1 inference over `x`, with the device runner's own input quantization and output
    dequantization, so the export check and the devices feed a file the same way."""
    from edgekd.devices.runner import TfliteModel

    model = TfliteModel(str(path), "ai_edge_litert", threads)
    logits = []
    for i in range(len(x)):
        model.run(model.prepare(x[i:i + 1]))
        logits.append(np.asarray(model.result(), dtype=np.float32).reshape(1, -1))
    return np.concatenate(logits)


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        return onnx_logits(path, x)
    if path.suffix == ".tflite":
        return tflite_logits(path, x)
    raise ValueError(f"{path}: no runtime for {path.suffix} files")


def output_step(path: Path) -> float | None:
    """The quantization step of an int8 file's output (None for float outputs): the output
    tensor's scale in TFLite, the scale of the DequantizeLinear producing the ONNX output."""
    if path.suffix == ".onnx":
        return _onnx_output_step(path)
    from ai_edge_litert.interpreter import Interpreter

    out = Interpreter(model_path=str(path)).get_output_details()[0]
    scale = out["quantization"][0]
    return float(scale) if scale else None


def _onnx_output_step(path: Path) -> float | None:
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
