#!/usr/bin/env python3
"""edgekd device runner: measure one .tflite, .onnx or .pte model in this (fresh) process.

Copied to the device as it is and run with the device's Python; needs only the standard
library, numpy, and ai_edge_litert / tflite_runtime / tensorflow.lite (.tflite), onnxruntime
(.onnx) or executorch (.pte; loads torch). Prints one JSON document on stdout: {"ok": true,
...metrics} or {"ok": false, "error": ..., "kind": "model"}.

    python3 runner.py MODEL [--runs N] [--warmup W] [--threads K] [--data test.npz]
                            [--runtime NAME] [--outputs logits.npy] [--etdump run.etdp]

--data: an .npz with `x` (float32, N x C x H x W in [0, 1]) and `y` (labels); accuracy is
measured one sample at a time. --etdump (.pte only): run again with ExecuTorch's event tracer
and write its ETDump (per-op timings), when the runtime was built with event tracing.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:  # reported as a setup problem by main(), not as a traceback
    np = None

TFLITE_RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
ONNX_RUNTIMES = ("onnxruntime",)
PTE_RUNTIMES = ("executorch",)
# Runtimes by suffix: a copy of edgekd.export.formats.RUNTIMES (a test checks they agree).
SUFFIX_RUNTIMES = {".onnx": ONNX_RUNTIMES, ".tflite": TFLITE_RUNTIMES, ".pte": PTE_RUNTIMES}
# The module each runtime is imported as (before the memory baseline is taken).
RUNTIME_MODULES = {"executorch": "executorch.runtime"}
ETDUMP_RUNS = 20


def memory_mb() -> dict[str, float]:
    """VmHWM (peak) and VmRSS of this process in MiB; ru_maxrss where /proc is absent."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def thermal() -> dict:
    """Temperature (deg C) and Raspberry Pi throttle flags, where the device exposes them."""
    state: dict = {}
    try:
        text = subprocess.run(["vcgencmd", "measure_temp"], capture_output=True, text=True,
                              timeout=5).stdout
        state["temperature_c"] = float(text.split("=")[1].split("'")[0])
        text = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                              timeout=5).stdout
        return {**state, "throttled": text.strip().split("=")[1]}
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        pass
    temps = []
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp")):
        try:
            with open(zone) as f:
                temps.append(int(f.read().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return {**state, "temperature_c": max(temps)} if temps else state


def system() -> dict:
    """What the device is: board, CPU governor, 32/64-bit user space."""
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "bits": platform.architecture()[0],
            "numpy": np.__version__ if np is not None else None}
    for key, path in (("board", "/proc/device-tree/model"),
                      ("governor", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")):
        try:
            with open(path) as f:
                info[key] = f.read().strip("\x00\n ")
        except OSError:
            pass
    return info


class SetupError(RuntimeError):
    """The device lacks something the run needs (a runtime); not the model's fault."""


def available_runtimes() -> list[str]:
    """Names of the inference runtimes importable here."""
    import importlib.util

    def present(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:  # a dotted name whose package is missing
            return False

    return [n for n in TFLITE_RUNTIMES + ONNX_RUNTIMES + PTE_RUNTIMES
            if present(RUNTIME_MODULES.get(n, n))]


class TfliteModel:
    """A .tflite interpreter; quantizes int8 inputs and dequantizes int8 outputs."""

    def __init__(self, path: str, runtime: str, threads: int):
        if runtime == "ai_edge_litert":
            from ai_edge_litert.interpreter import Interpreter
        elif runtime == "tflite_runtime":
            from tflite_runtime.interpreter import Interpreter
        else:
            from tensorflow.lite import Interpreter  # type: ignore[no-redef]
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        shape = tuple(self.input["shape"])
        if x.shape != shape and x.ndim == 4 and x.transpose(0, 2, 3, 1).shape == shape:
            x = x.transpose(0, 2, 3, 1)  # the model takes NHWC
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    def run(self, x: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()

    def result(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


class OnnxModel:
    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.last: np.ndarray | None = None

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.astype(np.float32))

    def run(self, x: np.ndarray) -> None:
        self.last = self.session.run(None, {self.input_name: x})[0]

    def result(self) -> np.ndarray:
        return self.last


class PteModel:
    """An ExecuTorch program (.pte) run by ExecuTorch's Python runtime; its input and output
    are float (an int8 program quantizes inside its XNNPACK delegate)."""

    def __init__(self, path: str, threads: int, etdump: bool = False):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        # ExecuTorch's one thread pool (XNNPACK's), shared by every program in this process.
        portable_lib._unsafe_reset_threadpool(threads)
        self.torch = torch
        self.program = Runtime.get().load_program(path, enable_etdump=etdump,
                                                  debug_buffer_size=0)
        names = self.program.method_names
        self.method = self.program.load_method("forward" if "forward" in names else min(names))
        self.shape = tuple(self.method.metadata.input_tensor_meta(0).sizes())
        self.last = None  # the output tensor of the last run

    def prepare(self, x: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(x.astype(np.float32)))

    def run(self, x) -> None:
        self.last = self.method.execute([x])[0]

    def result(self) -> np.ndarray:
        return self.last.numpy()


def choose_runtime(path: str, wanted: str) -> str:
    found = available_runtimes()
    suffix = os.path.splitext(path)[1]
    if suffix not in SUFFIX_RUNTIMES:
        raise RuntimeError(f"{os.path.basename(path)}: no runtime takes {suffix or 'no'} files "
                           f"(known: {', '.join(SUFFIX_RUNTIMES)})")
    candidates = SUFFIX_RUNTIMES[suffix]
    if wanted != "auto":
        if wanted not in candidates:
            raise RuntimeError(f"runtime {wanted} cannot run {os.path.basename(path)}")
        if wanted not in found:
            raise SetupError(f"runtime {wanted} is not installed (found: "
                             f"{', '.join(found) or 'none'})")
        return wanted
    for name in (n for n in candidates if n in found):
        return name
    raise SetupError(f"no runtime for {os.path.basename(path)} is installed; install one of "
                       f"{', '.join(candidates)} (found: {', '.join(found) or 'none'})")


def summarize(times_ms: list[float]) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"latency_ms_mean": float(t.mean()), "latency_ms_std": float(t.std()),
            **{f"latency_ms_p{q}": float(np.percentile(t, q)) for q in (50, 90, 99)},
            "latency_ms_min": float(t.min()), "latency_ms_max": float(t.max()), "runs": len(t)}


def measure(args: argparse.Namespace) -> dict:
    before = memory_mb()
    runtime = choose_runtime(args.model, args.runtime)
    # imported before the baseline (process + runtime): the delta is what the model adds
    __import__(RUNTIME_MODULES.get(runtime, runtime))
    baseline = memory_mb()
    start = time.perf_counter()
    model = open_model(args.model, runtime, args.threads)
    load_ms = (time.perf_counter() - start) * 1e3

    data = None
    if args.data:  # each array read once
        with np.load(args.data) as arrays:
            data = {"x": arrays["x"], "y": arrays["y"]}
        check_data(model, data["x"])
    sample = data["x"][:1] if data is not None else np.random.default_rng(0).random(
        [d or 1 for d in _input_dims(model)], dtype=np.float32)
    x = model.prepare(sample.astype(np.float32))

    start = time.perf_counter()
    model.run(x)
    first_ms = (time.perf_counter() - start) * 1e3
    if data is not None:  # the model's output size is its number of classes
        check_labels(data["y"], len(data["x"]), np.asarray(model.result()).size)
    for _ in range(args.warmup):
        model.run(x)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - start) * 1e3)
    result = {"load_ms": load_ms, "first_inference_ms": first_ms, **summarize(times)}
    if data is not None:
        result.update(evaluate(model, data, args.outputs))
    peak, base = memory_mb().get("VmHWM", 0.0), baseline.get("VmHWM", 0.0)
    result.update({"peak_memory_mb": peak, "baseline_memory_mb": base,
                   "model_memory_mb": peak - base,
                   "process_start_memory_mb": before.get("VmHWM", 0.0), "runtime": runtime,
                   "runtime_version": runtime_version(runtime), "threads": args.threads})
    if args.etdump:  # after the memory reading: the traced copy is not the model's cost
        result.update(etdump(args, runtime, x))
    return result


def runtime_version(runtime: str) -> str | None:
    """The installed version of the runtime's package (None when it does not say)."""
    from importlib import metadata

    try:
        return metadata.version(runtime.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def open_model(path: str, runtime: str, threads: int):
    """The model object (prepare / run / result) for `runtime`."""
    if runtime == "onnxruntime":
        return OnnxModel(path, threads)
    if runtime == "executorch":
        return PteModel(path, threads)
    return TfliteModel(path, runtime, threads)


class InputMismatch(ValueError):
    """The data given does not fit the model's input (the user's mistake, not the model's)."""


def _input_dims(model) -> list:
    """The model's input shape as it declares it; None for a dimension it leaves open."""
    if isinstance(model, OnnxModel):
        return [d if isinstance(d, int) and d > 0 else None
                for d in model.session.get_inputs()[0].shape]
    if isinstance(model, PteModel):
        return list(model.shape)
    return [int(d) for d in model.input["shape"]]


def check_data(model, x: np.ndarray) -> None:
    """Raise InputMismatch when samples x[i] cannot be the model's input (TFLite: or NHWC)."""
    dims, shape = _input_dims(model)[1:], x.shape[1:]
    shapes = [shape, shape[1:] + shape[:1]] if isinstance(model, TfliteModel) else [shape]
    if not any(len(s) == len(dims) and all(d in (None, s[i]) for i, d in enumerate(dims))
               for s in shapes):
        want = "x".join("?" if d is None else str(d) for d in dims)
        raise InputMismatch(f"samples are {'x'.join(map(str, shape))} but the model takes "
                            f"{want} (C x H x W after the batch)")


def check_labels(y: np.ndarray, samples: int, classes: int) -> None:
    """Raise InputMismatch unless `y` is one integer label in [0, classes) per sample."""
    if y.shape != (samples,):
        raise InputMismatch(f"y has shape {y.shape} but x has {samples} samples")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise InputMismatch(f"y is {y.dtype}; labels must be integers 0..{classes - 1}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(y) | (y != np.round(y)) | (y < 0) | (y >= classes)
    if bad.any():
        raise InputMismatch(f"y has {int(bad.sum())} label(s) outside the model's {classes} "
                            f"classes (integers 0..{classes - 1}), e.g. {y[bad][0]:g}")


def etdump(args: argparse.Namespace, runtime: str, x) -> dict:
    """Run the .pte again with ExecuTorch's event tracer and write its ETDump to
    `args.etdump`; says why not when this runtime cannot (built without event tracing)."""
    if runtime != "executorch":
        return {"etdump_error": f"--etdump needs a .pte file run by executorch, not {runtime}"}
    untraced = ("this ExecuTorch runtime was built without event tracing "
                "(EXECUTORCH_ENABLE_EVENT_TRACER=ON)")
    traced = PteModel(args.model, args.threads, etdump=True)
    native = getattr(traced.program, "_program", None)  # the runtime's own program object
    if native is not None and hasattr(native, "has_etdump") and not native.has_etdump():
        return {"etdump_error": untraced}
    for _ in range(ETDUMP_RUNS):
        traced.run(x)
    try:
        traced.program.write_etdump_result_to_file(args.etdump, args.etdump + ".debug")
    except RuntimeError as exc:
        return {"etdump_error": f"{untraced}: {exc}"}
    if not os.path.isfile(args.etdump) or os.path.getsize(args.etdump) == 0:
        return {"etdump_error": untraced}
    return {"etdump_runs": ETDUMP_RUNS}


def evaluate(model, data, outputs_path: str | None) -> dict:
    """Accuracy over the data, one sample at a time; logits saved if asked."""
    x, y = data["x"].astype(np.float32), data["y"]
    logits = []
    for i in range(len(x)):
        model.run(model.prepare(x[i:i + 1]))
        logits.append(np.asarray(model.result(), dtype=np.float32).reshape(1, -1))
    logits = np.concatenate(logits)
    if outputs_path:
        np.save(outputs_path, logits)
    return {"accuracy": float((logits.argmax(1) == y).mean()), "samples": int(len(y))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("model", nargs="?")
    for flag, default in (("--runs", 100), ("--warmup", 10), ("--threads", 1)):
        parser.add_argument(flag, type=int, default=default)
    for flag in ("--data", "--outputs", "--etdump"):
        parser.add_argument(flag)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--list-runtimes", action="store_true")
    args = parser.parse_args(argv)
    info = system()
    if args.list_runtimes:
        print(json.dumps({"ok": True, "runtimes": available_runtimes(), **info}))
        return 0
    if args.model is None:
        parser.error("MODEL is required")
    if np is None:
        print(json.dumps({"ok": False, "kind": "setup", "error": "numpy is not installed for "
                          f"{sys.executable}", **info}))
        return 1
    conditions = {"before": thermal()}
    try:
        result = measure(args)
    except (SetupError, InputMismatch) as exc:
        kind = "setup" if isinstance(exc, SetupError) else "input"
        print(json.dumps({"ok": False, "kind": kind, "error": str(exc), **info}))
        return 1
    except Exception as exc:  # any other failure is the model's or the runtime's
        print(json.dumps({"ok": False, "kind": "model", "error": f"{type(exc).__name__}: {exc}",
                          **info}))
        return 1
    conditions["after"] = thermal()
    print(json.dumps({"ok": True, **result, **info, "conditions": conditions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
