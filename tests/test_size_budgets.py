"""Size limits on the student (max_params, min_param_ratio, max_macs): checked after the
distill stage like any limit, and before it trains, so a too-big student fails in seconds."""

import json

import pytest
from click.testing import CliRunner

from edgekd.budgets import check, check_sizes
from edgekd.cli import cli
from edgekd.config import DistillBudget

PIPELINE = """\
name: sizes
data: {{source: digits}}
teacher: {{arch: cnn, width: 8, depth: 2, train: {{epochs: 1}}}}
student: {{arch: cnn, width: 4, depth: 2}}
stages:
  - kind: distill
    epochs: 1
    baseline: false
    budget: {budget}
"""


def test_size_limits_read_the_student_metrics():
    metrics = {"student_params": 5000, "param_ratio": 7.3, "student_macs": 40_000}
    budget = DistillBudget(max_params=4000, min_param_ratio=10, max_macs=50_000)
    by_name = {c.name: c for c in check(budget, metrics, [])}
    assert not by_name["max_params"].passed and by_name["max_params"].value == 5000
    assert not by_name["min_param_ratio"].passed and by_name["min_param_ratio"].limit == 10
    assert by_name["max_macs"].passed
    assert [c.name for c in check_sizes(budget, metrics)] == ["max_params", "min_param_ratio",
                                                              "max_macs"]
    assert check_sizes(DistillBudget(min_accuracy=0.9), metrics) == []


@pytest.mark.parametrize("budget, field", [("{max_params: 10}", "max_params"),
                                           ("{min_param_ratio: 1000}", "min_param_ratio"),
                                           ("{max_macs: 10}", "max_macs")])
def test_a_too_big_student_fails_before_training(tmp_path, budget, field):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(budget=budget))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert f"gate failed at distill before training: {field} = " in result.output
    assert "[distill] running" not in result.output
    assert not (out / "distill" / "student.ckpt").exists()  # no epoch ran
    doc = json.loads((out / "report.json").read_text())
    distill = next(s for s in doc["stages"] if s["kind"] == "distill")
    assert distill["status"] == "gate_failed"
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == [field]


def test_no_gate_trains_anyway_and_still_fails_the_limit(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(budget="{max_params: 10}"))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--no-gate"])
    assert result.exit_code == 3, result.output
    assert (out / "distill" / "student.pt").exists()
    doc = json.loads((out / "report.json").read_text())
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == ["max_params"]


def test_a_student_within_its_limits_trains(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(budget="{max_params: 100000, min_param_ratio: 1.5}"))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
