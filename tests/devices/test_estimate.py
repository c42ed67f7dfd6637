"""Estimates for unreachable devices: the published calibration data, the depthwise / dense
split, the calibrated fit and its held-out error (arithmetic on committed data: no timing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.devices.commands import format_result
from edgekd.devices.estimate import (
    cross_validate,
    describe,
    estimate,
    expected_error,
    onnx_figures,
)
from edgekd.devices.profiles import load_profile, profile_names
from edgekd.devices.published import load_published
from edgekd.schema import ConfigError

GOAL = 0.25  # issue 16: median error on networks not used for fitting


def held_out_errors(board: str | None = None) -> np.ndarray:
    return np.array([r["held_out_ms"] / r["published_ms"] - 1 for r in cross_validate()
                     if r["held_out_ms"] and board in (None, r["board"])])


def test_published_data_parses_and_every_row_has_a_source():
    data = load_published()
    assert len(data.rows) >= 60 and {r.board for r in data.rows} == {"rpi4", "rpi5"}
    for row in data.rows:
        source = data.sources[row.source]
        assert source.url.startswith("https://github.com/") and "/blob/" in source.url
        assert row.where.startswith("line ")
    calibrated = {load_profile(n).calibration_board for n in profile_names()}
    assert {r.board for r in data.rows} <= calibrated  # every board has a profile using it


def test_a_row_naming_an_unknown_source_is_refused(tmp_path):
    text = load_published.__wrapped__().model_dump_json()  # the shipped data, as YAML (JSON)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace('"source":"xnnpack"', '"source":"xnnpak"', 1))
    with pytest.raises(ConfigError, match=r"rows\[\d+\]\.source: unknown source 'xnnpak'"):
        load_published(bad)


def _tiny_net(path: Path) -> Path:
    """3 -> 8 dense 3x3, 8 depthwise 3x3, 8 -> 16 grouped 3x3 (groups 2: not depthwise),
    16 -> 10 linear, on 8 x 8 pixels."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("w2", 8, 1, 3, 3), weight("w3", 16, 4, 3, 3),
             weight("w4", 16, 10)]
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], **pad),
             helper.make_node("Conv", ["a", "w2"], ["b"], group=8, **pad),
             helper.make_node("Conv", ["b", "w3"], ["c"], group=2, **pad),
             helper.make_node("GlobalAveragePool", ["c"], ["d"]),
             helper.make_node("Flatten", ["d"], ["e"]),
             helper.make_node("MatMul", ["e", "w4"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_depthwise_and_dense_macs_are_counted_apart(tmp_path):
    figures = onnx_figures(_tiny_net(tmp_path / "tiny.onnx"))
    pixels = 8 * 8
    assert figures["depthwise_macs"] == pixels * 8 * 9
    assert figures["dense_macs"] == pixels * 8 * 27 + pixels * 16 * 4 * 9 + 16 * 10
    assert figures["macs"] == figures["dense_macs"] + figures["depthwise_macs"]
    assert figures["layers"] == 4


def test_the_fit_reproduces_a_published_row_within_its_band():
    data = load_published()
    [row] = [r for r in data.rows if (r.board, r.model, r.threads, r.precision, r.runtime)
             == ("rpi4", "resnet18", 4, "fp32", "ncnn")]
    result = estimate(Path("resnet18.onnx"), load_profile("rpi4"),
                      {**data.models["resnet18"].figures(), "precision": "fp32"})
    c = result.conditions
    low, high = c["expected_error"]["latency_ms_range"]
    assert low <= row.ms <= high
    assert abs(result.metrics["latency_ms_p50"] / row.ms - 1) < GOAL
    assert c["method"] == "calibrated on published rpi4 measurements" and c["threads"] == 4
    assert c["rates"][4]["dense_gmac_per_s"] > 0


def test_the_band_holds_most_held_out_rows():
    """The 10th-90th percentile band is the held-out errors' own: about 80 % of rows fall in
    it; fewer would mean the band printed with every estimate is too narrow."""
    inside = []
    for r in cross_validate():
        if r["held_out_ms"]:
            err = expected_error(r["board"], r["class"], r["held_out_ms"])
            low, high = err["latency_ms_range"]
            inside.append(low <= r["published_ms"] <= high)
    assert np.mean(inside) >= 0.7


@pytest.mark.parametrize("board", [None, "rpi4", "rpi5"])
def test_held_out_median_error_meets_the_goal(board):
    errors = np.abs(held_out_errors(board))
    assert len(errors) >= 30
    assert np.median(errors) <= GOAL


def test_the_calibration_beats_the_roofline_it_replaced():
    """The roofline was several times too slow on these boards (issue 16: 2.4x to 7.9x)."""
    data = load_published()
    row = next(r for r in data.rows if r.model == "mobilenet_v2" and r.board == "rpi4")
    figures = {**data.models["mobilenet_v2"].figures(), "precision": "fp32"}
    device = load_profile("rpi4")
    old = estimate(Path("m.onnx"), device.model_copy(update={"calibration_board": None}),
                   figures)
    new = estimate(Path("m.onnx"), device, figures)
    assert old.metrics["latency_ms_p50"] > 2 * row.ms
    assert abs(new.metrics["latency_ms_p50"] / row.ms - 1) < GOAL
    assert "unknown" in old.conditions["expected_error"]["basis"]


def test_threads_between_published_counts_interpolate():
    figures = {**load_published().models["mobilenet_v2"].figures(), "precision": "fp32"}
    device = load_profile("rpi4")
    ms = {t: estimate(Path("m.onnx"), device, figures, threads=t) for t in (1, 2, 4, 8)}
    p50 = {t: r.metrics["latency_ms_p50"] for t, r in ms.items()}
    assert p50[1] > p50[2] > p50[4] == p50[8]
    assert "interpolated between 1 and 4" in ms[2].conditions["thread_scaling"]
    assert "none published for 8" in ms[8].conditions["thread_scaling"]


def test_fp32_on_a_board_measured_in_fp16_says_so():
    figures = {**load_published().models["resnet18"].figures(), "precision": "fp32"}
    result = estimate(Path("m.onnx"), load_profile("rpi5"), figures)
    assert "fp16" in result.conditions["calibration_note"]
    int8 = estimate(Path("m.onnx"), load_profile("rpi5"), {**figures, "precision": "int8"})
    assert "calibration_note" not in int8.conditions


def test_every_printed_estimate_shows_its_expected_error():
    figures = {**load_published().models["efficientnet_b0"].figures(), "precision": "int8"}
    device = load_profile("rpi4")
    result = estimate(Path("m.onnx"), device, figures, why="no route to host")
    text = format_result(Path("m.onnx"), device, result)
    assert "ESTIMATED" in text and "expected error: median" in text and "likely" in text
    assert "expected error: unknown" in describe(
        estimate(Path("m.onnx"), load_profile("jetson-orin-nano"), figures).conditions)


def test_a_model_far_outside_the_published_ones_is_marked_extrapolated():
    tiny = {"macs": 500_000, "dense_macs": 500_000, "depthwise_macs": 0, "params": 6000,
            "activation_bytes": 100_000, "layers": 4, "precision": "fp32"}
    result = estimate(Path("m.onnx"), load_profile("rpi4"), tiny)
    assert "extrapolated" in result.conditions["calibration_note"]
    assert "latency_ms_range" not in result.conditions["expected_error"]
    assert "extrapolated" in describe(result.conditions)


def test_a_calibration_board_without_published_rows_is_refused_at_load():
    with pytest.raises(ConfigError, match="calibration_board: no published measurements for "
                                          "'rpi3' \\(did you mean rpi[45]\\?\\)"):
        load_profile("rpi4", {"calibration_board": "rpi3"})
