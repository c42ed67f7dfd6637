"""The schema of the quantize, export and profile stages (distill's is edgekd.config.distill)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd.budgets import ExportBudget, ProfileBudget, QuantizeBudget
from edgekd.config.data import Augment
from edgekd.config.models import MAX_EPOCHS, OptimizerConfig
from edgekd.export.formats import FORMAT_NAMES, missing_runtime
from edgekd.schema import Strict

ExportFormat = Literal[FORMAT_NAMES]  # the export-format table's names


class Calibration(Strict):
    """Post-training calibration. The int8 ONNX file is calibrated by onnxruntime with
    `method` and its options; the int8 TFLite by PT2E min/max observers (litert-torch)."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=50, le=100)
    """percentile: the |activation| percentile taken as the range."""
    num_bins: int = Field(2048, ge=16, le=1 << 20)
    """entropy / percentile: histogram bins collected per tensor."""
    num_quantized_bins: int = Field(128, ge=2, le=1 << 20)
    """entropy: bins of the quantized distribution the KL search compares against."""
    samples: int = Field(512, ge=1, le=1_000_000)
    """Training samples used for calibration."""


QAT_MAX_BATCH = 1024
"""The largest QAT batch: torch.export bakes the batch range a graph was captured with into its
guards (edgekd.quant.qat.MAX_BATCH, kept equal by a test; the config stays torch-free)."""

QAT_ONLY = ("epochs", "lr", "batch_size", "temperature", "alpha", "optimizer", "val_every",
            "patience", "augment")


class QuantizeStage(Strict):
    """int8: quantization-aware fine-tuning (`qat`, torchao PT2E, symmetric per-channel
    weights, teacher still on) or post-training calibration (`ptq`)."""

    kind: Literal["quantize"]
    method: Literal["qat", "ptq"] = "qat"
    calibration: Calibration = Calibration()
    """ptq only."""
    epochs: int = Field(3, ge=1, le=MAX_EPOCHS)
    """qat only: fine-tuning epochs."""
    lr: float = Field(1e-3, gt=0)
    """qat only: peak learning rate (AdamW, one-cycle)."""
    batch_size: int = Field(64, ge=1, le=QAT_MAX_BATCH)
    """qat only; at most QAT_MAX_BATCH (the captured graph's batch range)."""
    temperature: float = Field(4.0, gt=0)
    """qat only: softmax temperature of the teacher's soft targets."""
    alpha: float = Field(0.7, ge=0, le=1)
    """qat only: weight of the teacher's soft targets during fine-tuning (0 turns KD off)."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """qat only."""
    val_every: int = Field(1, ge=1, le=MAX_EPOCHS)
    """qat only: validate every this many epochs (and after the last); the best is kept."""
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    """qat only: early stopping after this many validations without a better accuracy."""
    augment: Augment | None = None
    """qat only: the fine-tuning's augmentation (default: data.augment). With augmentation
    the teacher runs on every batch instead of from the cache."""
    budget: QuantizeBudget | None = None

    @model_validator(mode="after")
    def _fields_match_method(self) -> QuantizeStage:
        if self.method == "qat" and "calibration" in self.model_fields_set:
            raise ValueError("calibration: only method: ptq calibrates; qat learns its ranges")
        if self.method == "ptq":
            given = [f for f in QAT_ONLY if f in self.model_fields_set]
            if given:
                raise ValueError(f"{given[0]}: only method: qat trains; ptq takes "
                                 "calibration: instead")
        return self


class ExportStage(Strict):
    """Write deployable files and check each against the PyTorch model it came from."""

    kind: Literal["export"]
    formats: list[ExportFormat] = ["onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"]
    opset: int = Field(18, ge=13, le=100)
    """ONNX opset of the .onnx files."""
    validate_arch: Literal["arm64"] | None = None
    """Also run every file with the arm64 builds of its runtime under user-mode emulation
    (qemu) and compare with x86 (edgekd validate-arch); min_top1_agreement gates it too."""
    validate_cpu: Literal["cortex-a72", "cortex-a76", "cortex-a53", "neoverse-n1"] = "cortex-a72"
    """The emulated CPU (cortex-a72: Raspberry Pi 4, cortex-a76: Pi 5); validate_arch only."""
    budget: ExportBudget | None = None

    @field_validator("formats")
    @classmethod
    def _runtimes_installed(cls, formats: list[str]) -> list[str]:
        """A format whose runtime is an optional extra that is not installed (.pte without
        executorch) is refused at load time, naming the pip command."""
        missing = [m for m in map(missing_runtime, formats) if m]
        if missing:
            raise ValueError(missing[0])
        return formats

    @field_validator("formats")
    @classmethod
    def _each_once(cls, formats: list[str]) -> list[str]:
        """A format given twice would be exported, measured and gated twice; none would
        write nothing and pass."""
        if not formats:
            raise ValueError("no format given; an export stage writes at least one (leave the "
                             "field out for onnx_fp32, onnx_int8, tflite_fp32, tflite_int8)")
        twice = next((f for i, f in enumerate(formats) if f in formats[:i]), None)
        if twice is not None:
            raise ValueError(f"{twice} given twice; give each format once")
        return formats

    @model_validator(mode="after")
    def _cpu_needs_arch(self) -> ExportStage:
        if "validate_cpu" in self.model_fields_set and self.validate_arch is None:
            raise ValueError("validate_cpu: the emulated CPU is used only with validate_arch")
        return self


class ProfileStage(Strict):
    """Measure every exported artifact on the pipeline's target device."""

    kind: Literal["profile"]
    runs: int = Field(200, ge=1, le=1_000_000)
    """Timed inferences per artifact."""
    warmup: int = Field(20, ge=0, le=1_000_000)
    """Untimed inferences before timing."""
    threads: int | None = Field(None, ge=1, le=1024)
    """Threads for the runtime; default the device profile's."""
    accuracy: bool = True
    """Also measure accuracy on the test split on the device."""
    budget: ProfileBudget | None = None

    @model_validator(mode="after")
    def _accuracy_budget_needs_accuracy(self) -> ProfileStage:
        if not self.accuracy and self.budget and self.budget.min_accuracy is not None:
            raise ValueError("accuracy: budget.min_accuracy needs the on-device accuracy "
                             "(accuracy: true)")
        return self
