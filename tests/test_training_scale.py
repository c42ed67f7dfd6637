"""Training at scale (issue 12): the DataLoader loop resumes after a kill to the same weights
(with workers and augmentation), reads one batch at a time, stops early with patience; the
device and process count are checked before anything trains; autocast precisions."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.config import DataConfig, ModelConfig, OptimizerConfig
from edgekd.config.data import Augment
from edgekd.data import Part, from_arrays, load
from edgekd.kd.compute import CPU, Compute
from edgekd.kd.methods import hard_labels
from edgekd.kd.train import Hyperparameters, fit, validate
from edgekd.schema import ConfigError


def shade_arrays(n, seed):
    """uint8 1 x 8 x 8 images: class 0 dark, class 1 bright, with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.clip(np.where(y, 200, 50)[:, None, None, None] + rng.integers(-40, 41, (n, 1, 8, 8)),
                0, 255).astype(np.uint8)
    return x, y


@pytest.fixture(scope="module")
def shades():
    """Two easy classes in memory: 32 train, 16 val, 8 test."""
    return from_arrays(*shade_arrays(32, 0), *shade_arrays(16, 1), *shade_arrays(8, 2))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The same kind of images as PNG files (a FileStore, read on demand): 32 train, 8 val."""
    from PIL import Image

    root = tmp_path_factory.mktemp("scale")
    for split, n, seed in (("train", 32, 0), ("val", 8, 1)):
        x, y = shade_arrays(n, seed)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(root / split / str(label) / f"{i}.png")
    return root


def folder_splits(root, workers):
    return load(DataConfig(source="folder", train=root / "train", val=root / "val",
                           image_size=(8, 8), channels=1, mean=[0.5], std=[0.3],
                           num_workers=workers), seed=0)


def fresh():
    from edgekd.models import build

    torch.manual_seed(0)
    return build(ModelConfig(arch="cnn", width=4, depth=1),
                 {"num_classes": 2, "in_channels": 1, "input_shape": [1, 8, 8],
                  "mean": [0.5], "std": [0.3]})


def equal_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


# --- resume after a kill, through the DataLoader ----------------------------------------------


def test_killed_in_epoch_2_resumes_to_the_same_weights_with_a_worker_and_augmentation(
        folder, tmp_path):
    splits = folder_splits(folder, workers=1)
    assert splits.workers(augmenting=True) == 1 and not splits.train.in_memory
    settings = Hyperparameters(3, 0.05, 8, augment=Augment(preset="light"))
    whole = fresh()
    uninterrupted = fit(whole, hard_labels, splits, settings, 0, tmp_path / "whole.ckpt", "t")

    per_epoch = len(splits.train) // 8
    calls = {"n": 0}

    def dies_in_epoch_2(logits, batch):
        calls["n"] += 1
        if calls["n"] == per_epoch + 2:
            raise KeyboardInterrupt
        return hard_labels(logits, batch)

    checkpoint = tmp_path / "resume.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), dies_in_epoch_2, splits, settings, 0, checkpoint, "t")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # epoch 2 is redone
    resumed = fresh()
    history = fit(resumed, hard_labels, splits, settings, 0, checkpoint, "t")
    assert equal_weights(whole, resumed)
    keys = ("epoch", "loss", "val_accuracy", "kept")
    assert [[h[k] for k in keys] for h in history] == \
        [[h[k] for k in keys] for h in uninterrupted]


# --- memory: the loop reads a batch at a time -------------------------------------------------


def test_training_reads_one_batch_at_a_time(folder, tmp_path, monkeypatch):
    splits = folder_splits(folder, workers=0)  # reads in this process, where they are counted
    reads = []
    real_read = Part.read
    monkeypatch.setattr(Part, "read", lambda self, positions: reads.append(
        (self.name, len(positions))) or real_read(self, positions))
    fit(fresh(), hard_labels, splits, Hyperparameters(2, 0.05, 8), 0, tmp_path / "a.ckpt", "t")
    train = [n for name, n in reads if name == "train"]
    steps = [n for n in train if n <= 8]  # two epochs, a training batch at a time
    assert sum(steps) == 2 * len(splits.train), train
    # before each validation, a BatchNorm re-estimation pass in validation's batches (<= 512)
    assert [n for n in train if n > 8] == [len(splits.train)] * 2, train
    # each epoch validated twice: with training's statistics and with re-estimated ones
    assert [n for name, n in reads if name == "val"] == [len(splits.val)] * 4


# --- early stopping ---------------------------------------------------------------------------


def test_patience_stops_early_and_keeps_the_best_epoch(shades, tmp_path):
    """At the start of epoch 2 the classifier's last layer is negated (its two classes swap)
    and from then on the loss trains on flipped labels: validation accuracy falls to ~0 and
    stays there. With patience 2, epochs 2 and 3 are the two without a better accuracy."""
    per_epoch = len(shades.train) // 8
    calls = {"steps": 0, "epochs": 0}

    def spoils_from_epoch_2(model, training):
        model.train(training)
        calls["epochs"] += training
        if training and calls["epochs"] == 2:
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.neg_()
                last.bias.neg_()

    def flipped_after_epoch_1(logits, batch):
        calls["steps"] += 1
        return F.cross_entropy(logits, batch.y if calls["steps"] <= per_epoch else 1 - batch.y)

    settings = Hyperparameters(8, 0.05, 8, patience=2)
    model = fresh()
    checkpoint = tmp_path / "a.ckpt"
    history = fit(model, flipped_after_epoch_1, shades, settings, 0, checkpoint, "t",
                  mode=spoils_from_epoch_2)
    val = [h["val_accuracy"] for h in history]
    assert val[0] > max(val[1:]), val  # the construction holds
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["stopped_early"] is True
    assert not any("stopped_early" in h for h in history[:-1])
    assert [h["kept"] for h in history] == [True, False, False]
    assert validate(model, shades.val, CPU) == val[0]  # the model holds the kept epoch
    again = fresh()  # a rerun with the checkpoint does not train on past the stop
    assert len(fit(again, hard_labels, shades, settings, 0, checkpoint, "t",
                   mode=lambda m, training: m.train(training))) == 3  # (no BatchNorm pass)
    assert equal_weights(model, again)


def test_patience_counts_a_plateau_as_no_improvement(shades, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEKD_PROGRESS", "auto")  # stderr is captured: epoch lines
    def no_gradient(logits, _batch):
        return (logits * 0).sum()

    settings = Hyperparameters(5, 0.05, 8, patience=2,
                               optimizer=OptimizerConfig(name="sgd", momentum=0.0))
    # eval mode throughout: BatchNorm statistics stay, so the weights and accuracy never move
    history = fit(fresh(), no_gradient, shades, settings, 0, tmp_path / "a.ckpt", "t",
                  mode=lambda model, _training: model.train(False))
    assert len({h["val_accuracy"] for h in history}) == 1
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1].get("stopped_early") is True
    lines = capsys.readouterr().err.splitlines()
    assert any(ln.startswith("t: epoch 3/5 ") and ln.endswith("stopped early (patience spent)")
               for ln in lines), lines  # the log says so


# --- errors inside DataLoader workers ---------------------------------------------------------


# torch re-raises a worker's exception as type(exc)(message): ConfigError takes the string
@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_one_config_line_with_any_worker_count(folder, tmp_path, workers):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(folder, root)
    bad = root / "train" / "0" / "broken.png"
    shutil.copy(next((root / "train" / "0").glob("*.png")), bad)
    splits = folder_splits(root, workers=workers)  # every image is checked here, at load
    bad.write_text("not an image")  # damaged between loading and training
    with pytest.raises(ConfigError) as info:
        fit(fresh(), hard_labels, splits, Hyperparameters(1, 0.05, 8), 0,
            tmp_path / "a.ckpt", "t")
    assert isinstance(info.value.lines, list) and len(info.value.lines) == 1, \
        str(info.value)[:200]
    assert info.value.lines[0].startswith(f"{bad}: cannot read as an image")


# --- device and process count, checked before training ----------------------------------------

PIPELINE = """\
name: t
device: {device}
teacher: {{arch: cnn, width: 4, depth: 1, train: {{epochs: 1}}}}
student: {{arch: cnn, width: 4, depth: 1}}
stages:
  - kind: distill
    epochs: 1
    baseline: false
