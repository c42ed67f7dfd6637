"""The teacher-output cache: computed once, memory-mapped, keyed by teacher and data, and
identical to running the teacher online."""

import numpy as np
import torch

from edgekd.data import from_arrays
from edgekd.kd import cache
from edgekd.kd.cache import LOGITS, TeacherOutputs, View

VIEWS = [LOGITS, View("feature", "net.0.5"), View("attention", "net.0.2")]


def train_part(splits, n: int):
    """A train split of the first `n` training samples (its key names its content)."""
    x, y = splits.train.inputs(np.arange(n)), splits.train.y[:n]
    return from_arrays(x, y, x, y, x, y, splits.classes).train


def test_cached_views_equal_online_and_are_memory_mapped(splits, teacher, tmp_path):
    part = train_part(splits, 300)
    cached = TeacherOutputs(teacher, VIEWS, part, tmp_path)
    online = TeacherOutputs(teacher, VIEWS, part, None)
    idx = torch.tensor([5, 17, 299, 0])
    x = torch.from_numpy(part.inputs(idx.numpy()))
    a, b = cached(x, idx), online(x, idx)
    assert set(a) == set(b) == {v.name for v in VIEWS}
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert all(isinstance(t, np.memmap) for t in cached.tables.values())
    assert not cached.online


def test_cache_is_reused_and_keyed_by_teacher_and_data(splits, teacher, tmp_path, monkeypatch):
    part = train_part(splits, 200)
    TeacherOutputs(teacher, [LOGITS], part, tmp_path)
    calls = []
    real = cache.compute
    monkeypatch.setattr(cache, "compute", lambda *a: calls.append(1) or real(*a))
    TeacherOutputs(teacher, [LOGITS], part, tmp_path)
    assert len(calls) == 1  # the shape probe only: nothing recomputed
    TeacherOutputs(teacher, [LOGITS], train_part(splits, 100), tmp_path)  # other data: new entry
    changed = type(teacher)(teacher.net, {"mean": [0.0], "std": [1.0]})
    TeacherOutputs(changed, [LOGITS], part, tmp_path)  # other teacher: a new entry
    assert len(list(tmp_path.glob("teacher-*"))) == 3


def test_views_too_large_run_online(splits, teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "FEATURE_CACHE_BYTES", 200 * 10 * 4)
    outputs = TeacherOutputs(teacher, VIEWS, train_part(splits, 200), tmp_path)
    assert set(outputs.tables) == {"logits"}
    assert {v.name for v in outputs.online} == {"feature:net.0.5", "attention:net.0.2:p2"}


def test_a_damaged_table_is_computed_again(splits, teacher, tmp_path, capsys):
    """A truncated table (a copy cut short, a full disk) broke every rerun with "mmap length
    is greater than file size", --force included; it is noticed and computed again."""
    part = train_part(splits, 200)
    first = TeacherOutputs(teacher, VIEWS, part, tmp_path)
    expected = {name: np.array(table) for name, table in first.tables.items()}
    del first
    files = sorted(tmp_path.glob("teacher-*/*.npy"))
    assert len(files) == len(VIEWS)
    files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated
    files[1].write_bytes(b"not a table at all")  # header gone
    again = TeacherOutputs(teacher, VIEWS, part, tmp_path)
    for name, table in again.tables.items():
        assert np.array_equal(np.asarray(table), expected[name]), name
    said = capsys.readouterr().err
    assert said.count("is damaged; computing it again") == 2 and files[0].name in said
