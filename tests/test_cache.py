from pathlib import Path

from edgekd.artifacts import Artifact, StageResult, cache_key
from edgekd.config import load_pipeline
from edgekd.data import data_key
from edgekd.pipeline import _cached, _keys

ROOT = Path(__file__).resolve().parents[1]


def test_budget_is_not_part_of_the_key_but_config_and_inputs_are():
    base = cache_key("distill", {"epochs": 3, "budget": {"min_accuracy": 0.9}}, ["a"])
    assert base == cache_key("distill", {"epochs": 3, "budget": {"min_accuracy": 0.1}}, ["a"])
    assert base != cache_key("distill", {"epochs": 4, "budget": None}, ["a"])
    assert base != cache_key("distill", {"epochs": 3}, ["b"])
    assert base != cache_key("quantize", {"epochs": 3}, ["a"])


def test_changing_a_stage_changes_it_and_every_later_key(tmp_path):
    source = ROOT / "pipelines" / "mobile.yaml"
    pipeline = load_pipeline(source)
    keys = _keys(pipeline, source, data_key(pipeline.data, pipeline.seed))
    edited = tmp_path / "mobile.yaml"
    edited.write_text(source.read_text().replace("epochs: 4\n", "epochs: 5\n"))  # quantize
    changed = load_pipeline(edited)
    new = _keys(changed, edited, data_key(changed.data, changed.seed))
    assert [k for k in keys if keys[k] == new[k]] == ["teacher", "distill"]


def test_cached_result_needs_matching_key_and_intact_files(tmp_path):
    import json

    stage = tmp_path / "export"
    stage.mkdir()
    model = stage / "m.onnx"
    model.write_bytes(b"abc")
    result = StageResult({"m": Artifact.of("m", model, "onnx")}, {"x": 1.0})
    (stage / "stage.json").write_text(json.dumps({"key": "k1", "result": result.as_dict()}))
    assert _cached(tmp_path, "export", "k1").metrics == {"x": 1.0}
    assert _cached(tmp_path, "export", "k2") is None
    model.write_bytes(b"abd")  # same size, other content
    assert _cached(tmp_path, "export", "k1") is None


def test_every_checkpoint_file_content_is_in_the_key(tmp_path):
    import torch

    from edgekd.models.builders import cnn

    for name in ("t.pt", "extra.pt"):
        torch.save(cnn(10, 1, width=4, depth=1).state_dict(), tmp_path / name)
    (tmp_path / "p.yaml").write_text(
        "name: k\nteacher: {arch: cnn, width: 4, depth: 1, checkpoint: t.pt}\n"
        "student: {arch: cnn, width: 2, depth: 1}\nstages:\n  - kind: distill\n"
        "    teachers: [{arch: cnn, width: 4, depth: 1, checkpoint: extra.pt}]\n")
    pipeline = load_pipeline(tmp_path / "p.yaml")
    before = _keys(pipeline, tmp_path / "p.yaml", "d")
    torch.save(cnn(10, 1, width=4, depth=1).state_dict(), tmp_path / "extra.pt")  # retrained
    after = _keys(pipeline, tmp_path / "p.yaml", "d")
    assert before["teacher"] == after["teacher"] and before["distill"] != after["distill"]


def test_weights_module_file_and_hf_folder_contents_are_in_the_key(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"1")
    (tmp_path / "mine.py").write_text("def build(): ...\n")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "p.yaml").write_text(
        "name: k\nteacher: {arch: 'hf:hf'}\n"
        "student: {module: 'mine.py:build'}\nstages:\n  - kind: distill\n"
        "    assistants: [{arch: cnn, weights: w.pt}]\n")
    pipeline = load_pipeline(tmp_path / "p.yaml")
    keys = [_keys(pipeline, tmp_path / "p.yaml", "d")]
    for path, text in (("hf/config.json", "{ }"), ("mine.py", "def build(): pass\n"),
                       ("w.pt", "2")):
        (tmp_path / path).write_text(text)
        keys.append(_keys(pipeline, tmp_path / "p.yaml", "d"))
    assert keys[0]["teacher"] != keys[1]["teacher"] == keys[2]["teacher"] == keys[3]["teacher"]
    assert len({k["distill"] for k in keys}) == 4


