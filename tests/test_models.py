import torch

from edgekd.config import ModelConfig
from edgekd.models import build, count_macs, count_params, load_model, save_model
from edgekd.models.builders import cnn

META = {"num_classes": 10, "in_channels": 1, "mean": [0.3], "std": [0.4]}


def test_cnn_knobs_change_size_and_bn_defaults_suit_int8():
    small, big = cnn(10, 1, width=4, depth=2), cnn(10, 1, width=16, depth=3)
    assert count_params(big) > 10 * count_params(small)
    bns = [m for m in big.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-5 and b.momentum == 0.1 for b in bns)
    assert not any(isinstance(m, torch.nn.Hardswish | torch.nn.SiLU) for m in big.modules())


def test_normalisation_is_inside_the_model():
    model = build(ModelConfig(arch="cnn", width=4, depth=1), 10, 1, [0.5], [0.25]).eval()
    x = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(model.normalize(x), torch.zeros_like(x))


def test_macs_of_a_known_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 3))
    assert count_macs(model, (1, 4, 4)) == 2 * 16 * 9 + 32 * 3


def test_torchvision_arch_on_grey_input():
    model = build(ModelConfig(arch="mobilenet_v3_small"), 5, 1, [0.5], [0.5]).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)


def test_checkpoint_round_trips_in_three_forms(tmp_path):
    cfg = ModelConfig(arch="cnn", width=4, depth=2)
    model = build(cfg, 10, 1, META["mean"], META["std"]).eval()
    x = torch.rand(3, 1, 8, 8)
    expected = model(x)
    ours = tmp_path / "ours.pt"
    save_model(model, cfg, META, ours)
    assert torch.allclose(load_model(ours).eval()(x), expected)
    bare = tmp_path / "bare.pt"  # a user's state_dict of the bare network
    torch.save(model.net.state_dict(), bare)
    assert torch.allclose(load_model(bare, cfg, META).eval()(x), expected)
    full = tmp_path / "full.pt"  # a fully saved module
    torch.save(model.net, full)
    assert torch.allclose(load_model(full, cfg, META).eval()(x), expected)
