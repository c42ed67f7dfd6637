"""The quantize stage's output: one self-contained int8 model file that export reads.

QAT and PTQ alike end in a torchao PT2E model converted to int8. It is converted twice, once
with the weight quantization folded into int8 constants (what the ONNX exporter and the
accuracy check use) and once unfolded (what litert-torch's converter expects), and both
graphs are saved in one file with how they were made. Export rebuilds nothing: it loads this
file with `load` and never reads the quantize stage's config.

The file is a zip of the two graphs as `torch.export` programs (`folded.pt2`,
`unfolded.pt2`: torch's own serialization, not a pickle) and `recipe.json`. A round trip
leaves the graphs exact: on the digits student the reloaded graphs give bit-identical logits,
the same ONNX file and a byte-identical TFLite file.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from edgekd.files import atomic_path

FORMAT_VERSION = 1
EXAMPLE_BATCH = 8


@dataclass
class Int8Model:
    """A converted int8 model, in both the graph forms the exporters take."""

    folded: torch.fx.GraphModule
    """Weights as int8 constants, biases on the int32 grid: the reference every int8 file is
    compared with, and the source of the int8 ONNX file. Input N x C x H x W float32 in
    [0, 1] (the normalisation is inside), output N x classes logits."""
    unfolded: torch.fx.GraphModule
    """The same model with weight quantization kept as ops: the source of the int8 TFLite."""
    method: Literal["qat", "ptq"]
    calibration: dict = field(default_factory=dict)
    """ptq: the onnxruntime calibration settings (`edgekd.quant.ptq.Calibration` fields) and
    `samples`, the number of training samples calibrated on; empty for qat."""

    def logits(self, x, batch_size: int = 512):
        """Logits of the folded model for a numpy array; N x classes float32."""
        import numpy as np

        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                out.append(self.folded(torch.from_numpy(x[i:i + batch_size])).float().numpy())
        return np.concatenate(out)


def from_prepared(prepared: torch.fx.GraphModule, method: Literal["qat", "ptq"],
                  calibration: dict | None = None) -> Int8Model:
    """Convert a prepared (QAT-trained or PTQ-observed) PT2E model both ways."""
    from edgekd.quant.qat import convert

    return Int8Model(convert(prepared, fold=True), convert(prepared, fold=False), method,
                     dict(calibration or {}))


def save(model: Int8Model, path: Path, input_shape: tuple[int, ...]) -> Path:
    """Write `model` to `path` (a zip) atomically; `input_shape` is C x H x W of one input.
    Both graphs keep the dynamic batch they were captured with (1 to qat.MAX_BATCH)."""
    from edgekd.quant.qat import batch_dim

    example = (torch.zeros(EXAMPLE_BATCH, *input_shape),)
    recipe = {"version": FORMAT_VERSION, "method": model.method,
              "calibration": model.calibration, "input_shape": list(input_shape)}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in ("folded", "unfolded"):
            program = torch.export.export(getattr(model, name), example,
                                          dynamic_shapes=({0: batch_dim()},))
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
            archive.writestr(f"{name}.pt2", buffer.getvalue())
        archive.writestr("recipe.json", json.dumps(recipe, indent=2))
    return path


def load(path: Path) -> Int8Model:
    """Read a file `save` wrote. Raises ValueError naming the file if it is not one (or is
    from another version of this format)."""
    import torchao.quantization.pt2e  # noqa: F401  registers the quantized_decomposed ops

    try:
        with zipfile.ZipFile(path) as archive:
            recipe = json.loads(archive.read("recipe.json"))
            if recipe.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: int8 model format {recipe.get('version')}, "
                                 f"expected {FORMAT_VERSION}")
            graphs = {name: torch.export.load(io.BytesIO(archive.read(f"{name}.pt2"))).module()
                      for name in ("folded", "unfolded")}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: not an edgekd int8 model file ({exc})") from None
    return Int8Model(graphs["folded"], graphs["unfolded"], recipe["method"],
                     recipe["calibration"])
