"""bench.int8_speed in its quick setting: well-formed JSON with every figure, cached files
reused on a rerun, and the README pieces (section, goals, why) rendered from it.

No timing is asserted: only that each figure is there and of the right kind, and that the goal
verdicts follow from the figures.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

from bench import int8_speed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    work, results = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("results")

    def run(*flags: str) -> dict:
        int8_speed.main([*flags, "--datasets", "digits", "--work", str(work),
                         "--results", str(results)])
        return json.loads((results / "int8_speed.json").read_text())

    first = run("--tiny")
    second = run("--quick")  # the alias; reuses the converted files
    return first, second


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_every_figure_present(quick):
    doc, _ = quick
    assert doc["setting"] == "quick"
    res = doc["results"]
    assert set(res["models"]) == set(int8_speed.QUICK)
    for key in ("fp32_threads_1", "int8_threads_1", "fp32_threads_2", "int8_threads_2"):
        assert positive(res["peak"][key]["gmacs"])
    for name, r in res["models"].items():
        case = int8_speed.CASES[name]
        assert r["failed"] == {}, r["failed"]
        assert positive(r["macs"]) and r["macs_by_class"]["total"] == r["macs"]
        files = [f"{k}.{ext}" for _, ext in int8_speed.RUNTIMES
                 for k in ("fp32", "floor", *(f"int8-{v}" for v in case.variants))]
        for threads in ("1", "2"):
            assert all(positive(r["latency_ms"][threads][f]) for f in files)
            for f in files:
                if not f.startswith("floor"):
                    rate = r["rates"][threads][f]
                    assert positive(rate["gmacs"]) and positive(rate["fraction_of_peak"])
        for variant in case.variants:
            for _, ext in int8_speed.RUNTIMES:
                p = r[f"parity_{variant}"][ext]
                assert 0 <= p["within_one_step"] <= 1 and 0 <= p["top1_agreement"] <= 1
                assert r["ops"][f"int8-{variant}.{ext}"]["ops_int8"] > 0
        for source in ("ort_profile_us", "et_profile_us"):
            for variant in ("fp32", "int8-after"):
                kinds = r[source][variant]
                assert set(kinds) <= set(int8_speed.KINDS) and positive(sum(kinds.values()))
        assert "dense conv" in r["et_profile_us"]["int8-after"]
    assert [t["title"] for t in doc["tables"]]
    assert all(t["markdown"].startswith("| ") for t in doc["tables"])


def test_rerun_reuses_converted_files(quick):
    first, second = quick
    assert not any(r["reused_files"] for r in first["results"]["models"].values())
    assert all(r["reused_files"] for r in second["results"]["models"].values())
    assert second["setting"] == "quick"


def test_section_goals_why_render(quick):
    doc, _ = quick
    text = int8_speed.section(doc)
    assert "| model | px | threads | runtime |" in text and "cnn_8" in text
    rows = int8_speed.goals(doc)
    assert all(len(row) == 4 for row in rows)
    assert rows[0][0].startswith("int8 >= 2x faster than fp32 at 1 thread")
    # The quick setting has no 224 px model: those goals say so.
    assert sum(row[1] == "not measured" for row in rows) == len(int8_speed.SPEEDUP_GOALS) + 1
    assert all(isinstance(line, str) and line.startswith("- **")
               for line in int8_speed.why(doc))


def _as(doc: dict, name: str, int8_factor: float) -> dict:
    """The quick doc with its cnn_8 entry standing in for `name`, int8 latencies scaled."""
    fake = copy.deepcopy(doc)
    r = copy.deepcopy(doc["results"]["models"]["cnn_8"])
    for lat in r["latency_ms"].values():
        for key in lat:
            if key.startswith("int8-after"):
                lat[key] = lat[key.replace("int8-after", "fp32")] / int8_factor
    fake["results"]["models"][name] = r
    return fake


@pytest.mark.parametrize("factor", [1.5, 3.5])
def test_goal_verdict_follows_the_figures(quick, factor):
    doc, _ = quick
    fake = _as(doc, "resnet18@224", factor)
    row = next(r for r in int8_speed.goals(fake) if r[0].startswith("resnet18 int8 >= 3x"))
    assert row[2] == ("met" if factor >= 3 else "MISSED")
    explained = any(line.startswith("- **resnet18 at 224 px: int8")
                    for line in int8_speed.why(fake))
    assert explained == (factor < 3)


def test_a_failed_build_step_is_recorded():
    failed: dict = {}

    def broken():
        raise ValueError("no kernel for aten.silu")

    assert not int8_speed._attempt(failed, "int8-after.tflite", broken)
    assert failed["int8-after.tflite"].startswith("ValueError: no kernel for aten.silu")


def test_the_cache_key_counts_code_not_docstrings_or_comments():
    """Editing a docstring of edgekd/quant/*.py cost the hour of conversions again."""
    from bench.int8_speed import code

    base = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    assert code(base) == code('def f(x):\n    """Other words."""\n\n    return x + 1\n')
    assert code(base) == code("def f(x):\n    return x + 1  # another comment\n")
    assert code(base) != code('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert code('def g():\n    """Only a docstring."""\n') == code("def g():\n    pass\n")