"""


def edgekd(*args, cwd):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "EDGEKD_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_nproc_beyond_visible_gpus_is_exit_2_with_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE.format(device="cuda"))
    proc = edgekd("run", "p.yaml", "--nproc", "2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()  # one line, no traceback
    assert line.startswith("p.yaml: device: --nproc 2 needs 2 GPUs (one per process) but 0 "
                           "are visible; "), line
    assert "--device cpu" in line, line  # says what to do instead
    assert proc.stdout == "" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("file_device, flag", [("cuda", []), ("cpu", ["--device", "cuda:0"])])
def test_cuda_without_a_gpu_is_exit_2_naming_device(tmp_path, file_device, flag):
    (tmp_path / "p.yaml").write_text(PIPELINE.format(device=file_device))
    proc = edgekd("run", "p.yaml", *flag, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    problems = [line for line in proc.stderr.splitlines() if not line.startswith("[")]
    wanted = "cuda" if not flag else "cuda:0"
    assert problems == [f"p.yaml: device: {wanted}: no CUDA GPU is visible "
                        "(CUDA_VISIBLE_DEVICES='')"]
    assert not (tmp_path / "runs" / "t" / "teacher" / "teacher.pt").exists()


# --- precisions -------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device, precision", [
    ("cpu", "bf16"),
    pytest.param("cuda", "bf16", marks=cuda),
    pytest.param("cuda", "fp16", marks=cuda),
])
def test_fit_under_autocast_learns_and_returns_fp32_weights_on_the_cpu(shades, tmp_path,
                                                                        device, precision):
    if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    compute = Compute(torch.device(device), precision)
    model = fresh()
    history = fit(model, hard_labels, shades, Hyperparameters(3, 0.05, 8), 0,
                  tmp_path / "a.ckpt", "t", compute=compute)
    assert all(np.isfinite(h["loss"]) for h in history)
    assert max(h["val_accuracy"] for h in history) >= 0.9
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    (kept,) = [h["val_accuracy"] for h in history if h["kept"]]
    # the GPU validated in its own arithmetic (TF32 convolutions): allow one sample of 16
    tolerance = 0 if device == "cpu" else 1 / len(shades.val)
    assert abs(validate(model, shades.val, CPU) - kept) <= tolerance


@cuda
def test_auto_device_and_precision_on_a_gpu():
    from edgekd.kd.compute import resolve

    compute = resolve("auto")
    assert compute.device.type == "cuda"
    assert compute.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert compute.memory_format == torch.channels_last and compute.pin_memory
