"""ExecuTorch: .pte files with the XNNPACK delegate, run by ExecuTorch's own runtime.

Writing: the model is captured by torch.export at batch 1 (what a device runs) and lowered with
`to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()]).to_executorch()`. The
int8 file comes from the quantize stage's *folded* graph (`convert_pt2e` with its default
`fold_quantize=True`), the graph ExecuTorch's own XNNPACK flow takes: the partitioner matches
int8 weight constants behind a dequantize. The unfolded graph (what litert-torch takes) keeps
`quantize_per_channel` on float weights; lowered, it left both convolutions and the linear
layer of the digits student on portable kernels (4 partitions) and could not be serialized
(those quantize ops have no out-variant). The folded graph lowered to one partition holding
every op.

Reading: everything here is taken from the .pte file itself. Its execution plan holds one
DelegateCall per XNNPACK partition and one KernelCall per op left to the portable CPU kernels;
each partition's XNNPACK graph (a flatbuffer whose schema ships with executorch, read with the
`flatc` executorch bundles) lists the nodes XNNPACK runs, their tensor types and, for an int8
model, the quantization scale of the output.

ExecuTorch's program deserializer and flatc wrapper are private APIs (`executorch.exir.
_serialize`): executorch is pinned exactly in constraints.txt and only this module uses them.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekd.export.writers import ExportSource, Written
from edgekd.files import atomic_path

BACKEND = "XnnpackBackend"

# XNNPACK nodes and portable kernels that move data without arithmetic.
_LAYOUT_NODES = frozenset({"XNNStaticTranspose", "XNNStaticReshape", "XNNStaticSlice",
                           "XNNStaticConstantPad", "XNNConcatenate2", "XNNConcatenate3",
                           "XNNConcatenate4", "XNNConcatenate5", "XNNCopy"})
_LAYOUT_KERNELS = frozenset({"view_copy", "permute_copy", "squeeze_copy", "unsqueeze_copy",
                             "expand_copy", "clone", "_to_dim_order_copy", "slice_copy",
                             "select_copy", "cat", "et_view", "sym_size"})
_INT_TYPES = ("int8", "uint8", "int32")  # substrings of XNNPACK's quantized datatypes
_SCALAR_INT = frozenset({0, 1, 12, 13, 14})  # ExecuTorch ScalarType: BYTE, CHAR, QUINT8, ...


# ---- writing --------------------------------------------------------------------------------

def pte_fp32(source: ExportSource, path: Path, opset: int) -> Written:
    """fp32 .pte (XNNPACK delegate) of the distilled student; compared with it."""
    return Written(write_pte(source.fp32, source.input_shape, path), source.fp32, "fp32")


def pte_int8(source: ExportSource, path: Path, opset: int) -> Written:
    """int8 .pte (XNNPACK delegate) from the folded int8 model; compared with it (QAT and
    PT2E post-training alike: both are torchao PT2E graphs)."""
    int8 = source.require_int8("pte_int8")
    return Written(write_pte(int8.folded, source.input_shape, path), int8.folded, "int8")


def write_pte(model, input_shape: tuple[int, ...], path: Path) -> Path:
    """Lower `model` (float N x C x H x W in, logits out) to a batch-1 .pte with every op
    XNNPACK takes in its delegate, atomically."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgekd.console import quiet

    example = (torch.zeros(1, *input_shape),)
    with quiet(), torch.no_grad(), atomic_path(path) as tmp:
        program = torch.export.export(model, example)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        tmp.write_bytes(lowered.to_executorch().buffer)
    return path


# ---- running ----------------------------------------------------------------------------------

def pte_logits(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Batch-1 logits over `x` (N x C x H x W float32) by ExecuTorch's Python runtime (the
    runtime `executorch.runtime.Runtime`, as the device runner uses it), N x classes.

    In this process: a .pte takes and returns float tensors (an int8 program quantizes inside
    its delegate), so there is no input conversion to share with the runner, as LiteRT's
    evaluation does. `threads` sets ExecuTorch's one (process-wide) thread pool."""
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    from edgekd.console import quiet

    with quiet():  # the runtime logs its thread-pool reset (and load errors) from C++
        portable_lib._unsafe_reset_threadpool(threads)
        method = load_method(Runtime.get().load_program(Path(path)), path)
    out = []
    for i in range(len(x)):
        sample = torch.from_numpy(np.ascontiguousarray(x[i:i + 1], dtype=np.float32))
        out.append(method.execute([sample])[0].numpy().reshape(1, -1))
    return np.concatenate(out)


def load_method(program, path: str | Path, name: str = "forward"):
    """`program.load_method(name)`, with ExecuTorch's error code made a sentence: an op this
    runtime has no kernel for (error 0x14, OperatorMissing) is named, read from the file's
    operator table against the kernels this runtime registered.

    Raises RuntimeError "PATH: ExecuTorch has no kernel for aten::sort.values ...". """
    try:
        return program.load_method(name)
    except RuntimeError as exc:
        missing = missing_operators(path)
        if not missing:
            raise
        raise RuntimeError(f"{Path(path).name}: this ExecuTorch runtime has no kernel for "
                           f"{', '.join(missing)} (outside the XNNPACK delegate; ExecuTorch: "
                           f"{exc})") from exc


