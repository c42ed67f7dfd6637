"""The export-format table: everything edgekd knows about each file format, in one place.

Per format: its artifact and file name, suffix, the runtime that runs it, its precision, its
fp32 sibling (int8 speed-up), the file an estimate counts MACs from, and the functions that
write it, run it on the host, count its ops (and delegate coverage) and read its output
quantization scale. ExecuTorch (.pte) is an optional extra: `missing_runtime` says so in one
line when a pipeline asks for it without it. Export,
profile, the local measurement, arch validation and the CLI read this table; the device
runner (standard library + numpy only) keeps its own small copy of the suffix -> runtime map,
checked against `RUNTIMES` by a test. An unknown format or suffix is an error, never a
fallback. Adding a format is one writer (and evaluator, if its runtime is new) plus one entry.

The functions are named as "module:function" and imported on first call, so reading the table
(as `edgekd validate` does) loads no torch and no runtime.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


def _lazy(target: str) -> Callable:
    """A function that imports `module:function` when first called, then calls it."""
    module, _, name = target.partition(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call


@dataclass(frozen=True)
class Runtime:
    """An inference engine the host uses to check files of one suffix."""

    name: str
    suffix: str
    device_runtimes: tuple[str, ...]
    """Python packages that run these files on a device, in the order the device runner
    tries them (edgekd/devices/runner.py keeps a copy: SUFFIX_RUNTIMES)."""
    evaluate: Callable
    """evaluate(path, x) -> logits: x float32 N x C x H x W in [0, 1]; returns N x classes."""
    op_counts: Callable
    """op_counts(path) -> {"ops_int8": n, "ops_float": n, ...}: how much runs in int8."""
    output_scale: Callable
    """output_scale(path) -> float | None: the output tensor's quantization scale (int8)."""
    outside_delegate: Callable | None = None
    """outside_delegate(path) -> Counter: op name -> count of the ops the runtime's delegate
    (XNNPACK) leaves to its own kernels; None when the runtime has no delegate."""
    package: str | None = None
    """The distribution the host needs to write and run these files, when it is an optional
    extra of edgekd (None: a core dependency)."""
    extra: str | None = None
    """The pip extra of edgekd that installs `package`."""

    @property
    def delegates(self) -> bool:
        """Runs a delegate (XNNPACK) whose coverage op_counts reports as `delegated_ops`, the
        share of ops inside it, which the `min_delegated_ops` budget gates."""
        return self.outside_delegate is not None


RUNTIMES: dict[str, Runtime] = {
    "litert": Runtime("litert", ".tflite", ("ai_edge_litert", "tflite_runtime", "tensorflow"),
                      _lazy("edgekd.export.runtimes:tflite_logits"),
                      _lazy("edgekd.quant.graph:tflite_op_counts"),
                      _lazy("edgekd.export.runtimes:tflite_output_scale"),
                      _lazy("edgekd.quant.graph:tflite_ops_outside_delegate")),
    "onnxruntime": Runtime("onnxruntime", ".onnx", ("onnxruntime",),
                           _lazy("edgekd.export.runtimes:onnx_logits"),
                           _lazy("edgekd.quant.graph:onnx_op_counts"),
                           _lazy("edgekd.export.runtimes:onnx_output_scale")),
    "executorch": Runtime("executorch", ".pte", ("executorch",),
                          _lazy("edgekd.export.executorch:pte_logits"),
                          _lazy("edgekd.export.executorch:pte_op_counts"),
                          _lazy("edgekd.export.executorch:pte_output_scale"),
                          _lazy("edgekd.export.executorch:pte_ops_outside_delegate"),
                          package="executorch", extra="executorch"),
}


@dataclass(frozen=True)
class Format:
    """One file format the export stage writes."""

    name: str
    """The name pipelines use in `formats:` (e.g. onnx_int8)."""
    artifact: str
    """The artifact's name in reports and budgets (e.g. student_int8_onnx)."""
    filename: str
    runtime: str
    """A key of RUNTIMES."""
    precision: Literal["fp32", "int8"]
    write: Callable
    """write(source: edgekd.export.writers.ExportSource, path, opset) -> Written."""
    fp32_sibling: str | None = None
    """The fp32 format on the same runtime, for the int8 speed-up (int8 formats only)."""
    estimate_from: str | None = None
    """The format whose ONNX file an estimate counts MACs and activations from, when this
    file's own graph cannot be counted (None: the file itself)."""
    deployable: bool = True
    """Runs on a device: profiled, and gated by per-artifact budgets."""

    @property
    def suffix(self) -> str:
        return RUNTIMES[self.runtime].suffix


