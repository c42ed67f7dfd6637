import pytest
import torch
from pydantic import ValidationError

from edgekd.config import ModelConfig, TeacherConfig
from edgekd.models import (
    HeadMismatch,
    ModelError,
    build,
    count_macs,
    count_params,
    load_model,
    save_model,
)
from edgekd.models.builders import InputAdapter, cnn

META = {"num_classes": 10, "in_channels": 1, "input_shape": [1, 8, 8], "mean": [0.3],
        "std": [0.4]}
RGB = {**META, "in_channels": 3, "input_shape": [3, 32, 32], "mean": [0.3] * 3, "std": [0.4] * 3}


def test_cnn_knobs_change_size_and_bn_defaults_suit_int8():
    small, big = cnn(10, 1, width=4, depth=2), cnn(10, 1, width=16, depth=3)
    assert count_params(big) > 10 * count_params(small)
    bns = [m for m in big.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-5 and b.momentum == 0.1 for b in bns)
    assert not any(isinstance(m, torch.nn.Hardswish | torch.nn.SiLU) for m in big.modules())


def test_normalisation_is_inside_the_model():
    model = build(ModelConfig(arch="cnn", width=4, depth=1), {**META, "mean": [0.5],
                                                              "std": [0.25]}).eval()
    x = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(model.normalize(x), torch.zeros_like(x))
    assert model.record["input"]["origin"] == "data statistics"


def test_input_adapter_range_channels_order_and_size():
    adapter = InputAdapter({"channels_in": 1, "channels": 3, "size_in": (8, 8), "size": (16, 16),
                            "channel_order": "bgr", "range": (0.0, 255.0),
                            "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0]})
    x = torch.rand(2, 1, 8, 8)
    y = adapter(x)
    assert y.shape == (2, 3, 16, 16)
    up = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear") * 255.0
    # bgr: the network's channel 0 is the last of the (repeated) input channels
    expected = torch.cat([(up - 10) / 2, (up - 20) / 4, (up - 30) / 8], 1)
    assert torch.allclose(y, expected, atol=1e-3)
    grey = InputAdapter({"channels_in": 3, "channels": 1, "mean": [0.0], "std": [1.0]})
    rgb = torch.rand(1, 3, 4, 4)
    assert torch.allclose(grey(rgb), 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2]
                          + 0.114 * rgb[:, 2:])


def test_macs_of_a_known_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 3))
    assert count_macs(model, (1, 4, 4)) == 2 * 16 * 9 + 32 * 3


def test_torchvision_arch_on_grey_input():
    model = build(ModelConfig(arch="mobilenet_v3_small"), {**META, "num_classes": 5,
                                                          "input_shape": [1, 32, 32]}).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    assert model.record["input"]["mean"] == [0.3] * 3  # grey statistics for every channel
    assert "net.features.0" in dict(model.named_modules())  # no wrapper around the network


def test_saved_model_rebuilds_from_its_record(tmp_path):
    for spec in (ModelConfig(arch="cnn", width=4, depth=2), ModelConfig(arch="timm:resnet10t"),
                 ModelConfig(arch="torchvision:squeezenet1_1")):
        model = build(spec, RGB).eval()
        x = torch.rand(2, 3, 32, 32)
        save_model(model, RGB, tmp_path / "m.pt")
        assert torch.equal(load_model(tmp_path / "m.pt").eval()(x), model(x)), spec.arch


def test_user_state_dicts_in_every_layout(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = build(ModelConfig(arch="cnn", width=4, depth=2), META).eval()
    x = torch.rand(3, 1, 8, 8)
    net = source.net.state_dict()
    layouts = {"bare.pt": net, "wrapped.pt": {"state_dict": net, "epoch": 3},
               "ddp.pt": {f"module.{k}": v for k, v in net.items()},
               "classifier.pt": source.state_dict()}
    for name, blob in layouts.items():
        torch.save(blob, tmp_path / name)
    save_file(net, tmp_path / "w.safetensors")
    for name in [*layouts, "w.safetensors"]:
        spec = ModelConfig(arch="cnn", width=4, depth=2, weights=tmp_path / name,
                           input={"mean": [0.3], "std": [0.4]})
        assert torch.allclose(build(spec, META).eval().net(x), source.net(x)), name


def test_a_whole_pickled_model_needs_trust(tmp_path):
    net = cnn(10, 1, width=4, depth=1)
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ModelError, match="trust_checkpoint: true"):
        build(ModelConfig(arch="cnn", width=4, depth=1, checkpoint=tmp_path / "whole.pt"), META)
    model = build(ModelConfig(checkpoint=tmp_path / "whole.pt", trust_checkpoint=True), META)
    assert model.record["trusted"]
    save_model(model, META, tmp_path / "saved.pt")  # rebuilt from the trusted file
    x = torch.rand(2, 1, 8, 8)
    named = [model.record["spec"]]  # the pipeline that trusted it names it
    assert torch.equal(load_model(tmp_path / "saved.pt", named).eval()(x), model.eval()(x))
    with pytest.raises(ModelError, match=r"would be rebuilt from checkpoint: .*whole.pt, which "
                                         "this pipeline does not name"):
        load_model(tmp_path / "saved.pt")  # a record alone never unpickles (a planted file)
    with pytest.raises(ValidationError, match="arch: required"):
        ModelConfig(checkpoint=tmp_path / "whole.pt")


