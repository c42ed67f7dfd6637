"""Pipeline configuration: pydantic models (unknown keys are errors) and `load_pipeline`.

One module per part of a pipeline file: `data`, `models` (teacher, student and other model
specs), `distill` (the distill stage and its KD methods), `stages` (quantize, export,
profile) and `pipeline` (the file as a whole). Per-stage budget types live in
edgekd.budgets, the YAML and error-line machinery in edgekd.schema. Nothing here imports
torch, so `edgekd validate` is instant.
"""

from edgekd.budgets import DistillBudget, ExportBudget, ProfileBudget, QuantizeBudget
from edgekd.config.data import Augment, DataConfig, Split
from edgekd.config.distill import (
    AttentionConfig,
    DistillStage,
    EnsembleTeacher,
    HintConfig,
    LayerPair,
    MutualConfig,
    RelationalConfig,
    SelfDistillConfig,
)
from edgekd.config.models import (
    ARCHS,
    CNN_ARCHS,
    SOURCES,
    TORCHVISION_ARCHS,
    InputSpec,
    ModelConfig,
    OptimizerConfig,
    TeacherConfig,
    TrainConfig,
)
from edgekd.config.pipeline import STAGE_KINDS, Pipeline, Stage, load_pipeline
from edgekd.config.stages import Calibration, ExportFormat, ExportStage, ProfileStage, QuantizeStage
from edgekd.schema import ConfigError, Strict, parse, read_yaml

__all__ = [
    "ARCHS", "CNN_ARCHS", "SOURCES", "STAGE_KINDS", "TORCHVISION_ARCHS", "AttentionConfig",
    "Augment", "Calibration", "ConfigError", "DataConfig", "DistillBudget", "DistillStage",
    "EnsembleTeacher", "ExportBudget", "ExportFormat", "ExportStage", "HintConfig", "InputSpec",
    "LayerPair", "ModelConfig", "MutualConfig", "OptimizerConfig", "Pipeline", "ProfileBudget",
    "ProfileStage", "QuantizeBudget", "QuantizeStage", "RelationalConfig", "SelfDistillConfig",
    "Split", "Stage", "Strict", "TeacherConfig", "TrainConfig", "load_pipeline", "parse",
    "read_yaml",
]
