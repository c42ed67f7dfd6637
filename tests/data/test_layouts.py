"""Data layouts of issue 12: given train / val / test splits (folders, manifests, .npz), what
is held out when a split is not given, class names that must agree, and reads that touch only
the images asked for."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.config import ConfigError, DataConfig
from edgekd.data import from_arrays, load, save_npz
from edgekd.data.loading import channel_stats

SHADES = {"dark": 40, "bright": 210, "mid": 125, "owl": 90, "yak": 170}


def write_images(folder, counts, shades=SHADES, seed=0):
    """`counts[name]` grey 12x12 PNGs per class under folder/<name>/, each class its own
    shade (with noise), so a label can be read back from the pixels. The files, by class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = {}
    for name, n in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        files[name] = []
        for i in range(n):
            pixels = np.clip(shades[name] + rng.integers(-25, 26, (12, 12)), 0, 255)
            path = folder / name / f"{i}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            files[name].append(path)
    return files


def shade_labels(part, classes):
    """The class each image of a split looks like (nearest shade), by position."""
    means = part.inputs(np.arange(len(part))).mean(axis=(1, 2, 3)) * 255
    names = [min(classes, key=lambda c: abs(SHADES[c] - m)) for m in means]
    return np.array([classes.index(n) for n in names])


def folder_cfg(**paths):
    return DataConfig(source="folder", image_size=(8, 8), channels=1, **paths)


# --- given splits -----------------------------------------------------------------------------


def test_given_folders_hold_nothing_out(tmp_path):
    train = write_images(tmp_path / "train", {"dark": 9, "bright": 7})
    write_images(tmp_path / "val", {"dark": 3, "bright": 2}, seed=1)
    write_images(tmp_path / "test", {"dark": 4, "bright": 1}, seed=2)
    splits = load(folder_cfg(train=tmp_path / "train", val=tmp_path / "val",
                             test=tmp_path / "test"), seed=0)
    assert splits.classes == ["bright", "dark"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 5, 5)
    every_train_file = sorted(f for files in train.values() for f in files)
    assert sorted(splits.train.store.files[r] for r in splits.train.rows) == every_train_file
    assert splits.test_origin == f"given: {tmp_path / 'test'}"
    for part in (splits.train, splits.val, splits.test):
        assert np.array_equal(shade_labels(part, splits.classes), part.y), part.name
    assert np.bincount(splits.test.y).tolist() == [1, 4]  # bright, dark as the folder has them


@pytest.mark.parametrize("given", [("val",), ("test",), ()])
def test_a_split_not_given_is_held_out_of_train_stratified(tmp_path, given):
    write_images(tmp_path / "train", {"dark": 20, "bright": 20})
    for name in given:
        write_images(tmp_path / name, {"dark": 3, "bright": 3}, seed=1)
    cfg = folder_cfg(train=tmp_path / "train", **{n: tmp_path / n for n in given})
    splits = load(cfg, seed=3)
    held = {"val": 0.15, "test": 0.25}
    used = np.concatenate([p.rows for p in (splits.train, splits.val, splits.test)
                           if p.store is splits.train.store])
    assert len(np.unique(used)) == len(used) == 40  # disjoint, and all of train is used
    for name in ("val", "test"):
        part = getattr(splits, name)
        if name in given:
            assert len(part) == 6 and part.store is not splits.train.store
        else:
            assert part.store is splits.train.store
            assert np.bincount(part.y, minlength=2).tolist() == [round(20 * held[name])] * 2
    if "test" in given:
        assert splits.test_origin == f"given: {tmp_path / 'test'}"
    else:
        assert splits.test_origin == (f"held out by edgekd: 25% of {tmp_path / 'train'} "
                                      "(stratified, seed 3)")


def test_separate_splits_go_with_train_not_path(tmp_path):
    with pytest.raises(ValueError, match="val: separate splits go with train:"):
        folder_cfg(path=tmp_path, val=tmp_path)
    with pytest.raises(ValueError, match="give either path .* or train"):
        folder_cfg(path=tmp_path, train=tmp_path)


PIPELINE = """\
name: given
seed: 0
device: cpu
data: {source: folder, train: train, val: val, test: test, image_size: [8, 8], channels: 1,
       num_workers: 0}
teacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 2, lr: 0.05, batch_size: 8}}
student: {arch: cnn, width: 4, depth: 1}
stages:
  - kind: distill
    epochs: 2
    lr: 0.05
    batch_size: 8
    baseline: false
"""


