"""Stochastic depth is captured off: an int8 model must not drop branches at random."""

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from edgekd.quant import qat


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.drop = StochasticDepth(0.5, "row")
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return self.head((x + self.drop(self.conv(x))).mean((2, 3)))


def test_no_random_op_is_captured_and_the_int8_model_is_deterministic():
    torch.manual_seed(0)
    model = _Residual()
    prepared = qat.prepare(model, (3, 8, 8))
    targets = {str(n.target) for n in prepared.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "bernoulli" in t or "rand" in t]
    assert model.training and not model.drop.training  # the rest still trains
    int8 = qat.convert(prepared)
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(int8(x), int8(x))
