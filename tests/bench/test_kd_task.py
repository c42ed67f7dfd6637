"""bench/kd_task.py runs in its --quick setting and writes well-formed JSON with every figure.

No timing or accuracy ordering is asserted (two epochs on 1,000 composites decide nothing):
only that the data are built as promised, every method and the peer are there for every seed
with figures of the right kind and range, and section / goals / why render from the JSON.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import kd_task

pytestmark = pytest.mark.slow

needs_mnist = pytest.mark.skipif(kd_task.mnist_digits() is None,
                                 reason=f"MNIST not found in {kd_task.MNIST_DIR}")


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    if kd_task.mnist_digits() is None:
        pytest.skip(f"MNIST not found in {kd_task.MNIST_DIR}")
    tmp = tmp_path_factory.mktemp("kd-task")
    out = tmp / "nested" / "kd_task.json"
    kd_task.main(["--quick", "--work", str(tmp / "work"), "--out", str(out)])
    return json.loads(out.read_text())


def fraction(stat: dict) -> bool:
    return 0 <= stat["mean"] <= 1 and stat["std"] >= 0


@needs_mnist
def test_source_digits_never_shared():
    _x, y = kd_task.mnist_digits()
    pools = kd_task.split_sources(y)
    train, val, test = (set(pools[n].tolist()) for n in ("train", "val", "test"))
    assert not train & test and not train & val and not val & test
    assert len(train | val | test) == len(y)
    for pool in pools.values():  # every digit in every pool
        assert set(np.unique(y[pool]).tolist()) == set(range(10))


@needs_mnist
def test_composites_are_balanced_rgb_two_digit_numbers():
    x, y = kd_task.mnist_digits()
    images, labels = kd_task.compose(x, y, kd_task.split_sources(y)["test"], 300, seed=2)
    assert images.shape == (300, 3, kd_task.SIZE, kd_task.SIZE) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=100).tolist() == [3] * 100
    assert images.std(axis=(2, 3)).mean() > 10  # not blank
    again, _ = kd_task.compose(x, y, kd_task.split_sources(y)["test"], 300, seed=2)
    assert np.array_equal(images, again)  # seeded


def test_setting_and_environment(doc):
    assert doc["benchmark"] == "kd_task" and doc["setting"] == "quick"
    assert doc["environment"]["cpu"] and doc["environment"]["torch_threads"] == 1
    assert len(doc["tables"]) == 1 and doc["tables"][0]["markdown"].startswith("| method |")
    res = doc["results"]
    assert res["data"]["pools_disjoint"] and res["data"]["classes"] == 100
    assert res["setting"]["seeds"] == list(kd_task.QUICK.seeds)


def test_every_method_and_the_peer_for_every_seed(doc):
    res = doc["results"]
    names = set(kd_task.methods(kd_task.ATTENTION_WEIGHT)) | {kd_task.PEER}
    assert res["peer"]["ran"], res["peer"]
    assert len(res["per_seed"]) == len(res["setting"]["seeds"])
    for seed in res["per_seed"]:
        assert set(seed) == names
    assert set(res["summary"]) == names
    table = doc["tables"][0]["markdown"]
    assert all(f"| {name} |" in table for name in names)
    assert res["peer"]["version"] == "1.1.5"


def test_figures_in_range(doc):
    res = doc["results"]
    models = res["models"]
    assert models["teacher"]["params"] >= 10 * models["student"]["params"]
    assert models["student"]["params"] < models["assistant"]["params"] \
        < models["teacher"]["params"]
    assert 0 <= res["teacher_accuracy"] <= 1 and 0 <= res["second_teacher_accuracy"] <= 1
    base = res["summary"][kd_task.BASELINE]
    assert base["gain"]["mean"] == 0
    for name, s in res["summary"].items():
        for key in ("accuracy", "ece", "teacher_agreement"):
            assert fraction(s[key]), (name, key)
        assert math.isclose(s["gain"]["mean"], s["accuracy"]["mean"] - base["accuracy"]["mean"],
                            abs_tol=1e-9)
        assert s["wall_s"]["mean"] > 0
    int8 = res["int8"]
    assert 0 <= int8["torch_accuracy"] <= 1 and 0 <= int8["onnx_accuracy"] <= 1
    assert int8["onnx_kb"] > 0 and int8["method"] in res["summary"]
    hp = res["hyperparameters"]
    assert hp["logit_kd"] == kd_task.TUNED and hp["attention_weight"] == kd_task.ATTENTION_WEIGHT


def test_section_goals_why(doc):
    text = kd_task.section(doc)
    assert "| torchdistill KDLoss (peer) |" in text and "int8" in text
    rows = kd_task.goals(doc)
    assert len(rows) == 3
    for row in rows:
        assert len(row) == 4 and row[2] in ("met", "MISSED")
    bullets = kd_task.why(doc)
    assert all(isinstance(b, str) and b for b in bullets)
    missed = sum(row[2] == "MISSED" for row in rows)
    assert len(bullets) == missed  # every miss explained


def test_merge_joins_runs_on_disjoint_seeds(doc, tmp_path):
    """Runs side by side (one per seed, as on a GPU machine) merge into one document whose
    summary covers every seed and which renders as any other."""
    import copy

    other = copy.deepcopy(doc)
    other["results"]["setting"]["seeds"] = [7]
    for figures in other["results"]["per_seed"][0].values():
        figures["accuracy"] = max(0.0, figures["accuracy"] - 0.01)
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, d in zip(paths, (doc, other), strict=True):
        path.write_text(json.dumps(d))
    merged = kd_task.merge(paths, tmp_path / "merged.json")
    res = merged["results"]
    assert res["setting"]["seeds"] == [*kd_task.QUICK.seeds, 7]
    assert [m["seeds"] for m in res["merged_from"]] == [list(kd_task.QUICK.seeds), [7]]
    assert all(s["accuracy"]["n"] == 2 for s in res["summary"].values())
    assert res["int8_other_seeds"] == [doc["results"]["int8"]]
    assert json.loads((tmp_path / "merged.json").read_text()) == merged
    assert "2 processes side by side" in kd_task.section(merged)
    assert all("KD task, 2 epochs, CPU" in row[0] for row in kd_task.goals(merged))
