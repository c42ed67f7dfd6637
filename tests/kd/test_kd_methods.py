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
# The term each method adds, whose own curve must fall too. The EMA starts as the student, so
# its "self" term starts near 0 and cannot fall: two tests below check that term directly.
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
    from edgekd.config import DistillStage
    from edgekd.kd.methods import train_students
    from edgekd.kd.train import predict

    cfg = DistillStage(kind="distill", epochs=3, lr=0.03, batch_size=32, baseline=False,
                       assistants=[{"arch": "cnn", "width": 12, "depth": 2}])
    teacher_test = predict(teacher, splits.x_test)
    untrained = []  # each assistant's agreement with the teacher as built, before training

    def build(model_cfg):
        model = make(splits, model_cfg, seed=1)
        untrained.append(top1_agreement(predict(model, splits.x_test), teacher_test))
        return model

    trained = train_students(cfg, splits, one(teacher), lambda: make(splits, STUDENT), STUDENT,
                             build, seed=0, workdir=tmp_path)
    assert list(trained) == ["assistant_1", "student"]
    assistant = trained["assistant_1"].model
    after = top1_agreement(predict(assistant, splits.x_test), teacher_test)
    assert_learns(trained["assistant_1"].history, "kd", untrained[0], after)
    # The student's teacher is the assistant; through it, it moves toward the teacher too.
    student = predict(trained["student"].model, splits.x_test)
    before = top1_agreement(predict(make(splits, STUDENT), splits.x_test), teacher_test)
    assert_learns(trained["student"].history, "kd", before, top1_agreement(student,
                                                                            teacher_test))


def test_born_again_generation_teaches_fresh_copy(splits, teacher, tmp_path):
    fields = {"self_distillation": {"teacher": "checkpoint", "weight": 2.0}}
    trained, before, after = distill(splits, one(teacher), tmp_path, alpha=0.0, **fields)
    assert list(trained) == ["generation_1", "student"]
    assert "loss_self" not in trained["generation_1"].history[0]
    assert_learns(trained["student"].history, "self", before, after)


def test_ema_copy_tracks_the_student(splits, teacher, tmp_path):
    """The EMA teacher saved with the student ends far nearer the trained student's weights
    than the starting weights are (an EMA that never updates stays at the start)."""
    fields = {"self_distillation": {"teacher": "ema", "decay": 0.95}}
    trained, _, _ = distill(splits, one(teacher), tmp_path, **fields)
    extra = torch.load(tmp_path / "student.ckpt", weights_only=False)["extra"]
    student = dict(trained["student"].model.named_parameters())
    start = dict(make(splits, STUDENT).named_parameters())

    def distance(a: dict) -> float:
        return sum(float((a[k] - student[k]).detach().pow(2).sum()) for k in student) ** 0.5

    ema = {k: extra[f"ema.{k}"] for k in student}
    assert distance(ema) < 0.25 * distance(start), (distance(ema), distance(start))


def test_self_term_is_kl_to_the_ema_after_its_update(splits, teacher):
    """One step by hand: the EMA moves by (1 - decay) toward the student's current weights,
    then loss_self = T^2 * KL(softmax(ema/T) || softmax(student/T)) over the batch."""
    from edgekd.config import DistillStage
    from edgekd.kd.objective import Objective
    from edgekd.kd.train import Minibatch

    cfg = DistillStage(kind="distill", alpha=0.0,
                       self_distillation={"decay": 0.9, "temperature": 3.0, "weight": 2.0})
    student = make(splits, STUDENT)
    objective = Objective(cfg, student, one(teacher), splits.train, None)
    ema = objective.extra["ema"]
    start = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():  # a training step moved the student away from the EMA
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = torch.arange(16)
    x = torch.from_numpy(splits.train.inputs(idx.numpy()))
    logits = student(x)
    total, parts = objective(logits, Minibatch(x, torch.from_numpy(splits.train.y[:16]), idx))
    parts = {k: float(v) for k, v in parts.items()}  # detached tensors: no sync per step
    objective.close()
    for e, e0, s in zip(ema.parameters(), start, student.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * e0 + 0.1 * s, atol=1e-6)
    with torch.no_grad():
        p, q = torch.softmax(ema.eval()(x).double() / 3, 1), torch.softmax(logits.double() / 3, 1)
    expected = 9 * (p * (p.log() - q.log())).sum(1).mean()
    assert parts["self"] == pytest.approx(float(expected), rel=1e-4)
    assert parts["self"] > 1e-3  # the perturbation made the two disagree measurably
    assert total.item() == pytest.approx(parts["ce"] + 2.0 * parts["self"], rel=1e-5)


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


def test_relational_distance_loss_is_finite_on_a_batch_of_one_or_of_alike_samples():
    """The last batch of an epoch held one sample (1078 = 3 x 359 + 1): the mean of no
    non-zero distance was NaN and stopped training with a message about lr and data."""
    import torch

    from edgekd.kd import losses

    one = torch.rand(1, 8, requires_grad=True)
    alike = torch.ones(4, 8, requires_grad=True)
    for student, teacher in ((one, torch.rand(1, 8)), (alike, torch.ones(4, 8))):
        loss = losses.rkd_distance(student, teacher)
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(student.grad).all()