def missing_operators(path: str | Path) -> list[str]:
    """The ops a .pte file calls outside its delegates that this process's ExecuTorch runtime
    has no kernel registered for (aten::sort.values, ...), in file order."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.extension.pybindings import portable_lib

    registered = set(portable_lib._get_operator_names())
    program = deserialize_pte_binary(Path(path).read_bytes()).program
    names = (f"{op.name}.{op.overload}" if op.overload else op.name
             for plan in program.execution_plan for op in plan.operators)
    return [name for name in dict.fromkeys(names) if name not in registered]


# ---- reading the file -------------------------------------------------------------------------

@dataclass(frozen=True)
class Delegation:
    """How a .pte file's ops are split between XNNPACK and the portable kernels."""

    partitions: int
    """XNNPACK delegate calls (each a hand-over from the portable executor to XNNPACK)."""
    delegated: Counter
    """XNNPACK node kind (XNNConv2d, XNNConvert, ...) -> count, over every partition."""
    portable: Counter
    """Portable kernel (aten::convolution, ...) -> count, run outside the delegate."""
    classes: Counter
    """(class, op) -> count, class one of int8, float, quantize, dequantize, layout (as
    edgekd.quant.graph classifies ONNX and TFLite ops)."""
    output_scale: float | None
    """Quantization scale of the model's output before its final dequantize, if int8."""

    @property
    def share(self) -> float:
        """Share of the ops XNNPACK runs (1.0: all of them)."""
        inside, outside = sum(self.delegated.values()), sum(self.portable.values())
        return inside / (inside + outside) if inside + outside else 1.0