def test_a_moved_or_copied_run_directory_names_its_own_files(tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    model = run / "export" / "m.onnx"
    model.write_bytes(b"abc")
    result = StageResult({"m": Artifact.of("m", model, "onnx")}, {"x": 1.0})
    doc = {"key": "k1", "result": result.as_dict(run)}
    assert doc["result"]["artifacts"]["m"]["path"] == "export/m.onnx"
    (run / "export" / "stage.json").write_text(json.dumps(doc))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    model.write_bytes(b"changed")  # the original changes; the copy must not follow it
    cached = _cached(copy, "export", "k1")
    assert cached is not None and cached.artifacts["m"].path == copy / "export" / "m.onnx"


def test_a_damaged_or_hand_edited_stage_json_means_the_stage_runs_again(tmp_path):
    """A binary stage.json (UnicodeDecodeError) or one with fields of the wrong shape
    (AttributeError) failed the stage, exit 1, on every rerun."""
    stage = tmp_path / "export"
    stage.mkdir()
    for content in (b"\xff\xfe\x00binary", b'{"key": "k1", "result": {"artifacts": [1, 2]}}',
                    b'{"key": "k1", "result": {"artifacts": {"m": 3}, "metrics": {}}}', b"[]"):
        (stage / "stage.json").write_bytes(content)
        assert _cached(tmp_path, "export", "k1") is None, content


def test_a_teacher_with_other_weights_makes_its_students_stale(tmp_path):
    """The cache keyed stages on configs only: a teacher that came out of training with other
    weights (another machine, a GPU, a lost file retrained) left distill cached, and the report
    mixed two teachers. Each stage's key now holds the content of the files it consumes."""
    import json

    import torch

    from edgekd.models.builders import cnn
    from edgekd.pipeline import execute

    (tmp_path / "p.yaml").write_text(
        "name: k\ndata: {source: digits}\nteacher: {arch: cnn, width: 4, depth: 1, "
        "train: {epochs: 1}}\nstudent: {arch: cnn, width: 2, depth: 1}\ntarget: local\n"
        "stages:\n  - {kind: distill, epochs: 1}\n")
    out = tmp_path / "run"
    first = execute(tmp_path / "p.yaml", out, gate=False, log=lambda *_: None)
    assert [r.status for r in first.records] == ["done", "done"]
    again = execute(tmp_path / "p.yaml", out, gate=False, log=lambda *_: None)
    assert [r.status for r in again.records] == ["cached", "cached"]
    # The teacher's stage now holds other weights (recorded as its own, as a retraining
    # elsewhere would leave them).
    doc = json.loads((out / "teacher" / "stage.json").read_text())
    (name, artifact), = doc["result"]["artifacts"].items()
    torch.manual_seed(1)
    weights = out / artifact["path"]
    state = torch.load(weights, weights_only=True)
    state.update({k: torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in cnn(10, 1, width=4, depth=1).state_dict().items() if k in state})
    torch.save(state, weights)
    retrained = Artifact.of(name, weights, artifact["format"])
    doc["result"]["artifacts"][name] = retrained.as_dict(out)
    (out / "teacher" / "stage.json").write_text(json.dumps(doc))
    third = execute(tmp_path / "p.yaml", out, gate=False, log=lambda *_: None)
    assert [r.status for r in third.records] == ["cached", "done"]


def test_changing_ship_retrains_nothing_and_hands_on_the_other_student(tmp_path):
    """`ship:` only chooses between the two students distill trained: it is not part of the
    stage's key (changing it retrained both students), distill/student.pt becomes the chosen
    student's file, and the stage after distill (which consumes it) runs again."""
    from edgekd.files import sha256_file
    from edgekd.pipeline import execute

    def run(ship: str):
        (tmp_path / "p.yaml").write_text(
            "name: k\ndata: {source: digits}\nteacher: {arch: cnn, width: 4, depth: 1, "
            "train: {epochs: 1}}\nstudent: {arch: cnn, width: 2, depth: 1}\ntarget: local\n"
            f"stages:\n  - {{kind: distill, epochs: 1, ship: {ship}}}\n"
            "  - {kind: quantize, method: ptq, calibration: {samples: 32}}\n")
        done = execute(tmp_path / "p.yaml", tmp_path / "run", gate=False, log=lambda *_: None)
        distill = done.records[1].result
        return [r.status for r in done.records], distill

    statuses, kd = run("kd")
    assert statuses == ["done", "done", "done"]
    folder = tmp_path / "run" / "distill"
    assert sha256_file(folder / "student.pt") == sha256_file(folder / "kd_student.pt")
    assert kd.info["shipped_student"] == "kd" and kd.metrics["accuracy"] == kd.metrics[
        "kd_accuracy"]
    statuses, base = run("baseline")
    assert statuses == ["cached", "cached", "done"]
    assert sha256_file(folder / "student.pt") == sha256_file(folder / "baseline.pt")
    assert base.artifacts["student_fp32"].sha256 == base.artifacts["baseline_fp32"].sha256
    assert base.info["shipped_student"] == "baseline"
    assert base.metrics["accuracy"] == base.metrics["baseline_accuracy"]
    assert base.metrics["kd_accuracy"] == kd.metrics["kd_accuracy"]
    assert base.summary == {"KD student fp32 accuracy": kd.metrics["kd_accuracy"],
                            "hard-label baseline accuracy (shipped)":
                                base.metrics["baseline_accuracy"]}