def test_pipeline_on_given_folders_measures_on_the_test_folder(tmp_path):
    """The test folder's shades are swapped (its `dark` images are bright): models that learnt
    train and val perfectly score ~0 on it, which they could not on a split of train."""
    from edgekd.kd.train import predict
    from edgekd.metrics import accuracy
    from edgekd.models import load_model
    from edgekd.pipeline import load as load_pipeline

    write_images(tmp_path / "train", {"dark": 16, "bright": 16})
    write_images(tmp_path / "val", {"dark": 5, "bright": 5}, seed=1)
    swapped = {"dark": SHADES["bright"], "bright": SHADES["dark"]}
    write_images(tmp_path / "test", {"dark": 4, "bright": 3}, shades=swapped, seed=2)
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stages = {s["kind"]: s for s in report["stages"]}
    for kind in ("teacher", "distill"):
        info = stages[kind]["info"]
        assert info["test_split"] == f"given: {tmp_path / 'test'}", kind
        assert (info["device"], info["precision"]) == ("cpu", "fp32")
        (kept,) = [h for h in next(iter(stages[kind]["history"].values())) if h["kept"]]
        assert kept["val_accuracy"] >= 0.9, kind  # learnt what train and val show
    assert stages["teacher"]["metrics"]["accuracy"] <= 1 / 7
    assert stages["distill"]["metrics"]["accuracy"] <= 1 / 7
    # ... and the figure is the saved teacher's accuracy on exactly the 7 test-folder images
    pipeline = load_pipeline(path)
    splits = load(pipeline.data, pipeline.seed)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (32, 10, 7)
    teacher = load_model(tmp_path / "run" / "teacher" / "teacher.pt")
    measured = accuracy(predict(teacher, splits.test), splits.y_test)
    assert measured == stages["teacher"]["metrics"]["accuracy"]


# --- manifests --------------------------------------------------------------------------------


def manifest_rows(folder, counts, seed=0):
    """Images under folder/img/ (flat, names not saying the class) and (path, label) rows
    relative to `folder`."""
    files = write_images(folder / "img", counts, seed=seed)
    return [(f.relative_to(folder).as_posix(), label) for label, fs in files.items()
            for f in fs]


