"""profile: measure every exported artifact on the pipeline's target device.

Each artifact runs in a fresh process (load time, first inference, latency percentiles after
warm-up, peak memory) with the device profile's thread count; fp32 and int8 files of the same
runtime are compared and an int8 file slower than its fp32 sibling is flagged.
"""

from __future__ import annotations

from edgekd.artifacts import StageResult
from edgekd.config import ProfileStage
from edgekd.console import progress
from edgekd.context import Context
from edgekd.devices.measure import profile
from edgekd.devices.profiles import load_profile

SIBLINGS = {"student_int8_onnx": "student_fp32_onnx",
            "student_int8_tflite": "student_fp32_tflite"}
# The ONNX file of the same precision: estimates of a .tflite take its MACs and activations.
ONNX_TWIN = {"student_int8_tflite": "student_int8_onnx",
             "student_fp32_tflite": "student_fp32_onnx"}


def run(cfg: ProfileStage, ctx: Context) -> StageResult:
    device = load_profile(ctx.pipeline.target, relative_to=ctx.source.parent)
    artifacts = {n: a for n, a in ctx.results["export"].artifacts.items() if a.deployable}
    data = ctx.test_npz() if cfg.accuracy else None
    result = StageResult({}, {}, info={"device": device.name, "transport": device.transport,
                                       "measured": True, "artifacts": {}})
    with progress(len(artifacts), f"profile on {device.name}") as bar:
        for name, artifact in artifacts.items():
            bar.set_postfix_str(name)
            measured = profile(artifact.path, device, runs=cfg.runs, warmup=cfg.warmup,
                               threads=cfg.threads, data=data,
                               on_unreachable=ctx.pipeline.on_unreachable,
                               estimate_inputs=_estimate_inputs(name, artifacts))
            result.metrics.update({f"{name}.{k}": v for k, v in measured.metrics.items()})
            result.info["artifacts"][name] = {
                "runtime": measured.runtime, "measured": measured.measured,
                "conditions": measured.conditions, "attempts": measured.attempts,
                "suspect": measured.suspect}
            result.info["measured"] = result.info["measured"] and measured.measured
            result.notes += [f"{name}: result suspect: {why}" for why in measured.suspect]
            bar.update(1)
    result.metrics.update(speedups(result.metrics))
    result.notes += slower_int8_warnings(result.metrics)
    return result


def _estimate_inputs(name: str, artifacts: dict) -> dict | None:
    """MACs, parameters and activation bytes for an estimate, when the device is unreachable.
    Counted from the ONNX file itself (None) or, for a .tflite, from its ONNX twin."""
    twin = artifacts.get(ONNX_TWIN.get(name, ""))
    if twin is None:
        return None
    from edgekd.devices.estimate import onnx_figures

    figures = onnx_figures(twin.path)
    figures["precision"] = "int8" if "int8" in name else "fp32"
    return figures


def speedups(metrics: dict[str, float]) -> dict[str, float]:
    """fp32 p50 / int8 p50 for each int8 artifact whose fp32 sibling was profiled too."""
    out = {}
    for int8, fp32 in SIBLINGS.items():
        a, b = metrics.get(f"{fp32}.latency_ms_p50"), metrics.get(f"{int8}.latency_ms_p50")
        if a and b:
            out[f"{int8}.int8_speedup"] = a / b
    return out


def slower_int8_warnings(metrics: dict[str, float]) -> list[str]:
    return [f"{name.removesuffix('.int8_speedup')}: int8 is SLOWER than fp32 on the same "
            f"runtime ({value:.2f}x the speed)"
            for name, value in metrics.items() if name.endswith(".int8_speedup") and value < 1]
