"""Where a pipeline's samples come from, how they are split, augmented and streamed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from edgekd.schema import Strict

AUGMENT_PRESETS = ("none", "light", "standard")
MAX_IMAGE_SIDE = 4096
"""The largest image height or width edgekd takes (`image_size`, a model's `input.size`,
`check-model --input-shape`): a 4096 x 4096 RGB batch of 64 is already 12 GiB of float32."""
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
"""One image height or width in pixels."""


def check_mean_std(mean: list[float] | None, std: list[float] | None) -> None:
    """ValueError naming the field unless `mean` and `std` are both absent, or both given with
    one value per channel and every std > 0 (data statistics and a model's `input:` alike)."""
    if (mean is None) != (std is None):
        raise ValueError("mean: give mean and std together")
    if std is not None and min(std) <= 0:
        raise ValueError("std: every channel's std must be > 0")
    if mean is not None and len(mean) != len(std):
        raise ValueError("std: needs as many channels as mean")


class Split(Strict):
    """Fractions held out for validation and test (stratified, seeded) when the data does not
    come with its own `val` / `test` split."""

    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.25, gt=0, lt=0.5)


class Augment(Strict):
    """Random augmentation of the training split (torchvision.transforms.v2), seeded by
    (pipeline seed, epoch, sample), so a rerun and a resumed run see the same images.

    Presets: `none`; `light` = RandomCrop with 1/8 padding + RandomHorizontalFlip (CIFAR-style,
    He et al. 2016); `standard` = RandomResizedCrop (scale 0.08-1, Szegedy et al. 2015) +
    RandomHorizontalFlip. MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) mix whole
    batches; label smoothing (Szegedy et al. 2016) softens the hard labels. Validation and
    test data are never augmented."""

    preset: Literal[AUGMENT_PRESETS] = "none"
    mixup: float | None = Field(None, gt=0)
    """MixUp's Beta(alpha, alpha) parameter (0.2 is common); off when not given."""
    cutmix: float | None = Field(None, gt=0)
    """CutMix's Beta(alpha, alpha) parameter (1.0 is common); with mixup, one of the two is
    chosen per batch."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    @property
    def random(self) -> bool:
        """True when training inputs differ from epoch to epoch (a cached teacher output
        would no longer belong to its input)."""
        return self.preset != "none" or self.mixup is not None or self.cutmix is not None

    @model_validator(mode="before")
    @classmethod
    def _preset_name(cls, value):
        return {"preset": value} if isinstance(value, str) else value


class DataConfig(Strict):
    """Where the samples come from, how they are shaped, split, augmented and streamed."""

    source: Literal["digits", "folder", "npz", "manifest"] = "digits"
    path: Path | None = None
    """All the data in one place, split by `split:` fractions: an image folder (one subfolder
    per class), an .npz file with arrays `x` and `y`, or a manifest (.csv with columns
    `path,label` or .jsonl with keys `path` and `label`; image paths relative to it)."""
    train: Path | None = None
    """The training split given on its own (same kinds as `path`); instead of `path`."""
    val: Path | None = None
    """The validation split (with `train`); default: `split.val` of train held out."""
    test: Path | None = None
    """The test split (with `train`); default: `split.test` of train held out. Every accuracy
    in the report is measured on the test split."""
    image_size: tuple[Side, Side] | None = None
    """(height, width) every image is resized to (bilinear), each 1 to MAX_IMAGE_SIDE (4096):
    folder and manifest data need it; .npz data and the built-in 8x8 digits are resized when
    it is given."""
    channels: Literal[1, 3] | None = None
    """Colour channels of image files (1 grey, 3 RGB); default 3; folder and manifest only."""
    split: Split = Split()
    augment: Augment = Augment()
    """The training split's augmentation (a preset name or a block); a training stage's own
    `augment:` replaces it for that stage."""
    mean: list[float] | None = None
    """Per-channel mean of the inputs in [0, 1]; default: measured on a seeded sample of
    `stats_samples` training images."""
    std: list[float] | None = None
    """Per-channel standard deviation, with `mean`."""
    stats_samples: int = Field(2048, ge=1, le=1_000_000)
    """Training images read to measure mean and std (never a full pass over large data)."""
    num_workers: int | Literal["auto"] = "auto"
    """DataLoader worker processes. auto: 0 for data held in memory without augmentation (an
    array lookup is cheaper than a hand-over), else min(8, cores - 1), at least 1."""

    @property
    def given_splits(self) -> bool:
        """True when the data comes split (train / val / test paths) rather than in one."""
        return self.train is not None

    def paths(self) -> dict[str, Path]:
        """Every path the config names, by field."""
        return {k: v for k in ("path", "train", "val", "test")
                if (v := getattr(self, k)) is not None}

    def path_kind(self) -> str:
        """What each of `paths()` must be: a "folder" of class folders, or a "file"."""
        return "folder" if self.source == "folder" else "file"

    @model_validator(mode="after")
    def _fields_match_source(self) -> DataConfig:
        files = self.source != "digits"
        if not files and self.paths():
            raise ValueError(f"{next(iter(self.paths()))}: the built-in digits data takes no "
                             "path")
        if files and (self.path is None) == (self.train is None):
            raise ValueError(f"path: give either path (one set, split by fractions) or train "
                             f"(with optional val and test) for source {self.source!r}")
        if self.val is not None and self.test is not None and "split" in self.model_fields_set:
            raise ValueError("split: val and test are both given, so nothing is held out")
        if self.path is not None and (self.val or self.test):
            raise ValueError(f"{'val' if self.val else 'test'}: separate splits go with train:, "
                             "not path:")
        if self.source in ("folder", "manifest") and self.image_size is None:
            raise ValueError(f"image_size: required for {self.source} data, e.g. [32, 32]")
        if self.source not in ("folder", "manifest") and self.channels is not None:
            raise ValueError(f"channels: only image files are converted (1 grey, 3 RGB); "
                             f"{self.source} data keeps its own channels")
        if isinstance(self.num_workers, int) and self.num_workers < 0:
            raise ValueError("num_workers: must be >= 0 (0 loads in the training process)")
        check_mean_std(self.mean, self.std)
        return self
