"""Exportability before training: does an untrained student survive what the pipeline will do
to it? In seconds, not hours later in the export stage.

`check` runs, on a copy of the model with its untrained weights: torch.export with the dynamic
batch every edgekd capture uses; PT2E `prepare_qat_pt2e` with edgekd's quantizer when the
pipeline quantizes with QAT (what the quantize stage captures); a dry int8 model when an int8
format is asked; then each format's own writer, and one run of each written file in its own
runtime (a file can be written and still be refused by its interpreter: an int8 .tflite with a
BROADCAST_TO LiteRT rejects). The dry int8 model takes the PTQ route (prepare_pt2e, observe
random inputs, convert): it has the same ops as the QAT graph without convert_pt2e's ~40 s of
conv-bn pattern traces.

A failure raises `NotExportable`, whose message is one line naming the step or format, the op
the converter could not handle and the module it comes from:

    tflite_fp32: litert-torch cannot lower aten._fft_r2c.default (from module net.filter:
    GlobalFilter, at gfnet.py:12): FFT normalization != 0 is not yet implemented.

`cached_check` keeps successes under `<cache>/export-checks/` ($EDGEKD_CACHE, else
$XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd), keyed by what decides the outcome: the model's
spec and input, the data's shape and classes, the formats, the quantization method, the
versions of the converters and the content of the user's own files (module, checkpoint,
Hugging Face config). Weights are left out: they do not change which ops the graph holds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from edgekd.files import sha256_file, write_json

Quantize = Literal["qat", "ptq"] | None
Log = Callable[[str, float], None]
"""log(step, seconds): called as each step passes."""

CACHE_FORMAT = 1
CALIBRATION_SAMPLES = 8
PACKAGES = ("torch", "torchao", "litert-torch", "onnx", "onnxscript", "onnxruntime",
            "ai-edge-litert")
"""Versions that decide whether a model converts (part of the cache key), with those of the
optional runtimes the checked formats need (executorch for .pte)."""


class NotExportable(Exception):
    """The model fails a step of the pipeline's capture, quantization or export.

    `str(exc)` is one line: `<step or format>: <tool> cannot ... <op> (from module <path>):
    <reason>`. `step` is the step or format name, `op` the aten op (or TFLite opcode) the
    tool named (None when it named none), `module` the module path it was traced to (None
    when unknown), `detail` the tool's whole error with its traceback, for a log file."""

    def __init__(self, line: str, step: str, op: str | None, module: str | None, detail: str):
        super().__init__(line)
        self.step, self.op, self.module, self.detail = step, op, module, detail


def check(model, input_shape: tuple[int, ...], formats: list[str], quantize: Quantize,
          opset: int = 18, log: Log | None = None) -> dict:
    """Check that `model` (N x C x H x W float32 in [0, 1] -> logits) captures, quantizes and
    converts to each of `formats` (edgekd.export.formats names), and that each written file
    runs in its runtime; in a temporary folder, on a copy (the caller's model is untouched).

    `input_shape` is C x H x W of one input; `quantize` the pipeline's method ("qat", "ptq")
    or None without a quantize stage. Returns {"seconds": total, "steps": {step: seconds}}.
    Raises NotExportable at the first failing step, ValueError for an unknown format or an
    int8 format without `quantize`."""
    import torch

    _check_arguments(formats, quantize)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        return _check(model, input_shape, formats, quantize, opset, log)


