"""Published latency measurements that calibrate estimates for unreachable devices.

The data is package data, edgekd/profiles/published/latency.yaml: where each number was read
(`sources`), the networks it was measured on with the figures edgekd counted from a
torchvision stand-in's ONNX export (`models`; bench/estimator.py recounts them), and one row
per published latency (`rows`). It is validated like pipelines: unknown keys, a row naming a
source or model that is not listed, or a model whose input size differs are errors.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgekd.schema import Strict, parse, read_yaml


class Source(Strict):
    """A document the rows were read from."""

    url: str = Field(pattern=r"^https://")
    """A permanent address (a commit, not a branch, for repositories)."""
    title: str
    """What it is and which part holds the numbers."""
    notes: str = ""
    """How the numbers were measured, as far as the source says."""


class Network(Strict):
    """A published network and the figures of its torchvision stand-in (random weights,
    exported with edgekd's own ONNX writer, counted by `estimate.onnx_figures`)."""

    builder: str
    """torchvision.models.<builder>, or a builder bench/estimator.py defines (mobilenet_v1)."""
    input: int = Field(gt=0)
    """Square input side in pixels, as published."""
    published_as: dict[str, str]
    """Its name in each source."""
    notes: str = ""
    """Where the stand-in differs from the published network."""
    dense_macs: int = Field(ge=0)
    depthwise_macs: int = Field(ge=0)
    activation_bytes: int = Field(ge=0)
    """fp32 bytes of every intermediate tensor."""
    params: int = Field(ge=0)
    layers: int = Field(ge=0)
    """Convolution and matrix-multiply layers."""

    def figures(self) -> dict[str, int]:
        """The figures as `onnx_figures` returns them."""
        return {"macs": self.dense_macs + self.depthwise_macs, "dense_macs": self.dense_macs,
                "depthwise_macs": self.depthwise_macs, "params": self.params,
                "activation_bytes": self.activation_bytes, "layers": self.layers}


class Row(Strict):
    """One published latency: batch 1, mean over the source's timed runs."""

    board: str
    """A device profile's `calibration_board` (rpi4, rpi5)."""
    model: str
    """A key of `models`."""
    input: int = Field(gt=0)
    threads: int = Field(ge=1)
    precision: Literal["fp32", "fp16", "int8"]
    """What the runtime computed in (ncnn runs float models in fp16 on cores with FP16
    arithmetic)."""
    runtime: str
    ms: float = Field(gt=0)
    source: str
    """A key of `sources`."""
    where: str
    """The line or table cell the number was read from."""
    exclude: str | None = None
    """Why this row is not used for fitting (kept so the reason stays visible)."""


class Published(Strict):
    """The whole file."""

    sources: dict[str, Source]
    models: dict[str, Network]
    rows: list[Row]

    @model_validator(mode="after")
    def _references(self) -> Published:
        for i, row in enumerate(self.rows):
            if row.source not in self.sources:
                raise ValueError(f"rows[{i}].source: unknown source {row.source!r}")
            if row.model not in self.models:
                raise ValueError(f"rows[{i}].model: unknown model {row.model!r}")
            if row.input != self.models[row.model].input:
                raise ValueError(f"rows[{i}].input: {row.input}, but models.{row.model}.input "
                                 f"is {self.models[row.model].input}")
        return self


def published_path() -> Path:
    """The data file shipped with edgekd."""
    return Path(resources.files("edgekd") / "profiles" / "published" / "latency.yaml")


@lru_cache(maxsize=4)
def load_published(path: Path | None = None) -> Published:
    """The validated data file (parsed once per path: it is package data, never edited at
    run time). Raises ConfigError naming the file and every problem."""
    path = path or published_path()
    return parse(Published, read_yaml(path), str(path))