FORMATS: dict[str, Format] = {
    "onnx_fp32": Format("onnx_fp32", "student_fp32_onnx", "student_fp32.onnx", "onnxruntime",
                        "fp32", _lazy("edgekd.export.writers:onnx_fp32")),
    "onnx_int8": Format("onnx_int8", "student_int8_onnx", "student_int8.onnx", "onnxruntime",
                        "int8", _lazy("edgekd.export.writers:onnx_int8"),
                        fp32_sibling="onnx_fp32"),
    "tflite_fp32": Format("tflite_fp32", "student_fp32_tflite", "student_fp32.tflite",
                          "litert", "fp32", _lazy("edgekd.export.writers:tflite_fp32"),
                          estimate_from="onnx_fp32"),
    "tflite_int8": Format("tflite_int8", "student_int8_tflite", "student_int8.tflite",
                          "litert", "int8", _lazy("edgekd.export.writers:tflite_int8"),
                          fp32_sibling="tflite_fp32", estimate_from="onnx_int8"),
    "pte_fp32": Format("pte_fp32", "student_fp32_pte", "student_fp32.pte", "executorch",
                       "fp32", _lazy("edgekd.export.executorch:pte_fp32"),
                       estimate_from="onnx_fp32"),
    "pte_int8": Format("pte_int8", "student_int8_pte", "student_int8.pte", "executorch",
                       "int8", _lazy("edgekd.export.executorch:pte_int8"),
                       fp32_sibling="pte_fp32", estimate_from="onnx_int8"),
}

FORMAT_NAMES = tuple(FORMATS)
SUFFIXES = tuple(dict.fromkeys(r.suffix for r in RUNTIMES.values()))


def suffix_list(suffixes: tuple[str, ...] = SUFFIXES) -> str:
    """`.tflite, .onnx or .pte`: the suffixes for a message."""
    return " or ".join(suffixes) if len(suffixes) < 3 else \
        f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"


def by_artifact(name: str) -> Format | None:
    """The format of an artifact name (student_int8_onnx -> onnx_int8), or None."""
    return next((f for f in FORMATS.values() if f.artifact == name), None)


def missing_runtime(name: str) -> str | None:
    """Why format `name` cannot be written on this host (its runtime, an optional extra of
    edgekd, is not installed), as one line naming the pip command; None when it can."""
    from importlib import metadata

    runtime = RUNTIMES[FORMATS[name].runtime]
    if runtime.package is None:
        return None
    try:
        metadata.distribution(runtime.package)
        return None
    except metadata.PackageNotFoundError:
        pass
    return (f"{name} needs {runtime.package}, which is not installed: "
            f"pip install 'edgekd[{runtime.extra}]'")


def runtime_for(path: Path) -> Runtime:
    """The host runtime for a model file, by suffix; ValueError naming the file otherwise."""
    suffix = Path(path).suffix
    for runtime in RUNTIMES.values():
        if runtime.suffix == suffix:
            return runtime
    raise ValueError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; edgekd runs "
                     f"{', '.join(SUFFIXES)} files")


# Flatbuffer file identifiers (bytes 4-8): TFLite's schema says "TFL3"; ExecuTorch's program
# schema "ET" and two digits of its version ("ET12").
_IDENTIFIERS = {".tflite": (b"TFL3", "a TFLite flatbuffer"),
                ".pte": (b"ET", "an ExecuTorch program")}


def not_a_model(path: Path) -> str | None:
    """Why `path` cannot be the model file its suffix says (empty, not a flatbuffer of that
    schema, not an ONNX protobuf), in words; None when its header looks right. A cheap check
    of the header only: a runtime may still reject a damaged file whose header is intact."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(40)
    if not head:
        return "the file is empty"
    if path.suffix in _IDENTIFIERS:
        magic, what = _IDENTIFIERS[path.suffix]
        if head[4:4 + len(magic)] != magic:
            return f"not {what} (no {magic.decode()} identifier at byte 4)"
        if path.suffix == ".pte":
            return _pte_truncated(head, path.stat().st_size)
        return None
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
            return f"not an ONNX model ({type(exc).__name__})"
        if not model.graph.node:
            return "not an ONNX model (no graph nodes)"
    return None


def _pte_truncated(head: bytes, size: int) -> str | None:
    """Whether an ExecuTorch program is shorter than its extended header says: at byte 8,
    "eh00", its length (uint32), then the program's size, the segments' offset and their
    size (uint64 each, little-endian; ExecuTorch's schema/extended_header.h)."""
    if head[8:12] != b"eh00" or len(head) < 32:
        return None
    length = int.from_bytes(head[12:16], "little")
    program, base = int.from_bytes(head[16:24], "little"), int.from_bytes(head[24:32], "little")
    segments = int.from_bytes(head[32:40], "little") if length >= 32 and len(head) >= 40 else 0
    needed = max(program, base + segments if base else 0)
    if size < needed:
        return f"truncated: {size} bytes, where its header says {needed}"
    return None

