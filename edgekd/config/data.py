"""Where a pipeline's samples come from and how they are split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgekd.schema import Strict


class Split(Strict):
    """Fractions of the data held out for validation and test (stratified, seeded)."""

    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.25, gt=0, lt=0.5)


class DataConfig(Strict):
    """Where the samples come from and how they are shaped."""

    source: Literal["digits", "folder", "npz"] = "digits"
    path: Path | None = None
    """Image folder (one subfolder per class) or .npz file with arrays `x` and `y`."""
    image_size: tuple[int, int] | None = None
    """(height, width) every image is resized to: folder data needs it, .npz data is resized
    when given; the built-in digits are 8x8 and take none."""
    channels: Literal[1, 3] | None = None
    """Colour channels of folder images (1 grey, 3 RGB); default 3; folder data only."""
    split: Split = Split()

    @model_validator(mode="after")
    def _fields_match_source(self) -> DataConfig:
        if self.source == "digits" and self.path is not None:
            raise ValueError("path: the built-in digits data takes no path")
        if self.source != "digits" and self.path is None:
            raise ValueError(f"path: required for source {self.source!r}")
        if self.source == "folder" and self.image_size is None:
            raise ValueError("image_size: required for folder data, e.g. [32, 32]")
        if self.source == "digits" and self.image_size is not None:
            raise ValueError("image_size: the built-in digits are 8x8 and are not resized")
        if self.source != "folder" and self.channels is not None:
            raise ValueError(f"channels: only folder images are converted (1 grey, 3 RGB); "
                             f"{self.source} data keeps its own channels")
        return self
