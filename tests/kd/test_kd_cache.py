"""The teacher-output cache: computed once, memory-mapped, keyed by teacher and data, and
identical to running the teacher online."""

import numpy as np
import torch

from edgekd.kd import cache
from edgekd.kd.cache import LOGITS, TeacherOutputs, View

VIEWS = [LOGITS, View("feature", "net.0.5"), View("attention", "net.0.2")]


def test_cached_views_equal_online_and_are_memory_mapped(splits, teacher, tmp_path):
    x = splits.x_train[:300]
    cached = TeacherOutputs(teacher, VIEWS, x, tmp_path)
    online = TeacherOutputs(teacher, VIEWS, x, None)
    idx = torch.tensor([5, 17, 299, 0])
    a, b = cached(torch.from_numpy(x[idx.numpy()]), idx), online(torch.from_numpy(x[idx]), idx)
    assert set(a) == set(b) == {v.name for v in VIEWS}
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert all(isinstance(t, np.memmap) for t in cached.tables.values())
    assert not cached.online


def test_cache_is_reused_and_keyed_by_teacher_and_data(splits, teacher, tmp_path, monkeypatch):
    x = splits.x_train[:200]
    TeacherOutputs(teacher, [LOGITS], x, tmp_path)
    calls = []
    real = cache.compute
    monkeypatch.setattr(cache, "compute", lambda *a: calls.append(1) or real(*a))
    TeacherOutputs(teacher, [LOGITS], x, tmp_path)
    assert len(calls) == 1  # the shape probe only: nothing recomputed
    TeacherOutputs(teacher, [LOGITS], x[:100], tmp_path)  # other data: a new entry
    changed = type(teacher)(teacher.net, [0.0], [1.0])
    TeacherOutputs(changed, [LOGITS], x, tmp_path)  # other teacher: a new entry
    assert len(list(tmp_path.glob("teacher-*"))) == 3


def test_views_too_large_run_online(splits, teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "FEATURE_CACHE_BYTES", 200 * 10 * 4)
    outputs = TeacherOutputs(teacher, VIEWS, splits.x_train[:200], tmp_path)
    assert set(outputs.tables) == {"logits"}
    assert {v.name for v in outputs.online} == {"feature:net.0.5", "attention:net.0.2:p2"}