def delegation(path: str | Path) -> Delegation:
    """Read the delegate partitions and op split of a .pte file (see the module docstring)."""
    return _delegation(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _delegation(path: str, _mtime: int) -> Delegation:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    program = deserialize_pte_binary(Path(path).read_bytes()).program
    classes: Counter = Counter()
    delegated: Counter = Counter()
    portable: Counter = Counter()
    partitions = 0
    scale = None
    outputs = set()
    for plan in program.execution_plan:
        outputs.update(plan.outputs)
        for chain in plan.chains:
            for instruction in chain.instructions:
                call = instruction.instr_args
                if isinstance(call, DelegateCall):
                    partitions += 1
                    delegate = plan.delegates[call.delegate_index]
                    if delegate.id != BACKEND:
                        raise ValueError(f"{path}: delegate {delegate.id}: edgekd reads "
                                         f"{BACKEND} partitions only")
                    graph = _xnnpack_graph(program, delegate, path)
                    found = _graph_ops(graph)
                    delegated.update(kind for (_cls, kind) in found.elements())
                    classes.update(found)
                    if set(call.args) & outputs:  # this partition computes a model output
                        scale = _output_scale(graph) if scale is None else scale
                elif isinstance(call, KernelCall):
                    name = plan.operators[call.op_index].name
                    portable[name] += 1
                    classes[(_kernel_class(name, plan, call), name)] += 1
    return Delegation(partitions, delegated, portable, classes, scale)


def _xnnpack_graph(program, delegate, path: str) -> dict:
    """One XNNPACK partition's graph as JSON (flatc, with the schema executorch ships)."""
    from importlib import resources

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir.schema import DataLocation

    if delegate.processed.location != DataLocation.INLINE:
        raise ValueError(f"{path}: XNNPACK data kept outside the program is not read")
    blob = program.backend_delegate_data[delegate.processed.index].data
    header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
    flatbuffer = blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
    schema = resources.files("executorch.backends.xnnpack.serialization") / "schema.fbs"
    with tempfile.TemporaryDirectory(prefix="edgekd-pte-") as tmp, \
            resources.as_file(schema) as schema_path:
        binary = Path(tmp) / "graph.bin"
        binary.write_bytes(flatbuffer)
        _flatc_decompile(tmp, str(schema_path), str(binary))
        text = (Path(tmp) / "graph.json").read_text()
    # flatc writes inf / nan bare (an output clamp of a ReLU has max inf): not JSON.
    return json.loads(re.sub(r'(:\s*)(-?)(inf|nan)\b', r'\1"\2\3"', text))


def _values(graph: dict) -> dict[int, dict]:
    """XNNPACK value id -> {"datatype": ..., "scale": per-tensor scale or None}."""
    out = {}
    for value in graph.get("xvalues", []):
        body = value.get("xvalue_union", {})
        tensor = body.get("tensor_value", body)
        params = body.get("quant_params") or {}
        scale = params.get("scale") if isinstance(params.get("scale"), float) else None
        out[tensor.get("id_out")] = {"datatype": tensor.get("datatype", ""), "scale": scale}
    return out


def _io(node: dict) -> tuple[int | None, int | None]:
    """(first input id, output id) of an XNNPACK node."""
    body = node.get("xnode_union", {})
    first = next((body[k] for k in ("input_id", "input1_id") if k in body), None)
    output = next((body[k] for k in ("output_id", "output_value_id", "output1_id")
                   if k in body), None)
    return first, output


def _is_int(value: dict | None) -> bool:
    return value is not None and any(t in value["datatype"] for t in _INT_TYPES)


def _graph_ops(graph: dict) -> Counter:
    """(class, node kind) -> count over one XNNPACK graph."""
    values = _values(graph)
    found: Counter = Counter()
    for node in graph.get("xnodes", []):
        kind = node.get("xnode_union_type", "?")
        first, output = _io(node)
        if kind == "XNNConvert":
            cls = "quantize" if _is_int(values.get(output)) else "dequantize"
        elif kind in _LAYOUT_NODES:
            cls = "layout"
        else:
            cls = "int8" if _is_int(values.get(output)) else "float"
        found[(cls, kind)] += 1
    return found


def _output_scale(graph: dict) -> float | None:
    """The scale of the int8 tensor the graph's first output is dequantized from."""
    values = _values(graph)
    outputs = graph.get("output_ids") or []
    for node in graph.get("xnodes", []):
        first, output = _io(node)
        if outputs and output == outputs[0]:
            source = values.get(first) if node.get("xnode_union_type") == "XNNConvert" \
                else values.get(output)
            return source["scale"] if _is_int(source) else None
    return None


def _kernel_class(name: str, plan, call) -> str:
    """int8 / float / quantize / dequantize / layout for a portable kernel call."""
    short = name.split("::")[-1]
    if short.startswith("quantize_per"):
        return "quantize"
    if short.startswith("dequantize_per"):
        return "dequantize"
    if short in _LAYOUT_KERNELS or name.startswith("executorch_prim::"):
        return "layout"
    out = plan.values[call.args[-1]].val if call.args else None
    return "int8" if int(getattr(out, "scalar_type", -1)) in _SCALAR_INT else "float"


def pte_op_counts(path: str | Path) -> dict[str, float]:
    """Integer vs float ops of a .pte file and how the XNNPACK delegate covers it.

    `delegate_partitions`: XNNPACK delegate calls; `ops_in_delegate` / `ops_outside_delegate`:
    XNNPACK nodes vs portable kernel calls; `delegated_ops`: the share XNNPACK runs (1.0 =
    all; `min_delegated_ops` gates it). The rest as `edgekd.quant.graph.onnx_op_counts`."""
    found = delegation(path)
    total: Counter = Counter()
    for (kind, _op), n in found.classes.items():
        total[kind] += n
    return {"ops_int8": total["int8"], "ops_float": total["float"],
            "quantize_nodes": total["quantize"], "dequantize_nodes": total["dequantize"],
            "layout_ops": total["layout"], "delegate_partitions": found.partitions,
            "ops_in_delegate": sum(found.delegated.values()),
            "ops_outside_delegate": sum(found.portable.values()),
            "delegated_ops": found.share}


def pte_ops_outside_delegate(path: str | Path) -> Counter:
    """Portable kernel (aten::sort.values, ...) -> calls, for the ops XNNPACK does not run."""
    return Counter(delegation(path).portable)


def pte_output_scale(path: str | Path) -> float | None:
    """The quantization scale of an int8 .pte's output (None for a float model)."""
    return delegation(path).output_scale


# ---- per-op profile ---------------------------------------------------------------------------

class OpProfileUnavailable(RuntimeError):
    """The ETDump holds no per-op events (the runtime was built without event tracing or
    without XNNPACK's profiler); nothing is guessed instead."""


def op_profile_csv(etdump: Path, out: Path) -> int:
    """Per-op timings from an ETDump, by ExecuTorch's Inspector, as a CSV: one row per op
    (XNNPACK's own op names inside a delegate), with runs and mean / median / p90 / min / max
    in ms (XNNPACK's profiler counts whole microseconds, so an op shorter than that reads 0).
    The first traced run (cold caches, first-touch allocations) is left out of `runs` and the
    statistics. Returns the number of rows; raises OpProfileUnavailable when there are none."""
    from edgekd.console import quiet

    with quiet():  # importing the devtools brings torch and its import-time warnings
        from executorch.devtools import Inspector

        inspector = Inspector(etdump_path=str(etdump))
    rows = []
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None or event.name in ("Method::execute", "DELEGATE_CALL"):
                continue
            times = np.asarray(event.perf_data.raw, dtype=np.float64)
            times = times[1:] if len(times) > 1 else times  # the first run is the cold one
            rows.append([event.name, "XNNPACK" if event.is_delegated_op else "portable",
                         len(times), *(f"{t:.6f}" for t in (
                             times.mean(), np.median(times), np.percentile(times, 90),
                             times.min(), times.max()))])
    if not rows:
        raise OpProfileUnavailable(f"{etdump}: no per-op events (the runtime was built without "
                                   "event tracing or without XNNPACK's profiler)")
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["op", "runs_on", "runs", "mean_ms", "p50_ms", "p90_ms", "min_ms",
                         "max_ms"])
        writer.writerows(rows)
    return len(rows)
