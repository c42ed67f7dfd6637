"""The stage table: every stage, the teacher included, as one entry.

Each stage is a module with one function `run(cfg, inputs, ctx) -> StageResult`, where
`inputs` holds the results of the stages its entry `needs` (those the pipeline has), by kind.
Stages never import each other: what one hands the next is its StageResult (artifacts and
metrics). The table is explicit (no registration by import side effect); a test checks that it
matches the stage kinds the config accepts. Adding a stage is one module, one entry here and
one config model in edgekd.config.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgekd.artifacts import StageResult


@dataclass(frozen=True)
class StageSpec:
    """How the loop runs one kind of stage."""

    kind: str
    needs: tuple[str, ...] = ()
    """Stages whose results this one receives (when the pipeline has them); their cache keys
    are part of this stage's key."""
    reads: tuple[str, ...] = ()
    """Top-level pipeline fields besides its own block that the stage reads (part of its cache
    key): e.g. the student spec, the target device."""
    parallel: bool = False
    """Trains data-parallel under `--nproc` (edgekd.parallel): the loop hands it to every rank."""
    settles: tuple[str, ...] = ()
    """Fields of its own block that only choose among what the stage made (distill's `ship`):
    left out of its cache key and applied by its module's `settle(cfg, result, ctx)` to the
    fresh or cached result, so that changing them retrains nothing."""

    def sizes(self, cfg, inputs: dict[str, StageResult], ctx) -> dict[str, float]:
        """What the stage knows before it trains (its module's `sizes`, if any): metrics the
        loop gates on before running it (edgekd.budgets.check_sizes)."""
        module = importlib.import_module(f"edgekd.stages.{self.kind}")
        return module.sizes(cfg, inputs, ctx) if hasattr(module, "sizes") else {}

    def check(self, cfg, inputs: dict[str, StageResult], ctx) -> None:
        """What the stage can refuse before it runs (its module's `check(cfg, inputs, ctx)`,
        if any): a ConfigError here stops the run before the stage's folder, its epoch
        checkpoints or the run's report are touched."""
        module = importlib.import_module(f"edgekd.stages.{self.kind}")
        if hasattr(module, "check"):
            module.check(cfg, inputs, ctx)

    def settle(self, cfg, result: StageResult, ctx) -> StageResult:
        """The result later stages, the gate and the report see: its module's
        `settle(cfg, result, ctx)`, or `result` itself when the stage settles nothing."""
        if not self.settles:
            return result
        return importlib.import_module(f"edgekd.stages.{self.kind}").settle(cfg, result, ctx)

    def run(self, cfg, inputs: dict[str, StageResult], ctx) -> StageResult:
        """Import the stage's module and call its `run(cfg, inputs, ctx)`."""
        module = importlib.import_module(f"edgekd.stages.{self.kind}")
        return module.run(cfg, inputs, ctx)


STAGES: dict[str, StageSpec] = {
    "teacher": StageSpec("teacher", reads=("precision", "compile"), parallel=True),
    "distill": StageSpec("distill", needs=("teacher",), reads=("student", "precision", "compile"),
                         parallel=True, settles=("ship",)),
    "quantize": StageSpec("quantize", needs=("teacher", "distill"),
                          reads=("precision", "compile"), parallel=True),
    "export": StageSpec("export", needs=("distill", "quantize")),
    "profile": StageSpec("profile", needs=("export",), reads=("target", "on_unreachable")),
}
