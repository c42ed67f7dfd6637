"""Every stage's real result survives the cache's JSON round trip unchanged: a rerun that
reuses a stage hands the next stage exactly what the first run did."""

import pytest
from stagekit import json_round_trip

RESULTS = ["teacher", "distill", "quantize", "export", "profile", "ptq_quantize", "ptq_export"]


@pytest.mark.parametrize("name", RESULTS)
def test_result_survives_the_json_round_trip(name, request, tmp_path):
    result = request.getfixturevalue(name)
    assert result.artifacts or name == "profile"
    back = json_round_trip(result, tmp_path / "stage.json")
    assert back == result
    assert all(a.intact() for a in back.artifacts.values())
    assert all(isinstance(v, float | int) for v in back.metrics.values())