def test_code_in_a_checkpoint_never_runs_without_trust(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="runs code from the file"):
        build(ModelConfig(arch="cnn", checkpoint=tmp_path / "evil.pt"), META)
    assert not marker.exists()


def test_head_is_replaced_for_a_student_and_refused_for_a_teacher(tmp_path):
    torch.save(cnn(1000, 1, width=4, depth=2).state_dict(), tmp_path / "imagenet.pt")
    spec = dict(arch="cnn", width=4, depth=2, weights=tmp_path / "imagenet.pt")
    student = build(ModelConfig(**spec), META)
    assert student.net[3].out_features == 10
    assert student.record["notes"] == ["classifier replaced: 3 had 1000 outputs, the data has "
                                       "10 classes (the new head starts at random)"]
    with pytest.raises(HeadMismatch, match="its classifier \\(3\\) has 1000 outputs, the data "
                                           "has 10 classes"):
        build(TeacherConfig(**spec), META, role="teacher")
    teacher = build(TeacherConfig(**spec, reset_head=True, train={"epochs": 1}), META,
                    role="teacher")
    assert teacher.net[3].out_features == 10
    with pytest.raises(ValidationError, match="reset_head: a teacher with a new head must be "
                                              "fine-tuned"):
        TeacherConfig(**spec, reset_head=True)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    torch.save(cnn(10, 1, width=8, depth=2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="w.pt does not fit arch cnn: keys of another shape "
                                         "0.0.weight \\(8, 1, 3, 3\\) vs \\(4, 1, 3, 3\\)"):
        build(ModelConfig(arch="cnn", width=4, depth=2, weights=tmp_path / "w.pt"), META)


def test_module_source_with_kwargs_and_num_classes(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from torch import nn\n\n"
        "def build(width=4, num_classes=2):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(width, num_classes))\n\n"
        "def fixed():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, 7))\n")
    model = build(ModelConfig(module="mine.py:build", kwargs={"width": 6}), META, tmp_path)
    assert model.net[0].out_channels == 6 and model.net[4].out_features == 10
    assert model.record["input"]["channels"] == 3  # from its first convolution
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    fixed = build(ModelConfig(module="mine.py:fixed"), META, tmp_path)
    assert fixed.net[3].out_features == 10 and fixed.record["head_replaced"]
    save_model(fixed, META, tmp_path / "f.pt")
    assert load_model(tmp_path / "f.pt", [fixed.record["spec"]]).net[3].out_features == 10
    with pytest.raises(ModelError, match=r"rebuilt from module: .*mine.py:fixed, which"):
        load_model(tmp_path / "f.pt", [model.record["spec"]])  # another module: not imported
    with pytest.raises(HeadMismatch, match="the network has 7 outputs, the data has 10"):
        build(TeacherConfig(module="mine.py:fixed", train={"epochs": 1}), META, tmp_path,
              role="teacher")
    with pytest.raises(ModelError, match="has no function 'buidl' \\(did you mean build\\?\\)"):
        build(ModelConfig(module="mine.py:buidl"), META, tmp_path)


def test_unknown_names_get_did_you_mean():
    with pytest.raises(ModelError, match="unknown timm model 'resnet10tt' \\(did you mean "
                                         "resnet10t\\?\\)"):
        build(ModelConfig(arch="timm:resnet10tt"), RGB)
    with pytest.raises(ModelError, match="unknown torchvision classification model "
                                         "'resnet19'"):
        build(ModelConfig(arch="torchvision:resnet19"), RGB)
    with pytest.raises(ValidationError, match="timm:<name>, hf:<directory>, or module:"):
        ModelConfig(arch="tensorflow:resnet")


def test_input_comes_from_the_spec_then_the_source_then_the_data(tmp_path):
    import timm

    torch.save(timm.create_model("resnet10t", num_classes=10).state_dict(), tmp_path / "t.pt")
    pretrained = build(ModelConfig(arch="timm:resnet10t", weights=tmp_path / "t.pt"), RGB)
    assert pretrained.record["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert pretrained.record["input"]["origin"] == "timm pretrained_cfg"
    scratch = build(ModelConfig(arch="timm:resnet10t"), RGB)
    assert scratch.record["input"]["origin"] == "data statistics"
    given = build(ModelConfig(arch="timm:resnet10t", weights=tmp_path / "t.pt",
                              input={"mean": [0.5], "std": [0.5], "size": 48}), RGB)
    assert given.record["input"]["mean"] == [0.5] * 3 and given.record["input"]["size"] == (48, 48)
    assert given(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    torch.save(cnn(10, 3, 4, 2).state_dict(), tmp_path / "c.pt")
    foreign = build(ModelConfig(arch="cnn", width=4, depth=2, weights=tmp_path / "c.pt"), RGB)
    assert foreign.record["input"]["origin"].startswith("none")
    assert foreign.normalize.identity
    save_model(scratch, RGB, tmp_path / "run.pt")  # trained here: its own statistics go along
    again = build(ModelConfig(arch="timm:resnet10t", checkpoint=tmp_path / "run.pt"),
                  {**RGB, "mean": [0.9] * 3})
    assert again.record["input"]["mean"] == [0.3] * 3


def _not_model_files(tmp_path):
    """Files a user might point weights / checkpoint at by mistake: random bytes, text, a
    torch.save archive cut short, random bytes named .safetensors."""
    import random

    noise = random.Random(0).randbytes(4096)
    torch.save(cnn(10, 1, width=4, depth=1).state_dict(), tmp_path / "whole.pt")
    files = {"noise.pt": noise, "notes.pt": b"trained on digits, 20 epochs\nlr 0.01\n",
             "cut.pt": (tmp_path / "whole.pt").read_bytes()[:700], "noise.safetensors": noise}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return list(files)


@pytest.mark.parametrize("trust", [False, True])
def test_a_file_that_is_no_model_file_is_one_line_naming_it(tmp_path, trust):
    for name in _not_model_files(tmp_path):
        kind = "safetensors" if name.endswith(".safetensors") else "PyTorch"
        specs = [dict(checkpoint=tmp_path / name, trust_checkpoint=trust)]
        if not trust:  # trust_checkpoint goes with checkpoint only
            specs.append(dict(weights=tmp_path / name))
        for spec in specs:
            field = next(iter(spec))
            with pytest.raises(ModelError) as caught:
                build(ModelConfig(arch="cnn", width=4, depth=1, **spec), META)
            (line,) = str(caught.value).splitlines()
            assert line.startswith(f"{field}: {tmp_path / name} is not a {kind} file"), line
        if kind == "PyTorch" and trust:  # a whole model: no arch, unpickled
            with pytest.raises(ModelError, match=f"^checkpoint: .*{name} is not a PyTorch file"):
                build(ModelConfig(checkpoint=tmp_path / name, trust_checkpoint=True), META)


def test_weights_with_nan_or_inf_are_refused_naming_the_count(tmp_path):
    from safetensors.torch import save_file

    net = cnn(10, 1, width=4, depth=1)
    state = net.state_dict()
    state["0.0.weight"][0, 0] = float("nan")  # 9 values
    state["3.bias"][:2] = float("inf")
    torch.save(state, tmp_path / "nan.pt")
    save_file(state, tmp_path / "nan.safetensors")
    for name in ("nan.pt", "nan.safetensors"):
        with pytest.raises(ModelError, match=f"^checkpoint: .*{name} has 11 non-finite "
                                             "value\\(s\\) \\(NaN or inf\\) in 2 of \\d+ "
                                             "tensors"):
            build(TeacherConfig(arch="cnn", width=4, depth=1, checkpoint=tmp_path / name),
                  META, role="teacher")
    net.load_state_dict(state)
    torch.save(net, tmp_path / "whole_nan.pt")
    with pytest.raises(ModelError, match="^checkpoint: .*whole_nan.pt has 11 non-finite value"):
        build(ModelConfig(checkpoint=tmp_path / "whole_nan.pt", trust_checkpoint=True), META)


def test_a_plain_pickle_is_refused_unread_even_when_trusted(tmp_path):
    """pickle.dump's file is no torch.save file: torch.load would run it and then fail on the
    magic number, so it is refused before anything is unpickled."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    for trust in (False, True):
        with pytest.raises(ModelError, match="raw.pt is a plain pickle, not a torch.save file: "
                                             "torch.load cannot read it, with or without "
                                             "trust_checkpoint"):
            build(ModelConfig(arch="cnn", checkpoint=tmp_path / "raw.pt",
                              trust_checkpoint=trust), META)
    assert not marker.exists()


@pytest.mark.parametrize("body, says", [
    ("raise RuntimeError('boom')", r"raised RuntimeError: boom"),
    ("import sys; sys.exit(0)", r"called sys.exit\(0\) instead of returning a network"),
])
def test_a_builder_that_fails_is_the_users_error_named_by_its_module(tmp_path, body, says):
    """sys.exit(0) in a student builder ended `edgekd run` with exit 0 and no report; an
    exception was an internal error (exit 1) found after the teacher had trained."""
    (tmp_path / "mine.py").write_text(f"def build(num_classes=10):\n    {body}\n")
    with pytest.raises(ModelError, match=rf"module: mine.py:build {says}"):
        build(ModelConfig(module="mine.py:build"), META, tmp_path)
