import pytest

from edgekd.budgets import check, parse_duration_ms, parse_size
from edgekd.config import DistillBudget, ExportBudget, ProfileBudget, QuantizeBudget


@pytest.mark.parametrize("text, expected", [
    ("2 MB", 2_000_000), ("1.5GiB", int(1.5 * 2**30)), ("<1 GB", 10**9), (512, 512),
    ("100kb", 100_000), ("3 MiB", 3 * 2**20),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("100 ms", 100.0), ("<0.5 s", 500.0), ("250us", 0.25), (7, 7.0), ("12", 12.0),
])
def test_parse_duration(text, expected):
    assert parse_duration_ms(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["2 parsecs", "fast", "MB 2"])
def test_bad_units_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_stage_level_checks_pass_and_fail():
    metrics = {"accuracy": 0.96, "accuracy_drop": 0.02, "teacher_retention": 0.99}
    checks = check(DistillBudget(min_accuracy=0.95, min_teacher_retention=0.97), metrics, []) \
        + check(QuantizeBudget(max_accuracy_drop=0.01), metrics, [])
    by_name = {c.name: c for c in checks}
    assert by_name["min_accuracy"].passed
    assert not by_name["max_accuracy_drop"].passed
    assert by_name["max_accuracy_drop"].value == 0.02 and by_name["max_accuracy_drop"].limit == 0.01
    assert by_name["min_teacher_retention"].passed


def test_per_artifact_checks_with_units_and_filter():
    export = ExportBudget(max_size="2 MB", artifacts=["a"])
    profile = ProfileBudget(max_latency_ms={"p90": "10 ms", "p50": 5}, max_peak_memory="1 GB",
                            artifacts=["a"])
    metrics = {"a.bytes": 3e6, "a.latency_ms_p90": 9.0, "a.latency_ms_p50": 6.0,
               "a.peak_memory_mb": 100.0, "b.bytes": 1.0}
    checks = {c.name: c for budget in (export, profile)
              for c in check(budget, metrics, ["a", "b"])}
    assert set(checks) == {"a.max_size", "a.max_latency_ms_p90", "a.max_latency_ms_p50",
                           "a.max_peak_memory_mb"}
    assert not checks["a.max_size"].passed
    assert checks["a.max_latency_ms_p90"].passed
    assert not checks["a.max_latency_ms_p50"].passed
    assert checks["a.max_peak_memory_mb"].limit == pytest.approx(1e9 / 2**20)


def test_memory_checks_say_mib_and_the_limit_as_written():
    budget = ProfileBudget(max_peak_memory="1 GB", max_model_memory="50 MB")
    metrics = {"a.peak_memory_mb": 731.2, "a.model_memory_mb": 60.0}
    peak, model = check(budget, metrics, ["a"])
    assert peak.passed and not model.passed  # 50 MB is 47.68 MiB
    assert peak.describe() == ("ok   a.max_peak_memory_mb: 731.2 MiB (limit <= 953.7 MiB = 1 GB, "
                               "measured on host)")
    assert model.name == "a.max_model_memory_mb" and "47.68 MiB = 50 MB" in model.describe()


def test_plain_latency_number_means_p90_and_missing_metric_fails():
    checks = check(ProfileBudget(max_latency_ms=50), {}, ["x"])
    assert [(c.name, c.value, c.passed) for c in checks] == [
        ("x.max_latency_ms_p90", None, False)]


def test_min_accuracy_per_artifact_when_stage_has_none():
    checks = check(ExportBudget(min_accuracy=0.9), {"x.accuracy": 0.95, "y.accuracy": 0.5},
                   ["x", "y"])
    assert {c.name: c.passed for c in checks} == {"x.min_accuracy": True, "y.min_accuracy": False}


def test_estimated_flag_is_carried():
    (c,) = check(ProfileBudget(max_latency_ms=5), {"x.latency_ms_p90": 1.0}, ["x"],
                 measured_on="rpi4", estimated=True)
    assert c.estimated and c.measured_on == "rpi4" and "estimated on rpi4" in c.describe()


def test_no_budget_no_checks():
    assert check(None, {"accuracy": 0.1}, ["a"]) == []