def write_manifest(path, rows):
    if path.suffix == ".csv":
        path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    else:
        path.write_text("".join(json.dumps({"path": p, "label": label}) + "\n"
                                for p, label in rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_labels_and_classes(tmp_path, suffix, monkeypatch):
    lists = tmp_path / "lists"
    rows = manifest_rows(lists, {"dark": 8, "bright": 8, "mid": 8})
    order = np.random.default_rng(0).permutation(len(rows))  # classes interleaved
    manifest = write_manifest(lists / f"all{suffix}", [rows[i] for i in order])
    monkeypatch.chdir(tmp_path)  # image paths are relative to the manifest, not the cwd
    splits = load(DataConfig(source="manifest", path=manifest, image_size=(8, 8),
                             channels=1), seed=0)
    assert splits.classes == ["bright", "dark", "mid"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 24
    for part in (splits.train, splits.val, splits.test):
        assert np.array_equal(shade_labels(part, splits.classes), part.y), part.name


def test_manifest_splits_mix_csv_and_jsonl_and_integer_labels_sort_as_numbers(tmp_path):
    shades = {"2": SHADES["dark"], "10": SHADES["bright"]}

    def rows(name, n, seed):
        files = write_images(tmp_path / name, {"2": n, "10": n}, shades=shades, seed=seed)
        return [(f.relative_to(tmp_path).as_posix(), label) for label, fs in files.items()
                for f in fs]

    cfg = DataConfig(source="manifest", image_size=(8, 8), channels=1,
                     train=write_manifest(tmp_path / "train.csv", rows("a", 6, 0)),
                     val=write_manifest(tmp_path / "val.jsonl", rows("b", 2, 1)),
                     test=write_manifest(tmp_path / "test.jsonl", rows("c", 3, 2)))
    splits = load(cfg, seed=0)
    assert splits.classes == ["2", "10"]  # numerically, not as text ("10" < "2")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 6)
    for part in (splits.train, splits.val, splits.test):
        dark = part.inputs(np.arange(len(part))).mean(axis=(1, 2, 3)) < 0.5
        assert np.array_equal(part.y, np.where(dark, 0, 1)), part.name


@pytest.mark.parametrize("text, expected", [
    ("path,name\nimg/dark/0.png,dark\n", "the CSV header lacks column(s) label (has path, name)"),
    ("label\ndark\n", "the CSV header lacks column(s) path (has label)"),
])
def test_manifest_missing_a_column_names_the_file(tmp_path, text, expected):
    manifest_rows(tmp_path, {"dark": 1})
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert info.value.lines == [f"{path}: {expected}"]


def test_jsonl_line_without_label_names_the_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.png", "label": "x"}\n{"path": "b.png"}\n')
    with pytest.raises(ConfigError) as info:
        load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    (line,) = info.value.lines
    assert line.startswith(f"{path}:2: expected an object with path and label")


def test_manifest_listing_a_missing_image_names_manifest_and_image(tmp_path):
    rows = manifest_rows(tmp_path, {"dark": 3, "bright": 3})
    path = write_manifest(tmp_path / "m.csv", rows + [("img/dark/gone.png", "dark")])
    with pytest.raises(ConfigError) as info:
        load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert info.value.lines == [f"{path}: 1 listed image(s) not found, e.g. "
                                f"{tmp_path / 'img' / 'dark' / 'gone.png'}"]


def test_csv_manifest_with_byte_order_mark(tmp_path):
    rows = manifest_rows(tmp_path, {"dark": 4, "bright": 4})
    path = tmp_path / "m.csv"
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows),
                    encoding="utf-8-sig")
    splits = load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert splits.classes == ["bright", "dark"]


# --- class names across splits ----------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_class_mismatch_names_missing_and_extra_classes(tmp_path, split):
    write_images(tmp_path / "train", {"dark": 4, "bright": 4, "owl": 4})
    write_images(tmp_path / split, {"dark": 2, "bright": 2, "yak": 2, "mid": 2})
    with pytest.raises(ConfigError) as info:
        load(folder_cfg(train=tmp_path / "train", **{split: tmp_path / split}), seed=0)
    assert info.value.lines == [f"data.{split}: {tmp_path / split}: its classes differ from "
                                "the train split's: missing owl; extra mid, yak"]


def test_class_mismatch_through_the_cli_is_exit_2_with_one_line(tmp_path):
    write_images(tmp_path / "train", {"dark": 4, "bright": 4})
    write_images(tmp_path / "val", {"dark": 2, "bright": 2})
    write_images(tmp_path / "test", {"dark": 2, "mid": 2})
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    problems = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert problems == [f"{path}: data.test: {tmp_path / 'test'}: its classes differ from the "
                        "train split's: missing bright; extra mid"]
    assert not (tmp_path / "run" / "teacher" / "teacher.pt").exists()  # nothing trained


# --- .npz -------------------------------------------------------------------------------------


def test_uncompressed_npz_is_memory_mapped_compressed_is_read(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 1, 5, 4), dtype=np.float32)
    y = np.arange(30) % 3
    for save, mapped in ((np.savez, True), (np.savez_compressed, False)):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, x=x, y=y, classes=np.array(["cat", "dog", "eel"]))
        splits = load(DataConfig(source="npz", path=path), seed=0)
        assert isinstance(splits.train.store.x, np.memmap) == mapped, save.__name__
        assert splits.classes == ["cat", "dog", "eel"]
        for part in (splits.train, splits.val, splits.test):
            got = part.read(np.arange(len(part)))
            assert got.dtype == np.float32 and np.array_equal(got, x[part.rows])
            assert np.array_equal(part.y, y[part.rows])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_nhwc_uint8_npz_is_served_nchw(tmp_path, save):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 5, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    path = tmp_path / "d.npz"
    save(path, x=x, y=y)
    splits = load(DataConfig(source="npz", path=path), seed=0)
    assert splits.input_shape == (3, 6, 5)
    part = splits.train
    got = part.read(np.arange(len(part)))
    assert got.dtype == np.uint8
    assert np.array_equal(got, x[part.rows].transpose(0, 3, 1, 2))
    assert np.allclose(part.inputs([0]), x[part.rows[:1]].transpose(0, 3, 1, 2) / 255.0)


