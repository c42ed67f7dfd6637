"""A model's own BatchNorm eps and momentum survive QAT capture, the train / eval switches and
conversion (torchao writes 0.1 / 1e-5 whatever the model had)."""

import torch
from torch import nn

from edgekd.quant import qat

EPS, MOMENTUM = 0.5, 0.3
"""Far from 1e-5 / 0.1, so a rewritten value shows in the outputs."""


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, eps=EPS, momentum=MOMENTUM),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    with torch.no_grad():  # running statistics away from their initial 0 / 1
        for _ in range(20):
            model(torch.rand(16, 1, 8, 8) * 0.1)
    return model


def _literals(graph: torch.fx.GraphModule) -> list[tuple]:
    return [n.args[6:8] for n in graph.graph.nodes if n.target == torch.ops.aten.batch_norm.default]


def test_batchnorm_eps_and_momentum_are_the_models_own_through_qat():
    model = _model()
    prepared = qat.prepare(model, (1, 8, 8))
    assert _literals(prepared) == [(MOMENTUM, EPS)]
    for training in (False, True, False):
        qat.set_mode(prepared, training)
        assert _literals(prepared) == [(MOMENTUM, EPS)]
    x = torch.rand(32, 1, 8, 8) * 0.1
    qat.set_mode(prepared, True)
    with torch.no_grad():  # the activation observers see data
        for _ in range(5):
            prepared(torch.rand(32, 1, 8, 8) * 0.1)
    qat.set_mode(prepared, False)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        # int8 moves the logits by 0.002-0.016 here; eps 1e-5 instead of 0.5 (the variance of
        # these inputs is about 1e-3) moved them by 0.54.
        assert torch.allclose(prepared(x), expected, atol=0.03)
        assert torch.allclose(qat.convert(prepared)(x), expected, atol=0.03)
    qat.set_mode(prepared, True)
    running = prepared.get_buffer("1.running_mean")
    running.fill_(5.0)  # far from any batch mean (inputs stay in the range the observers saw)
    with torch.no_grad():
        prepared(x)
        batch = model[0](x).mean((0, 2, 3))  # fake-quant moves the conv a little only
    assert torch.allclose(running - 5.0, MOMENTUM * (batch - 5.0), rtol=0.02)
