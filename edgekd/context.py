"""What a stage can reach while it runs: the pipeline, the data, the teacher, earlier results.

Everything heavy is loaded on first use, so a fully cached rerun loads no data and no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import Pipeline

if TYPE_CHECKING:
    from torch import nn

    from edgekd.data import Splits


@dataclass
class Context:
    pipeline: Pipeline
    source: Path
    """The pipeline file (relative paths in it are resolved against its folder)."""
    run_dir: Path
    data_key: str
    results: dict[str, StageResult] = field(default_factory=dict)
    teacher_artifact: Artifact | None = None
    _splits: Splits | None = None
    _teacher: nn.Module | None = None
    _teacher_logits: np.ndarray | None = None

    def splits(self) -> Splits:
        if self._splits is None:
            from edgekd.data import load

            self._splits = load(self.pipeline.data, self.pipeline.seed)
        return self._splits

    def meta(self) -> dict:
        return self.splits().meta()

    def resolve(self, path: Path) -> Path:
        """A path from the pipeline file, relative to the file's folder."""
        return path if path.is_absolute() else self.source.parent / path

    def stage_dir(self, kind: str) -> Path:
        path = self.run_dir / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def teacher(self) -> nn.Module:
        if self._teacher is None:
            from edgekd.models import load_model

            self._teacher = load_model(self.teacher_artifact.path).eval()
        return self._teacher

    def cache_dir(self) -> Path:
        """Where teacher outputs are cached (kept across stages and reruns of this pipeline)."""
        return self.run_dir / "cache"

    def teacher_logits(self) -> np.ndarray:
        """The teacher's logits on the train split, computed once, memory-mapped from disk.

        Valid because edgekd trains without random augmentation: each sample's soft target
        never changes. Keyed by hashes of the teacher's weights and of the train array
        (edgekd.kd.cache), so the file is shared with the distill stage's cache.
        """
        if self._teacher_logits is None:
            from edgekd.kd.cache import LOGITS, TeacherOutputs

            outputs = TeacherOutputs(self.teacher(), [LOGITS], self.splits().x_train,
                                     self.cache_dir())
            self._teacher_logits = outputs.table(LOGITS.name)
        return self._teacher_logits

    def test_npz(self) -> Path:
        """The test split as an .npz (x, y) for runtimes and devices to read."""
        path = self.run_dir / "data" / f"test-{self.data_key}.npz"
        if not path.is_file():
            splits = self.splits()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, x=splits.x_test, y=splits.y_test)
            tmp.replace(path)
        return path
