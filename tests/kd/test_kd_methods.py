"""Each method trains a tiny pair and moves the student toward the teacher: its loss falls,
and the student agrees with the teacher far more often than the untrained student does."""

import pytest
import torch
from kdutil import STUDENT, distill, make, one, train_teacher

from edgekd.kd import losses
from edgekd.kd.methods import Teacher
from edgekd.metrics import top1_agreement

METHODS = {
    "logit_kd": {},
    "hint_mse": {"hints": [{"student": "net.0.5", "teacher": "net.0.5"}]},
    "hint_cosine_two_layers": {"hints": [
        {"student": "net.0.2", "teacher": "net.0.2", "loss": "cosine"},
        {"student": "net.2", "teacher": "net.2", "weight": 0.5}]},
    "attention": {"attention": {"pairs": [{"student": "net.0.2", "teacher": "net.0.2"},
                                          {"student": "net.0.5", "teacher": "net.0.5"}]}},
    "relational_layers": {"relational": {"student": "net.2", "teacher": "net.2"}},
    "relational_logits": {"relational": {}},
    "self_ema": {"self_distillation": {"teacher": "ema"}},
    "mutual": {"mutual": {}},
}
# The term each method adds, whose own curve must fall too.
TERM = {"logit_kd": "kd", "hint_mse": "hint", "hint_cosine_two_layers": "hint",
        "attention": "attention", "relational_layers": "rkd_distance",
        "relational_logits": "rkd_angle", "self_ema": "ce", "mutual": "peer"}


def assert_learns(history, term, before, after):
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1][f"loss_{term}"] < history[0][f"loss_{term}"]
    assert after > before + 0.4, (before, after)


@pytest.mark.parametrize("name", METHODS)
def test_method_moves_student_toward_teacher(name, splits, teacher, tmp_path):
    trained, before, after = distill(splits, one(teacher), tmp_path, **METHODS[name])
    assert_learns(trained["student"].history, TERM[name], before, after)


def test_adapters_are_trained_and_checkpointed(splits, teacher, tmp_path):
    fields = {"hints": [{"student": "net.0.2", "teacher": "net.0.2"}]}  # 8 -> 16 channels
    trained, _, _ = distill(splits, one(teacher), tmp_path, epochs=1, **fields)
    state = torch.load(tmp_path / "student.ckpt", weights_only=False)
    adapter = state["extra"]["adapters.0.weight"]
    assert adapter.shape == (16, 8, 1, 1)
    assert state["epoch"] == 1


def test_mutual_peer_learns_too(splits, teacher, tmp_path):
    trained, _, _ = distill(splits, one(teacher), tmp_path, mutual={})
    peer = trained["peer"].model
    history = trained["student"].history
    assert history[-1]["loss_peer"] < history[0]["loss_peer"]
    from edgekd.kd.train import predict

    assert (predict(peer, splits.x_test).argmax(1) == splits.y_test).mean() > 0.5


def test_two_teacher_ensemble_of_different_architectures(splits, teacher, tmp_path):
    from edgekd.config import ModelConfig
    from edgekd.kd.train import predict

    other = train_teacher(splits, ModelConfig(arch="cnn", width=8, depth=3), 1,
                          tmp_path / "t2.ckpt")
    teachers = [Teacher(teacher, 1.0), Teacher(other, 0.5)]
    trained, before, after = distill(splits, teachers, tmp_path, alpha=0.9)
    assert_learns(trained["student"].history, "kd", before, after)
    student = predict(trained["student"].model, splits.x_test)
    assert top1_agreement(student, predict(other, splits.x_test)) > 0.6


def test_ensemble_target_is_weighted_mean_of_probabilities():
    a, b = torch.randn(5, 10), torch.randn(5, 10)
    mixed = losses.ensemble_log_probs([a, b], [3.0, 1.0], 2.0).exp()
    expected = 0.75 * torch.softmax(a / 2, 1) + 0.25 * torch.softmax(b / 2, 1)
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_assistant_chain_each_link_learns(splits, teacher, tmp_path):
    fields = {"assistants": [{"arch": "cnn", "width": 12, "depth": 2}]}
    trained, before, after = distill(splits, one(teacher), tmp_path, **fields)
    assert list(trained) == ["assistant_1", "student"]
    assert_learns(trained["assistant_1"].history, "kd", 0.0, 0.5)
    assert_learns(trained["student"].history, "kd", before, after)


def test_born_again_generation_teaches_fresh_copy(splits, teacher, tmp_path):
    fields = {"self_distillation": {"teacher": "checkpoint", "weight": 2.0}}
    trained, before, after = distill(splits, one(teacher), tmp_path, alpha=0.0, **fields)
    assert list(trained) == ["generation_1", "student"]
    assert "loss_self" not in trained["generation_1"].history[0]
    assert_learns(trained["student"].history, "self", before, after)


def test_self_distillation_without_teacher_still_learns(splits, teacher, tmp_path):
    fields = {"self_distillation": {"teacher": "ema", "decay": 0.9}}
    trained, before, after = distill(splits, one(teacher), tmp_path, alpha=0.0, **fields)
    history = trained["student"].history
    assert "loss_kd" not in history[0]  # no external soft targets
    assert_learns(history, "ce", before, after)


def test_student_moves_toward_past_self_more_than_random(splits, teacher, tmp_path):
    """Born-again: the second generation agrees with the first far above chance."""
    from edgekd.kd.train import predict

    fields = {"self_distillation": {"teacher": "checkpoint"}}
    trained, _, _ = distill(splits, one(teacher), tmp_path, alpha=0.0, **fields)
    first = predict(trained["generation_1"].model, splits.x_test)
    untrained = predict(make(splits, STUDENT), splits.x_test)
    second = predict(trained["student"].model, splits.x_test)
    assert top1_agreement(second, first) > top1_agreement(untrained, first) + 0.3
