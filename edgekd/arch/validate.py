"""Run one model natively and under emulation with edgekd's device runner; compare the logits.

Both runs use edgekd/devices/runner.py, the script that goes to real devices, so what is
validated is what a device runs: the same preprocessing, int8 quantisation of inputs, runtime
choice and logits.
"""

from __future__ import annotations

import difflib
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgekd.arch import sysroot
from edgekd.arch.compare import agreement, verdict
from edgekd.export.formats import SUFFIXES, suffix_list
from edgekd.files import kind_problem

RUNNER = Path(__file__).resolve().parents[1] / "devices" / "runner.py"
NOT_EMULATED = {
    ".pte": "arm64 validation does not cover .pte files: executorch 1.5.1 has an aarch64 wheel "
            "for Python 3.11, but its Python runtime loads torch, and PyPI's aarch64 torch "
            "2.14.1 is a CUDA build that does not import without gigabytes of CUDA wheels; "
            "run the .pte on an arm64 device instead (edgekd profile)",
}
"""Model suffixes the emulated root cannot run, and why (checked: `import torch` under qemu
fails with `libcublasLt.so.*[0-9] not found`)."""
RANDOM_SAMPLES = 100
RANDOM_SEED = 0
TIMEOUT_S = 900.0


class UsageError(ValueError):
    """The request itself is wrong (no such model, unknown arch) or this host lacks a tool;
    one line says what to change."""


def validate(model: Path, arch: str = "arm64", data: Path | None = None, *,
             cpu: str = sysroot.DEFAULT_CPU, min_agreement: float = 0.99,
             max_abs_diff: float | None = None,
             log: Callable[[str], None] = lambda _: None) -> dict:
    """Run `model` (.tflite or .onnx; not .pte, see NOT_EMULATED) on `data` (.npz with x
    float32 NCHW in [0, 1] and y; a fixed random set when None) natively and on `arch` under
    qemu, and compare the logits.

    Returns a JSON-ready dict; `passed` is the verdict (top-1 agreement >= `min_agreement`
    and, when given, max abs logit diff <= `max_abs_diff`). Raises UsageError for a bad
    request or missing host tools, PrepareError / RunError when a step fails.
    """
    model, data = Path(model), Path(data) if data is not None else None
    _check_request(model, arch, data, cpu, min_agreement)
    try:
        root = sysroot.ensure(arch, log=log)
    except sysroot.SetupError as exc:
        raise UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="edgekd-validate-arch.") as tmp:
        work = Path(tmp)
        source = data if data is not None else random_inputs(model, work / "random.npz")
        log(f"running {model.name} natively ({platform.machine()})")
        native = _run_native(model, source, work / "native.npy")
        log(f"running {model.name} on {arch} under qemu ({cpu})")
        emulated = _run_emulated(root, cpu, model, source, work / "emulated.npy")
        import numpy as np

        result = agreement(np.load(work / "native.npy"), np.load(work / "emulated.npy"))
    passed, reasons = verdict(result, min_agreement, max_abs_diff)
    return {
        "passed": passed, "verdict": "pass" if passed else "fail", "reasons": reasons,
        "model": str(model), "arch": arch, "cpu": cpu,
        "data": str(data) if data is not None else
        f"random: {RANDOM_SAMPLES} samples, seed {RANDOM_SEED}",
        **vars(result), "min_agreement": min_agreement, "max_abs_diff_limit": max_abs_diff,
        "native": {**_summary(native), "wheels": _host_versions()},
        "emulated": _summary(emulated),
        "emulator": {"qemu": root.info.get("qemu"), "root": str(root.path),
                     "wheels": root.info.get("installed", {})},
    }


