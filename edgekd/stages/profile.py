"""profile: measure every exported artifact on the pipeline's target device.

Each artifact runs in a fresh process (load time, first inference, latency percentiles after
warm-up, peak memory) with the device profile's thread count; int8 files are compared with
their fp32 sibling on the same runtime (the export-format table says which) and an int8 file
slower than its sibling is flagged.
"""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import ProfileStage
from edgekd.console import progress
from edgekd.context import Context
from edgekd.devices.measure import profile
from edgekd.devices.profiles import load_profile
from edgekd.export.formats import FORMATS


def run(cfg: ProfileStage, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Measure every deployable artifact of `inputs["export"]` on the pipeline's target
    device; per-artifact metrics as `<artifact>.<metric>`, int8 speed-ups, and warnings for
    suspect results and int8 files slower than their fp32 sibling.

    Raises DeviceError when the device cannot be reached (unless on_unreachable: estimate)
    or the model fails on it."""
    device = load_profile(ctx.pipeline.target, relative_to=ctx.source.parent)
    artifacts = {n: a for n, a in inputs["export"].artifacts.items() if a.deployable}
    data = ctx.test_npz() if cfg.accuracy else None
    result = StageResult(measured_on=device.name,
                         info={"device": device.name, "transport": device.transport,
                               "artifacts": {}})
    with progress(len(artifacts), f"profile on {device.name}") as bar:
        for name, artifact in artifacts.items():
            bar.set_postfix_str(name)
            measured = profile(artifact.path, device, runs=cfg.runs, warmup=cfg.warmup,
                               threads=cfg.threads, data=data,
                               on_unreachable=ctx.pipeline.on_unreachable,
                               estimate_inputs=_estimate_inputs(artifact, artifacts))
            result.metrics.update({f"{name}.{k}": v for k, v in measured.metrics.items()})
            result.evaluated.append(name)
            result.info["artifacts"][name] = {
                "runtime": measured.runtime, "measured": measured.measured,
                "conditions": measured.conditions, "attempts": measured.attempts,
                "suspect": measured.suspect}
            result.estimated = result.estimated or not measured.measured
            result.warnings += [f"{name}: result suspect: {why}" for why in measured.suspect]
            if not measured.measured:
                from edgekd.devices.estimate import describe

                result.warnings.append(f"{name}: latency estimated, not measured: "
                                       f"{describe(measured.conditions)}")
            bar.update(1)
    result.metrics.update(speedups(result.metrics))
    suspect = {name: a["suspect"] for name, a in result.info["artifacts"].items()
               if a["suspect"]}
    result.warnings += slower_int8_warnings(result.metrics, suspect)
    result.summary = {label: result.metrics[key] for label, key in (
        ("int8 TFLite p90 ms", "student_int8_tflite.latency_ms_p90"),
        ("int8 TFLite peak MiB", "student_int8_tflite.peak_memory_mb"),
        ("int8 .pte p90 ms", "student_int8_pte.latency_ms_p90"),
        ("int8 .pte model MiB", "student_int8_pte.model_memory_mb"),
        ("int8 TFLite speed-up", "student_int8_tflite.int8_speedup"),
        ("int8 ONNX speed-up", "student_int8_onnx.int8_speedup"),
        ("int8 .pte speed-up", "student_int8_pte.int8_speedup")) if key in result.metrics}
    return result


def _estimate_inputs(artifact: Artifact, artifacts: dict[str, Artifact]) -> dict | None:
    """MACs, parameters and activation bytes for an estimate, when the device is unreachable.
    Counted from the file itself (None) or from the ONNX file the format table names."""
    fmt = FORMATS[artifact.format]
    twin = artifacts.get(FORMATS[fmt.estimate_from].artifact) if fmt.estimate_from else None
    if twin is None:
        return None
    from edgekd.devices.estimate import onnx_figures

    figures = onnx_figures(twin.path)
    figures["precision"] = fmt.precision
    return figures


def speedups(metrics: dict[str, float]) -> dict[str, float]:
    """fp32 p50 / int8 p50 for each int8 artifact whose fp32 sibling was profiled too."""
    out = {}
    for fmt in FORMATS.values():
        if fmt.fp32_sibling is None:
            continue
        fp32 = FORMATS[fmt.fp32_sibling].artifact
        a, b = metrics.get(f"{fp32}.latency_ms_p50"), metrics.get(f"{fmt.artifact}.latency_ms_p50")
        if a and b:
            out[f"{fmt.artifact}.int8_speedup"] = a / b
    return out


def slower_int8_warnings(metrics: dict[str, float],
                         suspect: dict[str, list[str]] | None = None) -> list[str]:
    """A warning for each `<artifact>.int8_speedup` below 1 (int8 slower than fp32); where
    either measurement of the pair is suspect (`suspect`: artifact -> reasons), it says so."""
    out = []
    for name, value in metrics.items():
        if not name.endswith(".int8_speedup") or value >= 1:
            continue
        artifact = name.removesuffix(".int8_speedup")
        fmt = next(f for f in FORMATS.values() if f.artifact == artifact)
        doubtful = [a for a in (artifact, FORMATS[fmt.fp32_sibling].artifact)
                    if (suspect or {}).get(a)]
        caveat = (f"; but the measurement of {' and '.join(doubtful)} is suspect (see its "
                  "warning), so this may be noise" if doubtful else "")
        out.append(f"{artifact}: int8 is SLOWER than fp32 on the same runtime ({value:.2f}x "
                   f"the speed){caveat}")
    return out