def _check(model, input_shape, formats, quantize, opset, log) -> dict:
    import numpy as np

    from edgekd.export.formats import FORMATS, RUNTIMES
    from edgekd.export.writers import ExportSource

    run = _Run(copy.deepcopy(model).eval(), tuple(input_shape), log)
    run.capture(quantize)
    int8 = run.int8(quantize) if any(FORMATS[f].precision == "int8" for f in formats) else None
    rng = np.random.default_rng(0)
    source = ExportSource(run.model, int8, run.input_shape,
                          lambda n: rng.random((n, *run.input_shape), dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="edgekd-check-") as tmp:
        for name in formats:
            fmt = FORMATS[name]
            with run.step(name, name, _writer_tool(name)):
                written = fmt.write(source, Path(tmp) / fmt.filename, opset)
            runtime = RUNTIMES[fmt.runtime]
            with run.step(f"{name} load", name, f"{_runtime_label(runtime.name)} cannot run"):
                runtime.evaluate(written.path, source.calibration_samples(2))
    return {"seconds": round(time.perf_counter() - run.start, 2), "steps": run.steps}


def _check_arguments(formats: list[str], quantize: Quantize) -> None:
    from edgekd.export.formats import FORMAT_NAMES, FORMATS
    from edgekd.schema import did_you_mean

    for name in formats:
        if name not in FORMATS:
            raise ValueError(f"formats: unknown format {name!r}{did_you_mean(name, FORMATS)}; "
                             f"give {', '.join(FORMAT_NAMES)}")
        if FORMATS[name].precision == "int8" and quantize is None:
            raise ValueError(f"formats: {name} needs a quantize stage (quantize qat or ptq)")
    if quantize not in ("qat", "ptq", None):
        raise ValueError(f"quantize: {quantize!r}; give qat, ptq or None")


def _writer_tool(name: str) -> str:
    if name.startswith("onnx"):
        return "the ONNX exporter cannot convert"
    if name.startswith("pte"):
        return "ExecuTorch cannot lower"
    return "litert-torch cannot lower"


def _runtime_label(runtime: str) -> str:
    return {"litert": "LiteRT", "onnxruntime": "onnxruntime",
            "executorch": "ExecuTorch"}.get(runtime, runtime)


class _Run:
    """One check in progress: the working copy, its exported program (to trace a failing op
    back to its module) and the seconds of each step passed so far."""

    def __init__(self, model, input_shape: tuple[int, ...], log: Log | None):
        self.model, self.input_shape, self.log = model, input_shape, log
        self.program = None
        self.steps: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def step(self, key: str, label: str, tool: str) -> Iterator[None]:
        """Time one step under `key`, converters silenced; a failure becomes NotExportable
        naming `label` (the step or format) and `tool` ("litert-torch cannot lower")."""
        from edgekd.console import quiet

        start = time.perf_counter()
        try:
            with quiet():
                yield
        except Exception as exc:
            raise explain(exc, label, tool, self.model, self.program) from exc
        self.steps[key] = round(time.perf_counter() - start, 2)
        if self.log is not None:
            self.log(key, self.steps[key])

    def capture(self, quantize: Quantize) -> None:
        """torch.export with edgekd's dynamic batch, then QAT capture when QAT is asked."""
        import torch

        from edgekd.quant import qat

        example = torch.rand(2, *self.input_shape)
        with self.step("torch.export", "torch.export", "torch.export cannot capture"):
            self.program = torch.export.export(self.model, (example,),
                                               dynamic_shapes=({0: qat.batch_dim()},))
        if quantize == "qat":
            with self.step("qat prepare", "qat prepare", "PT2E prepare_qat_pt2e fails on"):
                qat.prepare(self.model, self.input_shape)  # captures a train-mode copy
            self.model.eval()

    def int8(self, quantize: Quantize):
        """The dry int8 model, by the PTQ route on random inputs, labelled as `quantize` makes
        it (for ptq the int8 ONNX writer then calibrates the fp32 file with onnxruntime)."""
        import numpy as np

        from edgekd.quant import int8, ptq

        samples = np.random.default_rng(1).random((CALIBRATION_SAMPLES, *self.input_shape),
                                                  dtype=np.float32)
        calibration = {"samples": CALIBRATION_SAMPLES} if quantize == "ptq" else None
        with self.step("int8 convert", "int8 convert", "PT2E int8 quantization fails on"):
            return int8.from_prepared(ptq.pt2e_ptq(self.model, samples), quantize, calibration)


# Where converters name the op they could not handle, most specific first.
_OP_PATTERNS = (
    re.compile(r"target=torch\.ops\.(\w+\.\w+\.\w+)"),  # fx "While executing %node" notes
    re.compile(r"OpOverload\(op='(\w+\.\w+)', overload='(\w+)'\)"),  # ONNX dispatcher
    re.compile(r"Lowering not found: (\w+\.\w+(?:\.\w+)?)"),  # litert-torch
    re.compile(r"builtin opcode '(\w+)'"),  # the TFLite interpreter
    re.compile(r"\b(aten\.\w+(?:\.\w+)?)"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in \w+')


def explain(exc: BaseException, step: str, tool: str, model=None, program=None) -> NotExportable:
    """A converter's exception as NotExportable: the op it names (in its message or those of
    its causes), the module that op belongs to (from the exported graph's nn_module_stack,
    else the innermost traced frame of a module of `model`) and the first line of the root
    cause as the reason."""
    import traceback

    chain = _chain(exc)
    text = _ANSI.sub("", "\n".join(str(e) for e in chain))
    op = _op(text)
    found = (_module_of_op(op, _node_name(text), program) if op and program is not None
             else None) or _module_of_frames(chain, model)
    where = ""
    if found:
        path, kind, location = found
        location = location or _location(text)
        where = f" (from module {path}: {kind}{f', at {location}' if location else ''})"
    line = f"{step}: {tool} {op or 'the model'}{where}: {_reason(chain)}"
    detail = "".join(traceback.format_exception(exc))
    return NotExportable(line, step, op, found[0] if found else None, detail)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, outermost first."""
    chain = [exc]
    while chain[-1].__cause__ is not None and chain[-1].__cause__ not in chain:
        chain.append(chain[-1].__cause__)
    return chain


def _op(text: str) -> str | None:
    for pattern in _OP_PATTERNS:
        found = pattern.search(text)
        if found:
            return ".".join(found.groups())
    return None


def _node_name(text: str) -> str | None:
    """The graph node an fx interpreter or the ONNX exporter was at (`While executing %x`)."""
    found = re.search(r"(?:While executing|translating node) %(\w+)", text)
    return found.group(1) if found else None


def _reason(chain: list[BaseException]) -> str:
    """The first line of the innermost cause that says something, at most 200 characters."""
    for exc in reversed(chain):
        lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
        if lines:
            reason = lines[0].split("could not run it: ", 1)[-1]  # runtimes.tflite_logits
            return reason if len(reason) <= 200 else reason[:197] + "..."
    return type(chain[-1]).__name__


def _location(text: str) -> str | None:
    """`file.py:12`: the innermost frame of the "Original traceback" fx appends."""
    _, _, original = text.rpartition("Original traceback:")
    frames = _USER_FRAME.findall(original)
    return f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else None


def _module_of_op(op: str, node_name: str | None,
                  program) -> tuple[str, str, str | None] | None:
    """(path, type, file.py:line) of the module whose forward holds the node calling `op` (an aten
    overload, or a TFLite opcode matched by name; the node named `node_name` if there is one)
    in `program`, else in its core-aten decomposition (converters see decomposed ops:
    aten._fft_r2c for fft_rfft2)."""
    name = op.split(".")[1] if "." in op else op.lower().removeprefix("stablehlo_")
    for graph in (lambda: program.graph, lambda: program.run_decompositions().graph):
        try:
            nodes = [n for n in graph().nodes if n.op == "call_function"
                     and (str(n.target) == op or str(n.target).split(".")[1:2] == [name])
                     and n.meta.get("nn_module_stack")]
        except Exception:  # a program that does not decompose: the op alone is named
            return None
        if nodes:
            node = next((n for n in nodes if n.name == node_name), nodes[0])
            path, kind = list(node.meta["nn_module_stack"].values())[-1]
            kind = getattr(kind, "__name__", str(kind)).rsplit(".", 1)[-1]
            frames = _USER_FRAME.findall(node.meta.get("stack_trace") or "")
            location = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else None
            return path.removeprefix("L['self'].") or "(top level)", kind, location
    return None


def _module_of_frames(chain: list[BaseException], model) -> tuple[str, str, str] | None:
    """(path, type, file.py:line) of the innermost traceback frame running a module of
    `model` (tracing runs the model's Python, so a capture error is raised inside it)."""
    if model is None:
        return None
    paths = {id(module): path for path, module in model.named_modules()}
    found = None
    for exc in chain:
        tb = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if id(owner) in paths:
                found = (paths[id(owner)] or "(top level)", type(owner).__name__,
                         f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}")
            tb = tb.tb_next
    return found


def cache_root() -> Path:
    """edgekd's cache folder: $EDGEKD_CACHE, else $XDG_CACHE_HOME/edgekd, else
    ~/.cache/edgekd."""
    if os.environ.get("EDGEKD_CACHE"):
        return Path(os.environ["EDGEKD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def cache_key(record: dict, input_shape: tuple[int, ...], num_classes: int, formats: list[str],
              quantize: Quantize, opset: int = 18) -> str | None:
    """sha256 of everything that decides a check's outcome (module docstring); None when the
    model's record holds no spec (nothing to key on: it is checked every time)."""
    spec = record.get("spec")
    if not spec:
        return None
    doc = {"version": CACHE_FORMAT, "spec": spec, "input": record.get("input"),
           "input_shape": list(input_shape), "num_classes": num_classes,
           "formats": sorted(formats), "quantize": quantize, "opset": opset,
           "versions": _versions(formats),
           "files": {str(p): sha256_file(p) for p in _source_files(spec)}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _versions(formats: list[str]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from edgekd import __version__
    from edgekd.export.formats import FORMATS, RUNTIMES

    out: dict[str, str | None] = {"edgekd": __version__}
    extras = {RUNTIMES[FORMATS[f].runtime].package for f in formats if f in FORMATS}
    for package in PACKAGES + tuple(sorted(p for p in extras if p)):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _source_files(spec: dict) -> list[Path]:
    """The user's files that define the network: a module's .py (file or importable module),
    a whole checkpoint, a Hugging Face directory's config.json."""
    import importlib.util

    files = []
    target = spec.get("module", "").rpartition(":")[0]
    if target.endswith(".py"):
        files.append(Path(target))
    elif target:
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin:
            files.append(Path(found.origin))
    if spec.get("checkpoint"):
        files.append(Path(spec["checkpoint"]))
    if str(spec.get("arch", "")).startswith("hf:"):
        files.append(Path(spec["arch"][3:]) / "config.json")
    return [f for f in files if f.is_file()]


def cached_check(model, record: dict, input_shape: tuple[int, ...], num_classes: int,
                 formats: list[str], quantize: Quantize, opset: int = 18,
                 log: Log | None = None) -> dict:
    """`check`, unless the same check passed before (cache_key): then its stored result at
    once. Returns check's dict plus "cached" (True when it came from the cache). Only passes
    are stored (atomically); raises what `check` raises."""
    key = cache_key(record, input_shape, num_classes, formats, quantize, opset)
    path = cache_root() / "export-checks" / f"{key}.json" if key else None
    if path is not None and path.is_file():
        try:
            return {**json.loads(path.read_text())["result"], "cached": True}
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry: check again and overwrite it
    result = check(model, input_shape, formats, quantize, opset, log)
    if path is not None:
        write_json(path, {"spec": record.get("spec"), "input_shape": list(input_shape),
                          "num_classes": num_classes, "formats": sorted(formats),
                          "quantize": quantize, "result": result})
    return {**result, "cached": False}
