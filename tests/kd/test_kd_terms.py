"""The table of distillation terms: it covers every method field of the distill stage, and
teacher-assistant links get only the terms declared for them."""

from kdutil import distill, one

from edgekd.config import DistillStage
from edgekd.kd.methods import enabled_methods
from edgekd.kd.terms import TERMS, active

# DistillStage fields that configure training as a whole, not one method (the assistant
# chain trains extra models; it adds no loss term).
SETTINGS = {"kind", "temperature", "alpha", "epochs", "lr", "batch_size", "weight_decay",
            "optimizer", "val_every", "patience", "augment",
            "baseline", "cache_teacher", "teacher_weight", "budget", "assistants", "ship",
            "check_export"}
ASSISTANT = {"arch": "cnn", "width": 12, "depth": 2}


def test_table_covers_every_method_field_and_nothing_else():
    fields = [term.field for term in TERMS.values()]
    assert sorted(fields) == sorted(set(DistillStage.model_fields) - SETTINGS)


def test_every_term_declares_where_it_applies():
    for name, term in TERMS.items():
        assert isinstance(term.assistants, bool), name
        assert isinstance(term.from_teachers, bool), name
    assert [name for name, term in TERMS.items() if term.assistants] == ["logit"]


def test_assistant_links_take_only_terms_declared_for_them():
    cfg = DistillStage(kind="distill", assistants=[ASSISTANT], relational={},
                       self_distillation={}, mutual={})
    assert len(active(cfg)) == 4
    assert active(cfg, "assistant") == [term for term in TERMS.values() if term.assistants]


def test_enabled_methods_in_report_order():
    everything = DistillStage(
        kind="distill", teachers=[{"arch": "cnn", "checkpoint": "t.pt"}],
        hints=[{"student": "a", "teacher": "b"}], attention={"pairs": [{"student": "a",
                                                                          "teacher": "b"}]},
        relational={}, self_distillation={}, mutual={})
    assert enabled_methods(everything) == ["logit_kd", "ensemble", "hints", "attention",
                                           "relational", "self_distillation", "mutual"]
    chain = DistillStage(kind="distill", alpha=0.0, assistants=[ASSISTANT], mutual={},
                         self_distillation={"teacher": "checkpoint"})
    assert enabled_methods(chain) == ["assistants", "self_distillation", "mutual"]
    assert enabled_methods(DistillStage(kind="distill")) == ["logit_kd"]


def test_self_distillation_stays_off_the_assistant_link(splits, teacher, tmp_path):
    fields = {"assistants": [ASSISTANT], "self_distillation": {}, "relational": {}}
    trained, _, _ = distill(splits, one(teacher), tmp_path, epochs=1, **fields)
    link, student = trained["assistant_1"].history[0], trained["student"].history[0]
    assert {"loss_ce", "loss_kd"} <= set(link)
    assert not {"loss_self", "loss_rkd_distance", "loss_rkd_angle"} & set(link)
    assert {"loss_self", "loss_rkd_distance", "loss_rkd_angle"} <= set(student)


def test_hint_adapters_size_from_each_model_where_it_is():
    """A teacher left on another device by an earlier run (the GPU; here the meta device, which
    keeps shapes only) still sizes the hint adapters: the probe goes to each model's device."""
    import numpy as np
    import torch

    from edgekd.config import HintConfig, ModelConfig
    from edgekd.kd.terms.hint import _adapters
    from edgekd.models import build

    meta = {"input_shape": [1, 8, 8], "num_classes": 10, "in_channels": 1,
            "classes": [str(c) for c in range(10)], "mean": [0.5], "std": [0.25],
            "input_range": [0.0, 1.0], "layout": "NCHW"}
    student = build(ModelConfig(arch="cnn", width=4, depth=2), meta)
    teacher = build(ModelConfig(arch="cnn", width=8, depth=2), meta).to("meta")
    hints = [HintConfig(student="net.2", teacher="net.2")]
    adapters = _adapters(hints, student, teacher, np.zeros((4, 1, 8, 8), np.float32))
    assert isinstance(adapters["0"], torch.nn.Linear)
    assert (adapters["0"].in_features, adapters["0"].out_features) == (4 * 2, 8 * 2)
