import numpy as np
import pytest
import torch

from edgekd.config import DataConfig, ModelConfig
from edgekd.data import load
from edgekd.kd.compute import CPU
from edgekd.kd.losses import hinton
from edgekd.kd.train import Hyperparameters, Minibatch, fit, predict, validate
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.models import build


@pytest.fixture(scope="module")
def splits():
    return load(DataConfig(), seed=0)


def fresh(splits):
    torch.manual_seed(0)
    meta = splits.meta()
    return build(ModelConfig(arch="cnn", width=4, depth=2), meta)


def loss(logits, batch):
    return hinton(logits, None, batch.y, 1.0, 0.0)


def test_hinton_loss_terms():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(hinton(s, t, y, 4.0, 0.0), ce)
    assert torch.allclose(hinton(s, None, y, 4.0, 0.9), ce)
    assert hinton(t, t, y, 4.0, 1.0).abs() < 1e-6  # identical distributions: no soft loss
    # alpha 1: exactly T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch
    for temp in (2.0, 8.0):
        p, q = torch.softmax(t.double() / temp, 1), torch.softmax(s.double() / temp, 1)
        kl = (p * (p.log() - q.log())).sum(1).mean()
        assert torch.isclose(hinton(s, t, y, temp, 1.0).double(), temp * temp * kl, rtol=1e-4)


def test_fit_learns(splits, tmp_path):
    model = fresh(splits)
    before = accuracy(predict(model, splits.test), splits.test.y)
    history = fit(model, loss, splits, Hyperparameters(4, 0.01, 64), 0, tmp_path / "a.ckpt",
                  "t")
    after = accuracy(predict(model, splits.test), splits.test.y)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > max(0.5, before + 0.2)


