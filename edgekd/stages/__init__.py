"""One module per stage kind; each exposes `run(cfg, ctx) -> StageResult`.

The table is explicit (no registration by import side effect); a test checks it matches the
stage kinds the config accepts.
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.artifacts import StageResult


def _lazy(module: str) -> Callable:
    def run(cfg, ctx) -> StageResult:
        import importlib

        return importlib.import_module(f"edgekd.stages.{module}").run(cfg, ctx)

    run.__name__ = f"{module}.run"
    return run


STAGES: dict[str, Callable] = {
    "distill": _lazy("distill"),
    "quantize": _lazy("quantize"),
    "export": _lazy("export"),
    "profile": _lazy("profile"),
}