def test_stage_wide_accuracy_ignores_artifacts_and_per_artifact_ignores_stage_metrics():
    metrics = {"accuracy": 0.5, "x.accuracy": 0.99}
    (stage,) = check(QuantizeBudget(min_accuracy=0.9), metrics, ["x"])
    assert (stage.name, stage.passed) == ("min_accuracy", False)
    (per_file,) = check(ExportBudget(min_accuracy=0.9), metrics, ["x"])
    assert (per_file.name, per_file.passed) == ("x.min_accuracy", True)


@pytest.mark.parametrize("budget, key, owner", [
    (DistillBudget, "max_latency_ms", "profile"), (QuantizeBudget, "max_size", "export"),
    (DistillBudget, "min_top1_agreement", "export"), (QuantizeBudget, "max_peak_memory",
                                                      "profile"),
])
def test_each_stage_names_the_limits_it_cannot_check(budget, key, owner):
    reason = budget.misplaced_keys()[key]
    assert f"a {budget.stage} budget cannot check {key}" in reason and owner in reason


@pytest.mark.parametrize("budget, raw, message", [
    (DistillBudget, {"min_accuracy": True}, "min_accuracy: expected a number, not true"),
    (DistillBudget, {"max_params": False}, "max_params: expected a number, not false"),
    (ProfileBudget, {"min_int8_speedup": True}, "min_int8_speedup: expected a number, not true"),
    (ExportBudget, {"max_size": True}, "max_size: expected a number, not true"),
    (ProfileBudget, {"max_latency_ms": {"p90": True}},
     "max_latency_ms: expected a number, not true"),
    (ExportBudget, {"max_size": -5}, "max_size: a limit cannot be negative (got -5)"),
    (ProfileBudget, {"max_peak_memory": -1}, "max_peak_memory: a limit cannot be negative"),
    (ProfileBudget, {"max_latency_ms": -0.5}, "max_latency_ms: a limit cannot be negative"),
    (ProfileBudget, {"max_latency_ms": {"p99": -2}}, "max_latency_ms: a limit cannot be "
                                                      "negative"),
    (QuantizeBudget, {"max_accuracy_drop": -0.1}, "max_accuracy_drop: Input should be greater"),
    (ExportBudget, {"max_size": float("inf")}, "max_size: expected a finite number, not inf"),
    (ExportBudget, {"max_size": "1e999 MB"}, "max_size: expected a finite number, not inf"),
    (ProfileBudget, {"max_latency_ms": float("nan")}, "max_latency_ms: expected a finite"),
])
def test_boolean_negative_and_non_finite_limits_are_one_error(budget, raw, message):
    from edgekd.schema import ConfigError, parse

    with pytest.raises(ConfigError) as err:
        parse(budget, raw, "p.yaml")
    (line,) = err.value.lines
    assert line.startswith(f"p.yaml: {message}")


def test_zero_and_units_are_still_limits():
    assert ExportBudget(max_size=0).max_size == 0
    assert ProfileBudget(max_latency_ms={"p50": "0.5 s"}).latency_limits() == {"p50": 500.0}
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)
    with pytest.raises(ValueError, match="not true"):
        parse_duration_ms(True)


def test_a_failed_check_never_reads_like_a_pass():
    [near] = check(ExportBudget(min_top1_agreement=0.99), {"a.top1_agreement": 0.98999}, ["a"])
    assert not near.passed
    assert "0.98999 (limit >= 0.99," in near.describe()
    [plain] = check(ExportBudget(min_top1_agreement=0.99), {"a.top1_agreement": 0.5}, ["a"])
    assert "0.5 (limit >= 0.99," in plain.describe()


def test_sizes_read_as_sizes():
    [small] = check(ExportBudget(max_size="2 MB"), {"a.bytes": 14600.0}, ["a"])
    assert "a.max_size: 14.6 kB (limit <= 2 MB," in small.describe()
    [edge] = check(ExportBudget(max_size="10 KB"), {"a.bytes": 10000.4}, ["a"])
    assert not edge.passed and "10.0004 kB (limit <= 10 kB," in edge.describe()


@pytest.mark.parametrize("bad", ["1e308 GB", 1e308, 10**16])
def test_sizes_beyond_any_limit_are_refused_not_overflowed(bad):
    with pytest.raises(ValueError, match="larger than any size limit"):
        parse_size(bad)
    with pytest.raises(ValueError, match="max_size"):
        ExportBudget(max_size=bad)
