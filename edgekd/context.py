"""What a stage can reach while it runs besides its inputs: the pipeline, its data, its folders.

Everything heavy is loaded on first use, so a fully cached rerun loads no data and no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.config import ModelConfig, Pipeline

if TYPE_CHECKING:
    import numpy as np

    from edgekd.data import Splits
    from edgekd.kd.compute import Compute


@dataclass
class Context:
    """The pipeline, where it was read from, its run directory and its data (loaded once)."""

    pipeline: Pipeline
    source: Path
    """The pipeline file (relative paths in it are resolved against its folder)."""
    run_dir: Path
    data_key: str
    _splits: Splits | None = field(default=None, repr=False)
    _compute: Compute | None = field(default=None, repr=False)

    def splits(self) -> Splits:
        """The pipeline's data, split (train / val / test), loaded once."""
        if self._splits is None:
            from edgekd.data import load
            from edgekd.schema import ConfigError

            try:
                self._splits = load(self.pipeline.data, self.pipeline.seed)
            except ConfigError as exc:  # "data.<field>: ..." lines get the pipeline file
                raise ConfigError([f"{self.source}: {line}" if line.startswith("data.")
                                   else line for line in exc.lines]) from None
        return self._splits

    def compute(self) -> Compute:
        """Where training runs and in what precision (the pipeline's device, precision and
        compile; each torchrun rank takes its own GPU). Raises ConfigError naming `device`
        when the device is not available here."""
        if self._compute is None:
            import os

            from edgekd import parallel
            from edgekd.kd.compute import DeviceError, resolve
            from edgekd.schema import ConfigError

            p = self.pipeline
            local = int(os.environ["LOCAL_RANK"]) if parallel.launched() else None
            try:
                self._compute = resolve(p.device, p.precision, p.compile, local)
            except DeviceError as exc:
                raise ConfigError([f"{self.source}: device: {exc}"]) from None
        return self._compute

    def training_info(self) -> dict:
        """What a training stage's report records about how and on what it was measured."""
        s = self.splits()
        return {**self.compute().describe(), "test_split": s.test_origin,
                "splits": {"train": len(s.train), "val": len(s.val), "test": len(s.test),
                           "classes": len(s.classes)}}

    def meta(self) -> dict:
        """What a saved model records about the data (classes, channels, mean, std)."""
        return self.splits().meta()

    def build_model(self, spec: ModelConfig, where: str, role: str = "student"):
        """The model `spec` names (edgekd.models.registry.build) for this pipeline's data,
        paths resolved against the pipeline's folder. `where` is the spec's place in the file
        ("teacher", "student", "stages[0].assistants[1]") for error lines; a spec that cannot
        be built is a ConfigError `FILE: where.field: ...`. The caller seeds the generator."""
        from edgekd.models import ModelError, build
        from edgekd.schema import ConfigError

        try:
            return build(spec, self.meta(), self.source.parent.absolute(), role)
        except ModelError as exc:
            raise ConfigError([f"{self.source}: {where}.{exc}"]) from None

    def load_model(self, path: Path):
        """A model file a stage of this run wrote (edgekd.models.load_model), rebuilt only
        from what this pipeline names; a file whose record names other code or checkpoints
        (a run directory from elsewhere) is a ConfigError naming it."""
        from edgekd.models import ModelError, load_model
        from edgekd.schema import ConfigError

        try:
            return load_model(path, self.named_models())
        except ModelError as exc:
            raise ConfigError([f"{self.source}: {exc}"]) from None

    def check_models(self, inputs: dict) -> None:
        """ConfigError naming the first model file among the StageResults `inputs` that
        `load_model` would refuse (a record naming code or checkpoints the pipeline does not):
        asked before a stage touches its folder."""
        from edgekd.models import ModelError
        from edgekd.models.saved import check_model_file
        from edgekd.schema import ConfigError

        named = self.named_models()
        for result in inputs.values():
            for artifact in result.artifacts.values():
                if artifact.format == "torch":
                    try:
                        check_model_file(artifact.path, named)
                    except ModelError as exc:
                        raise ConfigError([f"{self.source}: {exc}"]) from None

    def named_models(self) -> list[dict]:
        """The portable spec (as saved model files record it) of every model the pipeline
        names: teacher, student, and those of its stages (teachers, assistants, peers)."""
        from pydantic import BaseModel

        from edgekd.models.registry import portable_spec

        found: list[dict] = []
        base = self.source.parent.absolute()

        def walk(value) -> None:
            if isinstance(value, ModelConfig):
                try:
                    found.append(portable_spec(value, base))
                except Exception:  # noqa: BLE001 - unbuildable: nothing can match it
                    pass
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)

        walk(self.pipeline)
        return found

    def resolve(self, path: Path) -> Path:
        """A path from the pipeline file, relative to the file's folder."""
        return path if path.is_absolute() else self.source.parent / path

    def where(self, kind: str) -> str:
        """`FILE: stages[i]` (or `FILE: teacher`) for error lines about stage `kind`."""
        if kind == "teacher":
            return f"{self.source}: teacher"
        index = next(i for i, s in enumerate(self.pipeline.stages) if s.kind == kind)
        return f"{self.source}: stages[{index}]"

    def stage_field(self, kind: str) -> str:
        """`stages[i]`: where the stage of `kind` sits in the file."""
        return self.where(kind).removeprefix(f"{self.source}: ")

    def stage_dir(self, kind: str) -> Path:
        path = self.run_dir / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cache_dir(self) -> Path:
        """Where teacher outputs are cached (kept across stages and reruns of this pipeline)."""
        return self.run_dir / "cache"

    def calibration_samples(self, count: int) -> np.ndarray:
        """`count` training inputs for post-training calibration, the same on every call."""
        from edgekd.data import calibration_samples

        return calibration_samples(self.splits(), self.pipeline.seed, count)

    def test_npz(self) -> Path:
        """The test split as an .npz (x, y) for runtimes and devices to read; written again
        when the one there is damaged (its zip checksums do not match)."""
        path = self.run_dir / "data" / f"test-{self.data_key}.npz"
        if not path.is_file() or _damaged_zip(path):
            from edgekd.data import save_npz

            save_npz(path, self.splits().test)
        return path


def _damaged_zip(path: Path) -> bool:
    """An .npz (a zip) that cannot be read whole, or whose members fail their CRC check."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is not None
    except (OSError, zipfile.BadZipFile):
        return True

