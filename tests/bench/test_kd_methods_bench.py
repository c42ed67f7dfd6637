"""bench/kd_methods.py runs in its --tiny setting (digits) and writes well-formed JSON.

No timing or accuracy ordering is asserted (two epochs decide nothing): only that every method
is there, for every seed, with figures of the right kind and range.
"""

from __future__ import annotations

import json
import math

import pytest

from bench import kd_methods

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kd-methods")
    out = tmp / "nested" / "kd.json"
    kd_methods.main(["--tiny", "--work", str(tmp / "work"), "--out", str(out)])
    return json.loads(out.read_text())


def fraction(stat: dict) -> bool:
    return 0 <= stat["mean"] <= 1 and stat["std"] >= 0


def test_setting_and_environment(doc):
    assert doc["benchmark"] == "kd_methods" and doc["setting"] == "quick"
    assert doc["datasets"] == ["digits"]  # --tiny leaves MNIST out even when it is present
    assert doc["environment"]["cpu"] and doc["environment"]["packages"]["torch"]
    assert doc["environment"]["torch_threads"] == 1
    assert len(doc["tables"]) == 1 and doc["tables"][0]["markdown"].startswith("| method |")


def test_every_method_for_every_seed(doc):
    res = doc["results"]["digits"]
    assert res["seeds"] == list(kd_methods.TINY.seeds)
    assert res["epochs"] == kd_methods.TINY.epochs
    assert len(res["per_seed"]) == len(res["seeds"])
    for seed in res["per_seed"]:
        assert set(seed["methods"]) == set(kd_methods.METHODS)
        assert all(0 <= a <= 1 for a in seed["teacher_accuracy"])
    table = doc["tables"][0]["markdown"]
    assert all(f"| {name} |" in table for name in kd_methods.METHODS)


def test_figures_in_range(doc):
    res = doc["results"]["digits"]
    assert res["samples"]["train"] + res["samples"]["test"] == 1797  # all of digits
    assert fraction(res["teacher_accuracy"]) and fraction(res["second_teacher_accuracy"])
    models = res["models"]
    assert models["student"]["params"] < models["assistant"]["params"] \
        < models["teacher"]["params"]
    assert models["second_teacher"]["depth"] != models["teacher"]["depth"]
    summary = res["summary"]
    assert set(summary) == set(kd_methods.METHODS)
    baseline = summary["hard labels (baseline)"]
    assert baseline["gain"]["mean"] == 0  # the baseline against itself, seed by seed
    for name, s in summary.items():
        for key in ("accuracy", "ece", "teacher_agreement"):
            assert fraction(s[key]), (name, key)
        assert -1 <= s["gain"]["mean"] <= 1 and s["gain"]["std"] >= 0
        assert math.isclose(s["gain"]["mean"],
                            s["accuracy"]["mean"] - baseline["accuracy"]["mean"], abs_tol=1e-9)
        assert s["wall_s"]["mean"] > 0 and math.isfinite(s["wall_s"]["mean"])
        assert s["params"] == models["student"]["params"]
    assert summary["teacher-assistant chain"]["assistant_params"] == models["assistant"]["params"]
