"""Quantize an fp32 ONNX model with Olive's ONNX quantization passes, at their defaults.

Runs inside Olive's own virtual environment (bench/.olive-venv), never edgekd's: it imports
only Olive, numpy and what Olive pulls in. bench/peer.py calls it as

    OLIVE_PYTHON bench/olive_quantize.py MODEL.onnx CALIB.npz OUT_DIR

and reads one JSON line: {"ok": true, "olive": version, "models": {"static": path, ...}}.
CALIB.npz holds `x` (float32 N x C x H x W) for static quantization's calibration.
This file is also Olive's `user_script`: it registers the calibration dataset by name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from olive.data.registry import Registry
except ImportError:  # imported by Olive itself from its venv; elsewhere only main() matters
    Registry = None


def _calibration(data_dir: str, **_unused):
    """[({"input": sample}, 0), ...] from the .npz, the shape Olive's calibration reader wants."""
    import numpy as np
    import torch

    x = np.load(data_dir)["x"].astype(np.float32)
    return [({"input": torch.from_numpy(x[i])}, 0) for i in range(len(x))]


if Registry is not None:
    Registry.register_dataset("edgekd_calibration")(_calibration)


def _workflow(model: Path, calib: Path, out: Path, kind: str) -> dict:
    passes = {"dynamic": {"type": "OnnxDynamicQuantization"},
              "static": {"type": "OnnxStaticQuantization", "data_config": "calibration"}}
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{
            "name": "calibration", "type": "DataContainer", "user_script": str(Path(__file__)),
            "load_dataset_config": {"type": "edgekd_calibration", "data_dir": str(calib)},
            "dataloader_config": {"batch_size": 1}}],
        "passes": {kind: passes[kind]},
        "host": "local", "target": "local",
        "cache_dir": str(out / "cache"), "output_dir": str(out / kind),
        "log_severity_level": 3,
    }


def main(argv: list[str]) -> int:
    model, calib, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    from importlib.metadata import version

    from olive.workflows import run

    found, errors = {}, {}
    for kind in ("dynamic", "static"):
        try:
            run(_workflow(model, calib, out, kind))
            onnx = sorted((out / kind).rglob("*.onnx"))
            if not onnx:
                raise RuntimeError(f"Olive wrote no .onnx under {out / kind}")
            found[kind] = str(onnx[0])
        except Exception as exc:  # recorded, so the benchmark can say what failed
            errors[kind] = f"{type(exc).__name__}: {exc}"[:500]
    print(json.dumps({"ok": bool(found), "olive": version("olive-ai"), "models": found,
                      "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
