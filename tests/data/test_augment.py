"""Augmentation (issue 12): seeded by (seed, epoch, sample), so the same seed trains the same
weights with any number of DataLoader workers; teacher-output caching is refused with it."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.config import DataConfig, ModelConfig
from edgekd.config.data import Augment
from edgekd.data import from_arrays, load
from edgekd.data.augment import BatchMix
from edgekd.data.stream import train_loader
from edgekd.kd.methods import hard_labels
from edgekd.kd.train import Hyperparameters, fit
from edgekd.models import build


def image_arrays(n=24, size=8, seed=0):
    """uint8 1 x size x size images with structure (a bright square at a random place), so
    a crop or a flip changes them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, 1, size, size), dtype=np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, size - 3, (n, 2))):
        x[i, 0, r:r + 3, c:c + 2] = 250
    return x, np.arange(n) % 2


def augmented(part, preset, seed, epoch, workers=0):
    """Each training sample as the loader serves it in `epoch`: {position: image}."""
    loader, sampler = train_loader(part, 8, seed, Augment(preset=preset), workers, pin=False)
    sampler.set_epoch(epoch)
    out = {}
    for x, _y, index in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == part.store.shape
        out.update({int(i): img.clone() for i, img in zip(index, x, strict=True)})
    assert sorted(out) == list(range(len(part)))
    return out


def same(a, b):
    return sum(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", ["light", "standard"])
def test_each_sample_is_augmented_from_seed_epoch_and_position(preset):
    x, y = image_arrays()
    part = from_arrays(x, y, x[:2], y[:2], x[:2], y[:2]).train
    first = augmented(part, preset, seed=5, epoch=0)
    assert same(first, augmented(part, preset, seed=5, epoch=0)) == len(part)
    assert same(first, augmented(part, preset, seed=5, epoch=0, workers=1)) == len(part)
    raw = {i: torch.from_numpy(x[i]) for i in range(len(part))}
    assert same(first, raw) < len(part) // 2  # it does augment
    assert same(first, augmented(part, preset, seed=6, epoch=0)) < len(part) // 2
    assert same(first, augmented(part, preset, seed=5, epoch=1)) < len(part) // 2
    assert same(augmented(part, "none", seed=5, epoch=0), raw) == len(part)


def test_batch_mixing_is_seeded_by_epoch_and_step():
    x = torch.rand(8, 1, 4, 4)
    y = torch.arange(8) % 3
    cfg = Augment(mixup=0.4, cutmix=1.0, label_smoothing=0.1)
    mix = BatchMix(cfg, 3, seed=0)
    xa, ta = mix(x, y, 2, 5)
    xb, tb = mix(x, y, 2, 5)
    assert torch.equal(xa, xb) and torch.equal(ta, tb)
    assert not torch.equal(mix(x, y, 2, 6)[0], xa)
    assert ta.shape == (8, 3) and torch.allclose(ta.sum(1), torch.ones(8))
    assert ta.min() >= 0.1 / 3 - 1e-6  # smoothed: no class gets less than eps / classes
    assert not torch.equal(xa, x)
    smooth_only = BatchMix(Augment(label_smoothing=0.3), 3, seed=0)
    xs, ts = smooth_only(x, y, 0, 0)
    assert torch.equal(xs, x)
    assert torch.allclose(ts, torch.nn.functional.one_hot(y, 3) * 0.7 + 0.1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small image folder (2 classes of 16 images), read from files like real data."""
    from PIL import Image

    root = tmp_path_factory.mktemp("augment")
    x, y = image_arrays(n=32, size=12)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image[0]).save(root / str(label) / f"{i}.png")
    return root


def trained(folder, tmp_path, augment, seed, workers=0):
    splits = load(DataConfig(source="folder", path=folder, image_size=(8, 8), channels=1,
                             mean=[0.2], std=[0.3], num_workers=workers), seed=0)
    assert splits.workers(augmenting=True) == workers
    torch.manual_seed(0)  # the same initial weights every time: only training differs
    model = build(ModelConfig(arch="cnn", width=4, depth=1),
                  {"num_classes": 2, "in_channels": 1, "input_shape": [1, 8, 8],
                  "mean": [0.2], "std": [0.3]})
    name = f"{augment.preset}-{augment.mixup}-{seed}-{workers}"
    fit(model, hard_labels, splits, Hyperparameters(2, 0.05, 8, augment=augment), seed,
        tmp_path / f"{name}.ckpt", "t")
    return model.state_dict()


def equal_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_with_any_worker_count(folder, tmp_path):
    light = Augment(preset="light")
    reference = trained(folder, tmp_path, light, seed=0)
    assert equal_weights(reference, trained(folder, tmp_path / "again", light, seed=0))
    assert equal_weights(reference, trained(folder, tmp_path, light, seed=0, workers=1))
    assert not equal_weights(reference, trained(folder, tmp_path, light, seed=1))
    assert not equal_weights(reference, trained(folder, tmp_path, Augment(), seed=0))


def test_batch_mixing_in_training_is_reproducible(folder, tmp_path):
    mixing = Augment(preset="light", mixup=0.2, cutmix=1.0, label_smoothing=0.1)
    reference = trained(folder, tmp_path, mixing, seed=0)
    assert equal_weights(reference, trained(folder, tmp_path / "again", mixing, seed=0))
    assert not equal_weights(reference,
                             trained(folder, tmp_path, Augment(preset="light"), seed=0))


# --- caching the teacher's outputs needs unaugmented inputs -----------------------------------

HEAD = """\
name: t
data: {data}
teacher: {{arch: cnn, width: 4, depth: 1, train: {{epochs: 1}}}}
student: {{arch: cnn, width: 4, depth: 1}}
stages:
  - kind: distill
    epochs: 1
    cache_teacher: true
"""


@pytest.mark.parametrize("data, stage, named", [
    ("{augment: light}", "", "light preset"),
    ("{augment: {preset: standard}}", "", "standard preset"),
    ("{}", "    augment: light\n", "light preset"),
    ("{}", "    augment: {mixup: 0.2}\n", "mixup"),
    ("{augment: {cutmix: 1.0}}", "", "cutmix"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cache_with_augmentation_is_a_config_error(tmp_path, data, stage, named, command):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD.format(data=data) + stage)
    args = [command, str(path)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{path}: stages[0].cache_teacher: cannot cache teacher outputs "
                           "when the training data is augmented ("), line
    assert named in line.split("(", 1)[1].split(")")[0], line  # says which augmentation
    assert "each epoch sees new images" in line and "remove cache_teacher" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("data, stage", [
    ("{augment: light}", "    augment: none\n"),  # the stage's own augment replaces data's
    ("{augment: {label_smoothing: 0.1}}", ""),  # smoothing changes targets, not inputs
])
def test_cache_without_random_inputs_is_valid(tmp_path, data, stage):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD.format(data=data) + stage)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