def test_interrupted_training_resumes_to_the_same_weights(splits, tmp_path):
    settings = Hyperparameters(4, 0.01, 64)
    whole = fresh(splits)
    fit(whole, loss, splits, settings, 0, tmp_path / "whole.ckpt", "t")

    calls = {"n": 0}
    batches_per_epoch = -(-len(splits.train) // 64)

    def dies_in_epoch_3(logits, batch):
        calls["n"] += 1
        if calls["n"] > 2 * batches_per_epoch + 3:
            raise KeyboardInterrupt
        return loss(logits, batch)

    broken = fresh(splits)
    with pytest.raises(KeyboardInterrupt):
        fit(broken, dies_in_epoch_3, splits, settings, 0, tmp_path / "resume.ckpt", "t")
    resumed = fresh(splits)
    history = fit(resumed, loss, splits, settings, 0, tmp_path / "resume.ckpt", "t")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_ece_bounds():
    labels = np.array([0, 1, 0, 1])
    confident_right = np.array([[9.0, 0], [0, 9.0], [9.0, 0], [0, 9.0]])
    assert expected_calibration_error(confident_right, labels) < 0.01
    confident_wrong = confident_right[:, ::-1]
    assert expected_calibration_error(confident_wrong, labels) > 0.9


def test_best_epoch_is_kept_not_the_last(splits, tmp_path):
    """Epochs 3 and 4 train on scrambled labels, so validation accuracy falls; fit hands back
    the weights of the best epoch and marks it, and its accuracy is measured, not assumed."""
    scrambled = torch.from_numpy(np.random.default_rng(0).permutation(10))
    calls = {"n": 0}
    per_epoch = -(-len(splits.train) // 64)

    def spoils_late(logits, batch):
        calls["n"] += 1
        y = scrambled[batch.y] if calls["n"] > 2 * per_epoch else batch.y
        return loss(logits, Minibatch(batch.x, y, batch.index))

    model = fresh(splits)
    history = fit(model, spoils_late, splits, Hyperparameters(4, 0.03, 64), 0,
                  tmp_path / "a.ckpt", "t")
    val = [h["val_accuracy"] for h in history]
    assert val[-1] < max(val) - 0.2, val  # the last epoch really is worse
    (kept,) = [h for h in history if h["kept"]]
    assert kept["val_accuracy"] == max(val)
    assert kept["epoch"] == max(h["epoch"] for h in history if h["val_accuracy"] == max(val))
    now = accuracy(predict(model, splits.val), splits.val.y)
    assert now == kept["val_accuracy"]  # the returned model's, BatchNorm statistics included
    assert all(h["images_per_s"] > 0 for h in history)


def test_epoch_lines_when_stderr_is_not_a_terminal(splits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEKD_PROGRESS", "auto")  # pytest's stderr is not a terminal
    fit(fresh(splits), loss, splits, Hyperparameters(2, 0.01, 64), 0, tmp_path / "a.ckpt",
        "teacher")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("teacher: epoch 1/2 loss ") and " img/s ETA 0:" in lines[0]
    assert lines[1].startswith("teacher: epoch 2/2 ") and lines[1].endswith("ETA 0:00:00")
    monkeypatch.setenv("EDGEKD_PROGRESS", "0")
    fit(fresh(splits), loss, splits, Hyperparameters(1, 0.01, 64), 0, tmp_path / "b.ckpt",
        "teacher")
    assert capsys.readouterr().err == ""


def lrs(settings, steps_per_epoch):
    from edgekd.kd.train import optimizer_and_schedule

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = optimizer_and_schedule([param], settings, steps_per_epoch)
    out = []
    for _ in range(settings.epochs * steps_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return optimizer, out


def test_schedules_follow_their_definitions():
    from edgekd.config import OptimizerConfig

    cosine = OptimizerConfig(name="sgd", momentum=0.8, schedule="cosine", warmup_epochs=1)
    optimizer, lr = lrs(Hyperparameters(4, 0.1, 1, optimizer=cosine), 10)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.8
    assert lr[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])  # linear warm-up
    assert lr[10] == pytest.approx(0.1) and lr[-1] < 0.001  # then cosine down to 0
    assert all(a >= b for a, b in zip(lr[10:], lr[11:], strict=False))
    step = OptimizerConfig(schedule="step", step_epochs=2, gamma=0.5)
    optimizer, lr = lrs(Hyperparameters(6, 0.1, 1, optimizer=step), 5)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert lr[::10] == pytest.approx([0.1, 0.05, 0.025])
    _, lr = lrs(Hyperparameters(4, 0.1, 1), 10)  # the default: one-cycle, peak at 15 %
    assert max(lr) == pytest.approx(0.1) and lr.index(max(lr)) in (5, 6) and lr[-1] < 1e-3


def test_sgd_cosine_learns_and_clipping_limits_each_step(splits, tmp_path):
    from edgekd.config import OptimizerConfig

    sgd = OptimizerConfig(name="sgd", schedule="cosine", warmup_epochs=1)
    model = fresh(splits)
    fit(model, loss, splits, Hyperparameters(4, 0.1, 64, optimizer=sgd), 0,
        tmp_path / "a.ckpt", "t")
    assert accuracy(predict(model, splits.test), splits.test.y) > 0.5

    def moved(clip):
        model = fresh(splits)
        start = [p.detach().clone() for p in model.parameters()]
        settings = Hyperparameters(1, 0.1, 64, optimizer=sgd.model_copy(
            update={"clip_grad_norm": clip, "momentum": 0.0}))
        fit(model, loss, splits, settings, 0, tmp_path / f"clip-{clip}.ckpt", "t")
        return sum(float((p.detach() - s).norm() ** 2) for p, s in zip(model.parameters(), start,
                                                             strict=True)) ** 0.5

    steps = -(-len(splits.train) // 64)
    # plain SGD moves at most lr x clip per step (momentum 0, warm-up lr <= 0.1)
    assert moved(1e-3) <= steps * 0.1 * 1e-3 * 1.001
    assert moved(None) > 100 * moved(1e-3)


def test_validation_every_k_epochs_keeps_the_best_validated(splits, tmp_path):
    model = fresh(splits)
    history = fit(model, loss, splits, Hyperparameters(5, 0.01, 64, val_every=2), 0,
                  tmp_path / "a.ckpt", "t")
    assert [h["val_accuracy"] is not None for h in history] == [False, True, False, True, True]
    (kept,) = [h for h in history if h["kept"]]
    assert kept["val_accuracy"] == max(h["val_accuracy"] for h in history
                                       if h["val_accuracy"] is not None)


def lagging(splits):
    """The test cnn with MobileNetV3's BatchNorm momentum (torchvision: 0.01): in a short run
    its running statistics stay near their initial 0 / 1, far from the data's."""
    model = fresh(splits)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.01
    return model


def test_batchnorm_statistics_that_never_settled_are_re_estimated(splits, tmp_path):
    """Running statistics far from the data's put a trained model at chance; a re-estimation
    pass over training images restores it. `shipped` keeps the better of the two statistics
    inside its block and puts training's back on leaving it."""
    from edgekd.kd import batchnorm

    model = fresh(splits)
    fit(model, loss, splits, Hyperparameters(3, 0.05, 32), 0, tmp_path / "c.ckpt", "t")
    good = accuracy(predict(model, splits.x_test), splits.y_test)
    norms = batchnorm.layers(model)
    for m in norms:
        m.running_mean.fill_(5.0)
        m.running_var.fill_(0.01)
    assert accuracy(predict(model, splits.x_test), splits.y_test) < 0.3
    batches = batchnorm.sample_batches(splits.train, 0)

    def test_accuracy():
        return accuracy(predict(model, splits.x_test), splits.y_test)

    with batchnorm.shipped(model, batches, test_accuracy) as (acc, recalibrated):
        assert recalibrated and acc >= good - 0.05 and test_accuracy() == acc
    assert float(norms[0].running_mean[0]) == 5.0  # training's statistics are back

    def only_stale_scores():
        return float(float(norms[0].running_mean[0]) == 5.0)

    with batchnorm.shipped(model, batches, only_stale_scores) as (acc, recalibrated):
        # re-estimated statistics that score worse are not kept
        assert not recalibrated and acc == 1.0 and float(norms[0].running_mean[0]) == 5.0
    assert all(m.momentum == 0.1 for m in norms)


def test_lagging_batchnorm_statistics_do_not_choose_the_kept_epoch(splits, tmp_path):
    """Every epoch of a model whose BatchNorm statistics lag validates near chance in eval
    mode, so fit must judge each epoch with re-estimated statistics: the epochs' accuracies
    mean something, the kept one is the best of them, and its val_accuracy is the accuracy of
    the model fit returns."""
    stale = fit(lagging(splits), loss, splits, Hyperparameters(3, 0.05, 64), 0,
                tmp_path / "s.ckpt", "t", mode=lambda m, training: m.train(training))
    assert max(h["val_accuracy"] for h in stale) < 0.35  # with its own statistics: near chance
    model = lagging(splits)
    history = fit(model, loss, splits, Hyperparameters(3, 0.05, 64), 0, tmp_path / "a.ckpt",
                  "t")
    val = [h["val_accuracy"] for h in history]
    assert max(val) > 0.6, val  # measured on the model as it ships, not at chance
    assert all(h["bn_recalibrated"] in (True, False) for h in history)
    (kept,) = [h for h in history if h["kept"]]
    assert kept["val_accuracy"] == max(val)
    assert validate(model, splits.val, CPU) == kept["val_accuracy"]
    assert accuracy(predict(model, splits.x_test), splits.y_test) > 0.6


def test_judging_epochs_with_re_estimated_statistics_leaves_training_as_it_was(splits,
                                                                             tmp_path):
    """The re-estimation happens on the side: the weights and statistics training reaches
    (the last epoch's checkpoint) are those of a run that never re-estimates."""
    fit(lagging(splits), loss, splits, Hyperparameters(2, 0.05, 64), 0, tmp_path / "a.ckpt",
        "t")
    fit(lagging(splits), loss, splits, Hyperparameters(2, 0.05, 64), 0, tmp_path / "b.ckpt",
        "t", mode=lambda m, training: m.train(training))
    a, b = (torch.load(tmp_path / f"{n}.ckpt", weights_only=True)["model"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_checkpoint_is_kept_aside_and_training_starts_over(splits, tmp_path, capsys):
    checkpoint = tmp_path / "a.ckpt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated by a full disk")
    history = fit(fresh(splits), loss, splits, Hyperparameters(1, 0.01, 64), 0, checkpoint, "t")
    assert [h["epoch"] for h in history] == [1]
    assert (tmp_path / "a.ckpt.damaged").read_bytes().startswith(b"PK")
    assert "a.ckpt: cannot be read" in capsys.readouterr().err


def test_a_loss_that_becomes_non_finite_stops_training_naming_the_epoch(splits, tmp_path):
    """NaN from epoch 2 on (a learning rate far too high, or NaN in the data) stops training
    there with one line, instead of training on to a chance-level model; the checkpoint keeps
    epoch 1, the last sound one."""
    from edgekd.schema import ConfigError

    calls = {"n": 0}
    per_epoch = -(-len(splits.train) // 64)

    def nan_from_epoch_2(logits, batch):
        calls["n"] += 1
        return loss(logits, batch) * (float("nan") if calls["n"] > per_epoch + 2 else 1.0)

    with pytest.raises(ConfigError) as caught:
        fit(fresh(splits), nan_from_epoch_2, splits, Hyperparameters(3, 0.01, 64), 0,
            tmp_path / "a.ckpt", "teacher")
    (line,) = caught.value.lines
    assert line.startswith("teacher: the loss became non-finite (nan) at epoch 2 of 3; "), line
    assert "lower lr (now 0.01)" in line and "NaN" in line
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["epoch"] == 1