def test_given_npz_splits_keep_their_own_samples(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {n: (rng.integers(0, 256, (k, 1, 4, 4), dtype=np.uint8), np.arange(k) % 2)
              for n, k in (("train", 20), ("val", 6), ("test", 9))}
    for name, (x, y) in arrays.items():
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    splits = load(DataConfig(source="npz", **{n: tmp_path / f"{n}.npz" for n in arrays}),
                  seed=0)
    for name, (x, y) in arrays.items():
        part = getattr(splits, name)
        assert np.array_equal(part.read(np.arange(len(part))), x) and np.array_equal(part.y, y)


# --- reads touch only what is asked for (memory bounded by the batch, not the data) -----------


@pytest.fixture
def opened(monkeypatch):
    """Every image file PIL opens, in order."""
    from PIL import Image

    seen, real_open = [], Image.open

    def counting_open(file, *args, **kwargs):
        seen.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return seen


def test_file_store_decodes_only_the_rows_asked_for(tmp_path, opened, monkeypatch):
    from PIL import ImageFile

    decoded, real_load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda img: decoded.append(img) or real_load(img))
    write_images(tmp_path / "all", {"dark": 10, "bright": 10})
    cfg = DataConfig(source="folder", path=tmp_path / "all", image_size=(8, 8), channels=1,
                     stats_samples=5)
    splits = load(cfg, seed=0)
    # loading checks every file's header and structure once, and decodes none
    assert sorted(opened) == sorted(splits.train.store.files) and decoded == []
    opened.clear()
    part = splits.train
    part.read(np.array([3, 1]))
    assert opened == [part.store.files[part.rows[3]], part.store.files[part.rows[1]]]
    opened.clear()
    splits.meta()  # mean and std from a sample of stats_samples images, not the split
    assert len(opened) == 5 and len(set(opened)) == 5


def test_channel_stats_reads_a_sample_in_chunks(monkeypatch):
    x = np.random.default_rng(0).random((1000, 2, 3, 3), dtype=np.float32)
    y = np.zeros(1000, np.int64)
    splits = from_arrays(x, y, x[:4], y[:4], x[:4], y[:4])
    reads = []
    real_read = splits.train.store.read
    monkeypatch.setattr(splits.train.store, "read",
                        lambda rows: reads.append(np.array(rows)) or real_read(rows))
    mean, std = channel_stats(splits.train, 300, seed=0)
    rows = np.concatenate(reads)
    assert len(rows) == 300 == len(np.unique(rows)) and max(len(r) for r in reads) <= 256
    sample = x[rows]
    assert mean == pytest.approx(sample.mean(axis=(0, 2, 3)).tolist(), abs=1e-5)
    assert std == pytest.approx(sample.std(axis=(0, 2, 3)).tolist(), abs=1e-4)


def test_save_npz_writes_a_split_chunk_by_chunk(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (23, 1, 3, 3), dtype=np.uint8)
    y = np.arange(23) % 2
    splits = from_arrays(x, y, x[:2], y[:2], x[:2], y[:2])
    reads = []
    real_read = splits.train.store.read
    monkeypatch.setattr(splits.train.store, "read",
                        lambda rows: reads.append(len(rows)) or real_read(rows))
    path = save_npz(tmp_path / "t.npz", splits.train, chunk=4)
    assert max(reads) <= 4 and sum(reads) == 23
    with np.load(path) as saved:
        assert np.array_equal(saved["x"], x / np.float32(255)) and np.array_equal(saved["y"], y)


# --- folders a user's tools leave behind --------------------------------------------------------


def test_hidden_folders_are_not_classes(tmp_path):
    write_images(tmp_path / "train", {"dark": 4, "bright": 4})
    write_images(tmp_path / "test", {"dark": 2, "bright": 2})
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    splits = load(folder_cfg(train=tmp_path / "train", test=tmp_path / "test"), seed=0)
    assert splits.classes == ["bright", "dark"]


def test_empty_class_folder_in_train_is_an_error(tmp_path):
    write_images(tmp_path / "train", {"dark": 4, "bright": 4})
    (tmp_path / "train" / "owl").mkdir()
    with pytest.raises(ConfigError) as info:
        load(folder_cfg(train=tmp_path / "train"), seed=0)
    assert info.value.lines == [f"{tmp_path / 'train'}: class folder(s) owl hold no images "
                                "(.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"]


def test_empty_class_folder_in_test_is_a_class_without_samples(tmp_path):
    write_images(tmp_path / "train", {"dark": 4, "bright": 4})
    write_images(tmp_path / "test", {"dark": 2})
    (tmp_path / "test" / "bright").mkdir()
    splits = load(folder_cfg(train=tmp_path / "train", test=tmp_path / "test"), seed=0)
    assert splits.test.y.tolist() == [1, 1]


def test_split_fractions_with_both_splits_given_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="split: val and test are both given"):
        DataConfig(source="folder", image_size=(8, 8), train=tmp_path, val=tmp_path,
                   test=tmp_path, split={"val": 0.1, "test": 0.2})