def _check_request(model: Path, arch: str, data: Path | None, cpu: str,
                   min_agreement: float) -> None:
    if arch not in sysroot.ARCHES:
        raise UsageError(f"--arch {arch}: unknown architecture{_did_you_mean(arch, sysroot.ARCHES)}"
                         f" (known: {', '.join(sysroot.ARCHES)})")
    cpus = sysroot.ARCHES[arch].cpus
    if cpu not in cpus:
        raise UsageError(f"--cpu {cpu}: not an emulated {arch} core{_did_you_mean(cpu, cpus)}"
                         f" (known: {', '.join(cpus)})")
    if not 0.0 <= min_agreement <= 1.0:
        raise UsageError(f"--min-agreement {min_agreement}: must be between 0 and 1")
    if not model.is_file():
        raise UsageError(f"{model}: no such model file")
    if model.suffix in NOT_EMULATED:
        raise UsageError(f"{model}: {NOT_EMULATED[model.suffix]}")
    if model.suffix not in SUFFIXES:
        emulated = tuple(s for s in SUFFIXES if s not in NOT_EMULATED)
        raise UsageError(f"{model}: expected a {suffix_list(emulated)} model")
    if data is not None and (problem := kind_problem(data, "file")):
        raise UsageError(f"--data {data}: {problem}")
    if data is not None:
        import numpy as np

        try:
            with np.load(data) as blob:
                missing = [k for k in ("x", "y") if k not in blob.files]
        except (OSError, ValueError) as exc:
            raise UsageError(f"--data {data}: cannot read as .npz ({exc})") from None
        if missing:
            raise UsageError(f"--data {data}: .npz lacks array(s) {', '.join(missing)}")
    if platform.machine() not in ("x86_64", "AMD64"):
        raise UsageError(f"validate-arch runs on x86_64 hosts; this one is {platform.machine()}")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def random_inputs(model: Path, path: Path) -> Path:
    """A fixed random input set shaped for `model` (x float32 NCHW in [0, 1], y zeros)."""
    import numpy as np

    c, h, w = _input_chw(model)
    rng = np.random.default_rng(RANDOM_SEED)
    x = rng.random((RANDOM_SAMPLES, c, h, w), dtype=np.float32)
    np.savez(path, x=x, y=np.zeros(RANDOM_SAMPLES, np.int64))
    return path


def _input_chw(model: Path) -> tuple[int, int, int]:
    if model.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        dims = [d.dim_value or 1 for d in graph.input[0].type.tensor_type.shape.dim]
    else:
        from ai_edge_litert.interpreter import Interpreter

        dims = [int(d) for d in Interpreter(model_path=str(model)).get_input_details()[0]["shape"]]
    if len(dims) != 4:
        raise UsageError(f"{model}: input has shape {dims}; without --data only image models "
                         "(N x C x H x W) get random inputs")
    if dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):  # NHWC: the runner transposes
        return dims[3], dims[1], dims[2]
    return dims[1], dims[2], dims[3]


class RunError(RuntimeError):
    """The runner failed on one side; the message holds its error or its crash."""


def _runner_args(model: Path, data: Path, outputs: Path) -> list[str]:
    # One timing run: the timings of an emulated run mean nothing, only its outputs do.
    return [str(RUNNER), str(model.resolve()), "--runs", "1", "--warmup", "0", "--threads",
            "1", "--data", str(data.resolve()), "--outputs", str(outputs)]


def _run_native(model: Path, data: Path, outputs: Path) -> dict:
    done = subprocess.run([sys.executable, *_runner_args(model, data, outputs)],
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    return _parse(done, "native", outputs)


def _run_emulated(root: sysroot.Root, cpu: str, model: Path, data: Path,
                  outputs: Path) -> dict:
    done = sysroot.run_python(root, _runner_args(model, data, outputs), cpu, TIMEOUT_S)
    return _parse(done, f"{root.arch} (qemu {cpu})", outputs)


def _parse(done: subprocess.CompletedProcess, side: str, outputs: Path) -> dict:
    lines = done.stdout.strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else {}
    except ValueError:
        doc = {}
    if doc.get("ok") and outputs.is_file():
        return doc
    if doc.get("error"):
        raise RunError(f"{side} run failed: {doc['error']}")
    signal = f" (signal {-done.returncode})" if done.returncode < 0 else ""
    stderr = " | ".join(done.stderr.strip().splitlines()[-3:]) or "no output"
    raise RunError(f"{side} run crashed, exit {done.returncode}{signal}: {stderr}")


def _host_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for requirement in sysroot.WHEELS:
        name = requirement.split("==")[0]
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _summary(doc: dict) -> dict:
    keys = ("runtime", "machine", "python", "numpy", "accuracy", "samples")
    return {k: doc[k] for k in keys if k in doc}
