"""The hostile-input corpus: what a careless or malicious user can hand edgekd, end to end.

Each row of CASES is one thing a user does: it writes its files into the test's folder and
returns the `edgekd` command line (run as a real subprocess, `python -m edgekd ...`). The one
harness test below holds every row to the same promise:

- the documented exit code (2: the user's input; 1: internal error, with error.log);
- exactly one line of output (blank lines aside, the "details: <log>" line of an exit 1, and
  the progress lines of stages that finished before the refused one),
  naming the file, and the field or figure when there is one (`names`);
- no traceback;
- nothing lost: every file that existed before (the case's own inputs, and a finished run
  directory each case gets a fresh copy of at `run/`) is byte-identical afterwards, and no
  code from the user's files ran (no `pwned` file appears).

Adding a case, for every bug found from the outside: write a function `(tmp) -> argv` that
writes what the user would have (a pipeline via `_pipeline`, an .npz, images, a device file)
and returns the command, and add a `Case` row to CASES naming the exit code and what the line
must name. When a bug not yet fixed breaks the case, give the row `known=` (the PROMISES it
breaks) and `bug=` (what and where): the case is then xfail(strict=True), but only while
exactly those promises fail; any other failure is still red, and once the bug is fixed the
unexpected pass is red too, until `known` and `bug` are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

TEACHER = "{arch: cnn, width: 4, depth: 1, train: {epochs: 1}}"
FIELDS = {"name": "p", "data": "{source: digits}", "teacher": TEACHER,
          "student": "{arch: cnn, width: 2, depth: 1}", "target": "local",
          "stages": "\n  - {kind: distill, epochs: 1}"}
"""The tiny pipeline (digits, 1 epoch each) every `run` case starts from and changes."""


def _pipeline(tmp: Path, out: bool = True, **changes: str) -> list[str]:
    """`edgekd run p.yaml --out run` for the tiny pipeline with `changes` to its top-level
    fields; without `out`, the pipeline's own default run directory."""
    text = "".join(f"{k}: {v}\n" for k, v in {**FIELDS, **changes}.items())
    (tmp / "p.yaml").write_text(text)
    return ["run", "p.yaml", *(["--out", "run"] if out else [])]


def _npz_pipeline(tmp: Path, x: np.ndarray, y: np.ndarray, **arrays) -> list[str]:
    np.savez(tmp / "d.npz", x=x, y=y, **arrays)
    return _pipeline(tmp, data="{source: npz, path: d.npz}")


def _digits(n: int = 60, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n random 8x8 grey images in [0, 1] with labels 0..classes-1, each class present."""
    x = np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)
    return x, np.arange(n) % classes


def _images(root: Path, classes=("a", "b"), per_class: int = 6) -> None:
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=i * 30).save(root / c / f"{i}.png")


def _folder_pipeline(tmp: Path) -> list[str]:
    return _pipeline(tmp, data="{source: folder, path: imgs, image_size: [8, 8], channels: 1}")


# ---- data ------------------------------------------------------------------------------------

def nan_pixels(tmp):
    x, y = _digits()
    x[[0, 7, 9], 0, 2, 2] = np.nan
    return _npz_pipeline(tmp, x, y)


def label_beyond_classes(tmp):
    x, y = _digits()
    y[5] = 5000  # would build a 5001-way output
    return _npz_pipeline(tmp, x, y)


def label_beyond_named_classes(tmp):
    x, y = _digits()
    y[5] = 3
    return _npz_pipeline(tmp, x, y, classes=np.array(["a", "b", "c"]))


def negative_labels(tmp):
    x, y = _digits()
    y[[1, 2]] = -1
    return _npz_pipeline(tmp, x, y)


def fractional_labels(tmp):
    x, y = _digits()
    return _npz_pipeline(tmp, x, y.astype(np.float32) + np.where(np.arange(len(y)) < 4, 0.5, 0))


def single_class(tmp):
    x, _y = _digits()
    return _npz_pipeline(tmp, x, np.zeros(len(x), np.int64))


def zero_samples(tmp):
    return _npz_pipeline(tmp, np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64))


def object_arrays(tmp):
    x, y = _digits()
    return _npz_pipeline(tmp, x, np.array([str(v) for v in y], dtype=object))


def empty_class_folder(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "c").mkdir()
    return _folder_pipeline(tmp)


def class_symlink_to_root(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "c").symlink_to(tmp / "imgs", target_is_directory=True)
    return _folder_pipeline(tmp)


def class_symlink_to_sibling(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "c").symlink_to("a", target_is_directory=True)  # a's images twice
    return _folder_pipeline(tmp)


def text_as_png(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "b" / "notes.png").write_text("not an image\n")
    return _folder_pipeline(tmp)


def decompression_bomb(tmp):
    _images(tmp / "imgs")
    _bomb(tmp / "imgs" / "a" / "big.png", 20_000)  # 400 M pixels: over twice PIL's limit
    return _folder_pipeline(tmp)


def _bomb(path: Path, side: int) -> None:
    """A valid 1-bit black PNG of side x side pixels, a few tens of kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (side + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                                                                        1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _manifest(tmp: Path, name: str, rows: list[str], **data: str) -> list[str]:
    """images in tmp/imgs (classes a, b), a manifest tmp/<name> of `rows` (lines after a
    header for .csv), and its pipeline reading one image for the statistics (`stats_samples:
    1`: the others are read only when a stage does, unless edgekd checks them at load)."""
    _images(tmp / "imgs")
    body = "\n".join((["path,label"] if name.endswith(".csv") else []) + rows) + "\n"
    (tmp / name).write_bytes(body.encode(data.pop("encoding", "utf-8")))
    return _pipeline(tmp, data=f"{{source: manifest, path: {name}, image_size: [8, 8], "
                               "channels: 1, stats_samples: 1}")


def _rows() -> list[str]:
    return [f"imgs/{c}/{i}.png,{c}" for c in "ab" for i in range(6)]


def manifest_label_nul(tmp):
    rows = [row + "\0" if row.endswith(",b") else row for row in _rows()]  # shows as b
    return _manifest(tmp, "m.csv", rows)


def manifest_label_escape(tmp):
    rows = [f'{{"path": "imgs/{c}/{i}.png", "label": "{c}"}}' for c in "ab" for i in range(6)]
    rows[4] = '{"path": "imgs/a/4.png", "label": "a\\u001b[2J"}'  # clears a terminal
    return _manifest(tmp, "m.jsonl", rows)


def manifest_latin1(tmp):
    rows = _rows()
    rows[7] = "imgs/b/1.png,b\xe9"
    return _manifest(tmp, "m.csv", rows, encoding="latin-1")


def manifest_row_outside(tmp):
    """A row leading out of the manifest's folder (allowed) to a damaged image: refused when
    the data loads, before the teacher trains (it was found only when first decoded)."""
    from PIL import Image

    (tmp / "data").mkdir()
    argv = _manifest(tmp / "data", "m.csv", _rows() + ["../elsewhere.png,a"])
    Image.new("L", (8, 8)).save(tmp / "elsewhere.png")  # outside data/: fine, but damaged
    (tmp / "elsewhere.png").write_bytes((tmp / "elsewhere.png").read_bytes()[:30])
    text = (tmp / "data" / "p.yaml").read_text()
    (tmp / "data" / "p.yaml").unlink()
    (tmp / "p.yaml").write_text(text.replace("path: m.csv", "path: data/m.csv"))
    return argv


def folder_truncated_png(tmp):
    """A damaged image in the held-out test split (b/4.png at seed 0), which the statistics
    sample (1 image) does not read: read lazily, only the evaluation after training sees it."""
    from PIL import Image

    _images(tmp / "imgs")
    damaged = tmp / "imgs" / "b" / "4.png"
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(damaged)  # opens, fails to decode: its pixel data is cut short
    damaged.write_bytes(damaged.read_bytes()[:damaged.stat().st_size * 2 // 3])
    return _pipeline(tmp, data="{source: folder, path: imgs, image_size: [8, 8], channels: 1, "
                               "stats_samples: 1}")


def folder_dangling_link(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "a" / "7.png").symlink_to(tmp / "gone.png")
    return _pipeline(tmp, data="{source: folder, path: imgs, image_size: [8, 8], channels: 1, "
                               "stats_samples: 1}")


def folder_fifo_image(tmp):
    _images(tmp / "imgs")
    os.mkfifo(tmp / "imgs" / "a" / "9.png")  # open() would wait for a writer, forever
    return _folder_pipeline(tmp)


def npz_fifo(tmp):
    os.mkfifo(tmp / "d.npz")
    return _pipeline(tmp, data="{source: npz, path: d.npz}")


def class_folder_not_utf8(tmp):
    _images(tmp / "imgs")
    os.rename(tmp / "imgs" / "b", os.path.join(os.fsencode(tmp / "imgs"), b"b\xff"))
    return _folder_pipeline(tmp)


def npz_is_npy(tmp):
    x, _y = _digits()
    with open(tmp / "d.npz", "wb") as f:
        np.save(f, x)
    return _pipeline(tmp, data="{source: npz, path: d.npz}")


def npz_channels_last_5(tmp):
    x, y = _digits()
    return _npz_pipeline(tmp, np.repeat(x.transpose(0, 2, 3, 1), 5, axis=3), y)


def npz_int64_beyond_255(tmp):
    x, y = _digits()
    return _npz_pipeline(tmp, (x * 4095).astype(np.int64), y)  # 12-bit sensor values


def npz_uint16_8bit(tmp):
    x, y = _digits()
    return _npz_pipeline(tmp, (x * 255).astype(np.uint16), y)  # 8-bit values, wide type


def profile_data_npy(tmp):
    argv = _profile_data(tmp, np.arange(12) % 4)  # (section "profile" below)
    with open(tmp / "test.npz", "wb") as f:
        np.save(f, np.zeros((12, 1, 8, 8), np.float32))
    return argv


def profile_data_uint8(tmp):
    argv = _profile_data(tmp, np.arange(12) % 4)
    with np.load(tmp / "test.npz") as arrays:  # the model takes [0, 1], not 0-255
        np.savez(tmp / "test.npz", x=(arrays["x"] * 255).astype(np.uint8), y=arrays["y"])
    return argv


def npz_label_10_to_the_12(tmp):
    x, _y = _digits(40)
    return _npz_pipeline(tmp, x, np.array([0, 10**12] * 20))  # a 10^12-name list: OOM-killed


def npz_duplicate_class_names(tmp):
    x, y = _digits(classes=2)
    return _npz_pipeline(tmp, x, y, classes=np.array(["a", "a"]))


def npz_label_beyond_one_class(tmp):
    x, y = _digits(classes=2)
    return _npz_pipeline(tmp, x, y, classes=np.array(["a"]))


def npz_is_proc_environ(tmp):
    return _pipeline(tmp, data="{source: npz, path: /proc/self/environ}")  # np.load: "pickle"


def folder_classes_nfc_nfd(tmp):
    _images(tmp / "imgs", classes=("c\u00e1t", "ca\u0301t"))  # the same name to a reader
    return _folder_pipeline(tmp)


def folder_float_image_beyond_255(tmp):
    from PIL import Image

    _images(tmp / "imgs")
    Image.fromarray(np.full((8, 8), 4095.0, np.float32)).save(tmp / "imgs" / "a" / "f.tif")
    return _folder_pipeline(tmp)


def manifest_same_image_twice(tmp):
    return _manifest(tmp, "m.csv", _rows() + ["./imgs/a/2.png,a"])  # in train and test: leak


def manifest_same_image_two_labels(tmp):
    return _manifest(tmp, "m.csv", _rows() + ["imgs/a/2.png,b"])


def manifest_csv_extra_fields(tmp):
    rows = _rows()
    rows[3] = "imgs/a/3.png,a,b"  # an unquoted comma: which is the label?
    return _manifest(tmp, "m.csv", rows)


def manifest_jsonl_label_list(tmp):
    rows = [f'{{"path": "imgs/{c}/{i}.png", "label": "{c}"}}' for c in "ab" for i in range(6)]
    rows[2] = '{"path": "imgs/a/2.png", "label": [2]}'  # str() made a class "[2]"
    return _manifest(tmp, "m.jsonl", rows)


def manifest_row_is_a_folder(tmp):
    return _manifest(tmp, "m.csv", _rows() + ["imgs/a,a"])


def profile_data_is_onnx(tmp):
    argv = _profile_data(tmp, np.arange(12) % 4)
    return [*argv[:-1], "model.onnx"]  # np.load: "This file contains pickled (object) data"


def split_test_is_train_folder(tmp):
    _images(tmp / "d" / "good")  # test accuracy would measure the training data
    return _pipeline(tmp, data="{source: folder, train: d/good, test: d/good, "
                               "image_size: [8, 8], channels: 1}")


def split_test_is_train_manifest(tmp):
    _manifest(tmp, "m.csv", _rows())
    return _pipeline(tmp, data="{source: manifest, train: m.csv, test: ./m.csv, "
                               "image_size: [8, 8], channels: 1}")


def split_test_is_train_npz(tmp):
    np.savez(tmp / "d.npz", x=_digits()[0], y=_digits()[1])
    return _pipeline(tmp, data="{source: npz, train: d.npz, test: d.npz}")


def split_test_shares_images(tmp):
    _manifest(tmp, "m.csv", _rows())
    (tmp / "t.csv").write_text("path,label\n" + "\n".join(_rows()[4:8]) + "\n")
    return _pipeline(tmp, data="{source: manifest, train: m.csv, test: t.csv, "
                               "image_size: [8, 8], channels: 1}")


def npz_y_not_npy(tmp):
    import zipfile

    np.savez(tmp / "x.npz", x=_digits()[0])
    with zipfile.ZipFile(tmp / "x.npz") as src, zipfile.ZipFile(tmp / "d.npz", "w") as dst:
        dst.writestr("x.npy", src.read("x.npy"))
        dst.writestr("y.npy", b"")  # np.load hands it over as bytes
    return _pipeline(tmp, data="{source: npz, path: d.npz}")


def npz_zero_sized_dimension(tmp):
    return _npz_pipeline(tmp, np.zeros((20, 0, 8), np.uint8), np.arange(20) % 2)


def manifest_csv_repeated_column(tmp):
    argv = _manifest(tmp, "m.csv", [row + ",b" for row in _rows()])
    text = (tmp / "m.csv").read_text()
    (tmp / "m.csv").write_text(text.replace("path,label", "path,label,label", 1))
    return argv


def manifest_jsonl_duplicate_key(tmp):
    rows = [f'{{"path": "imgs/{c}/{i}.png", "label": "{c}"}}' for c in "ab" for i in range(6)]
    rows[2] = '{"path": "imgs/a/2.png", "label": "a", "label": "b"}'
    return _manifest(tmp, "m.jsonl", rows)


def folder_file_symlink_other_class(tmp):
    _images(tmp / "imgs")
    (tmp / "imgs" / "a" / "dup.png").symlink_to("../b/0.png")  # one image, two labels
    return _folder_pipeline(tmp)


def split_test_copies_train_npz(tmp):
    x, y = _digits()
    np.savez(tmp / "d.npz", x=x, y=y)
    np.savez(tmp / "t.npz", x=x[10:30], y=y[10:30])  # another file, the training samples
    return _pipeline(tmp, data="{source: npz, train: d.npz, test: t.npz}")


def folder_int_image_beyond_65535(tmp):
    from PIL import Image

    _images(tmp / "imgs")  # 32-bit integers (mode I): 70000 was clipped to white
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp / "imgs" / "a" / "i.tif")
    return _folder_pipeline(tmp)


def manifest_csv_missing_fields(tmp):
    rows = [row + ",n" for row in _rows()]
    rows[3] = _rows()[3]  # the note column's cell missing: what else shifted?
    argv = _manifest(tmp, "m.csv", rows)
    text = (tmp / "m.csv").read_text()
    (tmp / "m.csv").write_text(text.replace("path,label", "path,label,note", 1))
    return argv


def manifest_csv_blank_label(tmp):
    rows = _rows()
    rows[3] = rows[3].replace(",a", ",  ")  # became a class named ""
    return _manifest(tmp, "m.csv", rows)


# ---- config ----------------------------------------------------------------------------------

def duplicate_keys(tmp):
    argv = _pipeline(tmp)
    with open(tmp / "p.yaml", "a") as f:
        f.write("stages:\n  - {kind: distill, epochs: 2}\n")
    return argv


def infinite_lr(tmp):
    return _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, train: {epochs: 1, "
                                  "lr: .inf}}")


def negative_budget(tmp):
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1, "
                                 "budget: {min_accuracy: -0.5}}")


def boolean_budget(tmp):
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1, "
                                 "budget: {min_accuracy: true}}")


def pipeline_is_a_folder(tmp):
    (tmp / "p.yaml").mkdir()
    return ["run", "p.yaml", "--out", "run"]


def pipeline_not_utf8(tmp):
    argv = _pipeline(tmp)
    (tmp / "p.yaml").write_bytes((tmp / "p.yaml").read_bytes() + b"# caf\xe9\n")
    return argv


def deep_nesting(tmp):
    (tmp / "p.yaml").write_text("name: [" + "[" * 100_000 + "\n")
    return ["run", "p.yaml", "--out", "run"]


def long_name(tmp):
    return _pipeline(tmp, out=False, name="n" * 300)


def out_is_a_file(tmp):
    argv = _pipeline(tmp)
    (tmp / "taken").write_text("the user's own file\n")
    return [*argv[:2], "--out", "taken"]


def out_holds_the_checkpoint(tmp):
    """--out . in a project that keeps its teacher at teacher/teacher.pt: the teacher stage
    would overwrite it with its own file, and delete a teacher/teacher.ckpt beside it."""
    import torch

    from edgekd.models.builders import cnn

    (tmp / "teacher").mkdir()
    torch.save(cnn(10, 1, width=4, depth=1).state_dict(), tmp / "teacher" / "teacher.pt")
    (tmp / "teacher" / "teacher.ckpt").write_bytes(b"the user's own")
    argv = _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, checkpoint: teacher/"
                                  "teacher.pt}")
    return [*argv[:2], "--out", "."]


def out_inside_the_data(tmp):
    _images(tmp / "imgs")
    return [*_folder_pipeline(tmp)[:2], "--out", "imgs/run"]


def force_a_stage_the_pipeline_lacks(tmp):
    return [*_pipeline(tmp), "--force", "quantize"]


def target_yaml_syntax_error(tmp):
    (tmp / "dev.yaml").write_text("transport: local\nthreads: [1\n")
    return _pipeline(tmp, target="dev.yaml")


def profile_json_over_the_model(tmp):
    model = _tiny_onnx(tmp)
    return ["profile", str(model), "--device", "local", "--runs", "2", "--warmup", "0",
            "--json", "model.onnx"]


def profile_json_through_a_link(tmp):
    _tiny_onnx(tmp)
    (tmp / "notes.txt").write_text("the user's own\n")
    (tmp / "out.json").symlink_to(tmp / "notes.txt")  # a write would replace the link
    return ["profile", "model.onnx", "--device", "local", "--runs", "2", "--warmup", "0",
            "--json", "out.json"]


# ---- option-like strings ---------------------------------------------------------------------

def host_option_in_set(tmp):
    return ["profile", str(_tiny_onnx(tmp)), "--device", "rpi4",
            "--set", "host=-oProxyCommand=touch pwned"]


def host_option_in_device_file(tmp):
    (tmp / "dev.yaml").write_text("transport: ssh\nhost: -oProxyCommand=touch pwned\n")
    return _pipeline(tmp, target="dev.yaml")


# ---- untrusted checkpoints -------------------------------------------------------------------

class _Pwn:
    """Unpickling this runs `touch pwned` (what a malicious .pt can do)."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def checkpoint_runs_code(tmp):
    import torch

    torch.save({"state_dict": _Pwn()}, tmp / "evil.pt")
    return _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, checkpoint: evil.pt}")


def run_directory_names_a_pickle(tmp):
    """A run directory from elsewhere: its teacher.pt (plain tensors, loads with
    weights_only=True) records a trusted checkpoint to rebuild from, a pickle that runs code;
    distill loaded it when it ran again."""
    import hashlib
    import json

    import torch

    torch.save(_Pwn(), tmp / "evil.pt")
    saved = tmp / "run" / "teacher" / "teacher.pt"
    blob = torch.load(saved, weights_only=True)
    blob["record"]["spec"] = {"checkpoint": str(tmp / "evil.pt"), "trust_checkpoint": True}
    torch.save(blob, saved)
    record = tmp / "run" / "teacher" / "stage.json"
    doc = json.loads(record.read_text())
    entry = doc["result"]["artifacts"]["teacher"]
    entry["sha256"] = hashlib.sha256(saved.read_bytes()).hexdigest()
    entry["bytes"] = saved.stat().st_size
    record.write_text(json.dumps(doc, indent=2) + "\n")
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 2}")  # distill runs again


def attention_on_a_flat_layer(tmp):
    """An attention pair naming the classifier (2-D output): IndexError, exit 1, after the
    teacher had trained."""
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1, attention: {pairs: "
                                 "[{student: net.3, teacher: net.0}]}}")


def export_opset_not_honoured(tmp):
    """opset 13: torch's exporter could not convert and wrote opset 18, silently (exit 0)."""
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 2}\n  - {kind: export, "
                                 "formats: [onnx_fp32], opset: 13}")


def student_builder_exits(tmp):
    """A student builder calling sys.exit(0): exit 0, no report, after the teacher trained."""
    (tmp / "mods.py").write_text("import sys\n\ndef exits(num_classes=10):\n    sys.exit(0)\n")
    return _pipeline(tmp, student="{module: mods.py:exits}")


def checkpoint_random_bytes(tmp):
    (tmp / "junk.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, checkpoint: junk.pt}")


def checkpoint_truncated(tmp):
    whole = (tmp / "run" / "teacher" / "teacher.pt").read_bytes()
    (tmp / "cut.pt").write_bytes(whole[:len(whole) // 2])
    return _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, checkpoint: cut.pt}")


def layer_path_typo_over_a_finished_run(tmp):
    """A hint layer path the student lacks, rerun over a finished run (teacher cached): the
    one line came after distill had deleted its epoch checkpoints and the report was
    replaced by a failed one. The stage's checks now come before it touches anything."""
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1, hints: [{student: net.9, "
                                 "teacher: net.0}]}")


def checkpoint_is_a_folder(tmp):
    """A checkpoint path naming a folder was "not found" (it is there, as a folder)."""
    (tmp / "weights").mkdir()
    return _pipeline(tmp, teacher="{arch: cnn, width: 4, depth: 1, checkpoint: weights}")


# ---- tracebacks ------------------------------------------------------------------------------

def report_empty(tmp):
    (tmp / "run" / "report.json").write_bytes(b"")
    return ["report", "run"]


def report_binary(tmp):
    (tmp / "run" / "report.json").write_bytes(np.random.default_rng(1).bytes(512))
    return ["report", "run"]


def report_wrong_shape(tmp):
    (tmp / "run" / "report.json").write_text("[1, 2, 3]\n")
    return ["report", "run"]


# ---- profile ---------------------------------------------------------------------------------

def _tiny_onnx(tmp: Path) -> Path:
    """A copy of tests/tiny_models.py's fp32 ONNX CNN (1x8x8 in, 4 classes out)."""
    from tiny_models import cached_models

    shutil.copy(cached_models()["onnx_fp32"], tmp / "model.onnx")
    return tmp / "model.onnx"


def _profile_data(tmp: Path, y: np.ndarray) -> list[str]:
    model = _tiny_onnx(tmp)
    x = np.random.default_rng(0).random((len(y), 1, 8, 8), dtype=np.float32)
    np.savez(tmp / "test.npz", x=x, y=y)
    return ["profile", str(model), "--device", "local", "--runs", "2", "--warmup", "0",
            "--data", "test.npz"]


def profile_labels_beyond_outputs(tmp):
    y = np.arange(12) % 4
    y[[2, 5, 8]] = [4, 9, 400]  # the model has 4 outputs
    return _profile_data(tmp, y)


def profile_negative_labels(tmp):
    y = np.arange(12) % 4
    y[3] = -2
    return _profile_data(tmp, y)


def profile_fractional_labels(tmp):
    return _profile_data(tmp, (np.arange(12) % 4).astype(np.float32) + 0.25)


def profile_fewer_labels_than_samples(tmp):
    argv = _profile_data(tmp, np.arange(12) % 4)
    with np.load(tmp / "test.npz") as arrays:
        np.savez(tmp / "test.npz", x=arrays["x"], y=arrays["y"][:5])
    return argv


# ---- run directory, target lookup, schema limits, device fields, stale reports -------------

def out_is_another_pipelines_interrupted_run(tmp):
    """A run stopped by Ctrl-C has no report.json yet: another pipeline's run into it
    replaced its teacher and checkpoints. The run directory names its pipeline (.pipeline)."""
    for name in ("report.json", "report.html"):
        (tmp / "run" / name).unlink()
    return _pipeline(tmp, name="other")


def out_inside_a_run(tmp):
    """--out run/teacher wrote a whole second run inside the first one's stage folder."""
    return [*_pipeline(tmp)[:2], "--out", "run/teacher"]


def out_is_a_link_loop(tmp):
    (tmp / "lp1").symlink_to("lp2")
    (tmp / "lp2").symlink_to("lp1")
    return [*_pipeline(tmp)[:2], "--out", "lp1"]


def out_is_a_users_folder(tmp):
    """--out . in a folder of the user's own files, one named like a file a run writes."""
    (tmp / "report.json").write_text('{"the user": "own"}\n')
    return [*_pipeline(tmp)[:2], "--out", "."]


def target_beside_the_pipeline(tmp):
    """`target: dev.yaml` is the file beside sub/p.yaml, not a dev.yaml in the current
    directory (which another project may have left there)."""
    (tmp / "dev.yaml").write_text("transport: local\n")
    (tmp / "sub").mkdir()
    _pipeline(tmp, target="dev.yaml")
    (tmp / "p.yaml").rename(tmp / "sub" / "p.yaml")
    return ["run", "sub/p.yaml", "--out", "run"]


def image_size_zero(tmp):
    return _pipeline(tmp, data="{source: digits, image_size: [0, 8]}")


def image_size_negative(tmp):
    return _pipeline(tmp, data="{source: digits, image_size: [8, -8]}")


def seed_negative(tmp):
    return _pipeline(tmp, seed="-1")


def seed_beyond_32_bits(tmp):
    return _pipeline(tmp, seed=str(2**32))  # numpy's legacy seeding takes 0 .. 2**32 - 1


def _profile_set(tmp, setting: str) -> list[str]:
    return ["profile", str(_tiny_onnx(tmp)), "--device", "local", "--runs", "2", "--warmup", "0",
            "--set", setting]


def set_cpu_mask_zero(tmp):
    return _profile_set(tmp, "cpu_mask=0")  # taskset refuses it, after the model was pushed


def set_runtime_for_other_files(tmp):
    return _profile_set(tmp, "runtime=tensorflow")  # a .tflite runtime, for an .onnx model


def set_python_none(tmp):
    return _profile_set(tmp, "python=none")  # no Python, and no tool for .onnx files


def device_file_python_not_python(tmp):
    (tmp / "dev.yaml").write_text("transport: local\npython: rm\n")
    return _pipeline(tmp, target="dev.yaml")


def device_file_runtime_for_other_files(tmp):
    """Found only at the profile stage, after training and export, before."""
    (tmp / "dev.yaml").write_text("transport: local\nruntime: tflite_runtime\n")
    return _pipeline(tmp, target="dev.yaml", stages="\n  - {kind: distill, epochs: 1}"
                     "\n  - {kind: export, formats: [onnx_fp32]}\n  - {kind: profile, runs: 2}")


def profile_model_is_a_folder(tmp):
    (tmp / "model.onnx").mkdir()
    return ["profile", "model.onnx", "--device", "local"]


def target_is_a_folder(tmp):
    (tmp / "dev.yaml").mkdir()
    return _pipeline(tmp, target="dev.yaml")


def npz_is_a_folder(tmp):
    (tmp / "d.npz").mkdir()
    return _pipeline(tmp, data="{source: npz, path: d.npz}")


def image_folder_is_a_file(tmp):
    (tmp / "imgs").write_text("not a folder\n")
    return _folder_pipeline(tmp)


def report_after_a_stage_ran_again(tmp):
    """distill ran again after report.json was written (a run stopped before its report)."""
    import json

    record = tmp / "run" / "distill" / "stage.json"
    doc = json.loads(record.read_text())
    doc["result"]["compute_s"] = float(doc["result"].get("compute_s") or 0) + 1.0
    record.write_text(json.dumps(doc, indent=2) + "\n")
    return ["report", "run"]


def report_edited(tmp):
    import json

    path = tmp / "run" / "report.json"
    doc = json.loads(path.read_text())
    doc["stages"][-1]["metrics"]["accuracy"] = 0.99
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return ["report", "run"]


def report_without_its_digest(tmp):
    """Deleting the digest keys made an edited report pass as one from before the check."""
    import json

    path = tmp / "run" / "report.json"
    doc = json.loads(path.read_text())
    doc["stages"][-1]["metrics"]["accuracy"] = 0.99
    del doc["sha256"], doc["stage_records"]
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return ["report", "run"]


def report_of_a_deleted_model(tmp):
    """The student the report passed was deleted; the report was drawn again as it was."""
    (tmp / "run" / "distill" / "student.pt").unlink()
    return ["report", "run"]


# ---- files that never end, links where edgekd writes, runs of other pipelines, bounds -------

def validate_dev_zero(tmp):
    return ["validate", "/dev/zero"]  # read whole, it filled 23 GB before the OOM killer


def pipeline_over_a_megabyte(tmp):
    argv = _pipeline(tmp)
    with open(tmp / "p.yaml", "a") as f:
        f.write(("# " + "x" * 98 + "\n") * 11_000)
    return argv


def yaml_binary(tmp):
    (tmp / "p.yaml").write_bytes(b"name: p\x00\x01\n")  # was "p.yaml:: ..." on two lines
    return ["validate", "p.yaml"]


def lock_is_a_link(tmp):
    (tmp / "victim").write_text("the user's own\n")
    (tmp / "run" / ".lock").unlink(missing_ok=True)
    (tmp / "run" / ".lock").symlink_to(tmp / "victim")  # the pid was written into victim
    return _pipeline(tmp)


def out_is_another_pipelines_run(tmp):
    return _pipeline(tmp, name="q")  # run/ is a finished run of pipeline p


def out_is_proc(tmp):
    return [*_pipeline(tmp)[:2], "--out", "/proc"]


def image_size_huge(tmp):
    return _pipeline(tmp, data="{source: digits, image_size: [100000, 8]}")  # 1 problem


def name_100k(tmp):
    return _pipeline(tmp, out=False, name="n" * 100_000)


def epochs_huge(tmp):
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: " + "1" + "0" * 29 + "}")


def epochs_true(tmp):
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: true}")


def check_model_huge_input(tmp):
    return ["check-model", "cnn", "--formats", "onnx_fp32", "--input-shape", "3x100000x100000"]


def check_model_pickle(tmp):
    import torch

    torch.save({"state_dict": _Pwn()}, tmp / "evil.pt")
    return ["check-model", "cnn", "--formats", "onnx_fp32", "--quantize", "none",
            "--input-shape", "1x8x8", "--weights", "evil.pt"]


# ---- profile flags and device fields: bounds, and files --json must not replace ------------

def _profile(tmp, *flags: str) -> list[str]:
    return ["profile", str(_tiny_onnx(tmp)), "--device", "local", "--runs", "2", "--warmup", "0",
            *flags]


def profile_json_over_the_pipeline(tmp):
    _pipeline(tmp)
    return _profile(tmp, "--json", "p.yaml")  # the pipeline was replaced by the result


def profile_json_over_a_report(tmp):
    return _profile(tmp, "--json", "run/report.json")


def profile_json_in_proc(tmp):
    return _profile(tmp, "--json", "/proc/x.json")  # FileNotFoundError after measuring


def profile_threads_huge(tmp):
    return _profile(tmp, "--threads", "9" * 20)  # pybind TypeError, exit 5


def profile_threads_100000(tmp):
    return _profile(tmp, "--threads", "100000")  # segfault in onnxruntime


def set_threads_huge(tmp):
    return _profile(tmp, "--set", "threads=" + "9" * 20)


def validate_device_threads_huge(tmp):
    (tmp / "dev.yaml").write_text("transport: local\nthreads: " + "9" * 20 + "\n")
    return ["validate", "dev.yaml"]


def profile_runs_huge(tmp):
    return _profile(tmp, "--runs", "100000000000")  # measured for days


def budget_size_1e308(tmp):
    _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1}\n  - {kind: export, formats: "
              "[onnx_fp32], budget: {max_size: 1e308 GB}}")
    return ["validate", "p.yaml"]  # OverflowError, exit 1


def epochs_string(tmp):
    return _pipeline(tmp, stages="\n  - {kind: distill, epochs: \"1\"}")  # read as 1


def export_formats_twice(tmp):
    _pipeline(tmp, stages="\n  - {kind: distill, epochs: 1}"
              "\n  - {kind: export, formats: [onnx_fp32, onnx_fp32]}")
    return ["validate", "p.yaml"]


# ---- settings no machine's memory holds; paths longer than any system takes -----------------

def batch_beyond_memory(tmp):
    """42,000 training images of 4096 x 4096 in batches of 65536: 2.56 TiB of inputs per
    batch (torch's "can't allocate memory", exit 1, or the OOM killer)."""
    x = np.random.default_rng(0).random((70_000, 1, 1, 1), dtype=np.float32)
    np.savez(tmp / "d.npz", x=x, y=np.arange(70_000) % 2)
    return _pipeline(tmp, data="{source: npz, path: d.npz, image_size: [4096, 4096]}",
                     teacher=TEACHER.replace("epochs: 1", "epochs: 1, batch_size: 1"),
                     stages="\n  - {kind: distill, epochs: 1, batch_size: 65536}")


def data_path_6000_bytes(tmp):
    return _pipeline(tmp, data="{source: npz, path: " + "d/" * 3000 + "x.npz}")  # OSError


def target_6000_bytes(tmp):
    return _pipeline(tmp, target="d/" * 3000 + "dev.yaml")  # OSError quoting it, exit 1


def set_identity_file_6000_bytes(tmp):
    return ["profile", str(_tiny_onnx(tmp)), "--device", "rpi4",
            "--set", "identity_file=" + "d/" * 3000 + "key"]


PROMISES = ("exit code", "no traceback", "one line", "names", "nothing lost", "no code ran")
"""What every case checks; a Case's `known` lists those a bug not yet fixed breaks today."""


class KnownBug(AssertionError):
    """Only promises in the case's `known` failed: the xfail(strict=True) mark takes it. Any
    other failure is a plain AssertionError, so a known bug cannot hide a new one."""


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list[str]]
    """Writes the user's files into the folder it is given (the cwd of the command, holding a
    finished run at `run/`) and returns the arguments after `edgekd`."""
    exit: int
    names: tuple[str, ...]
    """What the one line must contain: the file, and the field or count when there is one."""
    known: tuple[str, ...] = ()
    """PROMISES this case breaks today because of `bug` (then it is xfail, strict)."""
    bug: str = ""

    def param(self):
        assert set(self.known) <= set(PROMISES) and bool(self.known) == bool(self.bug)
        marks = [pytest.mark.xfail(strict=True, raises=KnownBug, reason=self.bug)] \
            if self.known else []
        return pytest.param(self, id=self.id, marks=marks)


CASES = [
    # data: checked when loaded, before any stage runs (edgekd.pipeline._preflight)
    Case("npz-nan-pixels", nan_pixels, 2, ("d.npz", "3 non-finite")),
    Case("npz-label-5000", label_beyond_classes, 2, ("d.npz", "5000")),
    Case("npz-label-beyond-classes", label_beyond_named_classes, 2, ("d.npz", "classes")),
    Case("npz-negative-labels", negative_labels, 2, ("d.npz", "2 negative")),
    Case("npz-fractional-labels", fractional_labels, 2, ("d.npz", "4 fractional")),
    Case("npz-single-class", single_class, 2, ("d.npz", "one class")),
    Case("npz-zero-samples", zero_samples, 2, ("d.npz", "no samples")),
    Case("npz-object-array", object_arrays, 2, ("d.npz", "Object arrays")),
    Case("folder-empty-class", empty_class_folder, 2, ("imgs", "folder(s) c ")),
    Case("folder-class-symlink-to-root", class_symlink_to_root, 2,
         ("imgs/c", "symlink", "loop")),
    Case("folder-class-symlink-to-sibling", class_symlink_to_sibling, 2,
         ("imgs/c", "symlink to a,")),
    Case("folder-text-as-png", text_as_png, 2, ("imgs/b/notes.png",)),
    Case("folder-decompression-bomb", decompression_bomb, 2,
         ("imgs/a/big.png", "too many pixels")),
    Case("manifest-label-nul", manifest_label_nul, 2, ("m.csv:8", "label")),
    Case("manifest-label-escape", manifest_label_escape, 2, ("m.jsonl:5", "label")),
    Case("manifest-latin1", manifest_latin1, 2, ("m.csv", "UTF-8")),
    Case("manifest-row-outside", manifest_row_outside, 2, ("elsewhere.png", "cannot read")),
    Case("folder-truncated-png", folder_truncated_png, 2, ("imgs/b/4.png",)),
    Case("folder-dangling-link", folder_dangling_link, 2, ("imgs/a/7.png", "symlink")),
    Case("folder-fifo-image", folder_fifo_image, 2, ("imgs/a/9.png", "not a regular file")),
    Case("npz-fifo", npz_fifo, 2, ("d.npz", "not a regular file")),
    Case("folder-class-not-utf8", class_folder_not_utf8, 2, ("imgs", "UTF-8")),
    Case("npz-is-npy", npz_is_npy, 2, ("d.npz", ".npy")),
    Case("npz-channels-last-5", npz_channels_last_5, 2, ("d.npz", "(60, 8, 8, 5)")),
    Case("npz-int64-beyond-255", npz_int64_beyond_255, 2, ("d.npz", "int64", "0-255")),
    Case("npz-uint16-8bit", npz_uint16_8bit, 2, ("d.npz", "uint16", "255")),
    Case("npz-label-10-to-the-12", npz_label_10_to_the_12, 2, ("d.npz", "up to 1000000000000")),
    Case("npz-duplicate-class-names", npz_duplicate_class_names, 2, ("d.npz", "a appears twice")),
    Case("npz-label-beyond-one-class", npz_label_beyond_one_class, 2,
         ("d.npz", "names 1 class")),
    Case("npz-is-proc-environ", npz_is_proc_environ, 2,
         ("/proc/self/environ", "not an .npz archive")),
    Case("folder-classes-nfc-nfd", folder_classes_nfc_nfd, 2, ("imgs", "two Unicode forms")),
    Case("folder-float-image-beyond-255", folder_float_image_beyond_255, 2,
         ("imgs/a/f.tif", "[4095, 4095]")),
    Case("manifest-same-image-twice", manifest_same_image_twice, 2, ("m.csv:14", "lines 4 and 14")),
    Case("manifest-same-image-two-labels", manifest_same_image_two_labels, 2,
         ("m.csv:14", "two labels")),
    Case("manifest-csv-extra-fields", manifest_csv_extra_fields, 2, ("m.csv:5", "3 fields")),
    Case("manifest-jsonl-label-list", manifest_jsonl_label_list, 2, ("m.jsonl:3", "label [2]")),
    Case("manifest-row-is-a-folder", manifest_row_is_a_folder, 2,
         ("imgs/a", "is a folder, expected an image file")),
    Case("profile-data-is-onnx", profile_data_is_onnx, 2,
         ("--data model.onnx", "not an .npz archive")),
    Case("split-test-is-train-folder", split_test_is_train_folder, 2,
         ("data.test", "d/good", "data.train")),
    Case("split-test-is-train-manifest", split_test_is_train_manifest, 2,
         ("data.test", "m.csv", "data.train")),
    Case("split-test-is-train-npz", split_test_is_train_npz, 2,
         ("data.test", "d.npz", "data.train")),
    Case("split-test-shares-images", split_test_shares_images, 2,
         ("data.test", "t.csv", "4 of its 4", "data.train", "imgs/a/4.png")),
    Case("npz-y-not-npy", npz_y_not_npy, 2, ("d.npz", "member y")),
    Case("npz-zero-sized-dimension", npz_zero_sized_dimension, 2, ("d.npz", "(20, 0, 8)")),
    Case("manifest-csv-repeated-column", manifest_csv_repeated_column, 2,
         ("m.csv", "column label twice")),
    Case("manifest-jsonl-duplicate-key", manifest_jsonl_duplicate_key, 2,
         ("m.jsonl:3", '"label" appears twice')),
    Case("folder-file-symlink-other-class", folder_file_symlink_other_class, 2,
         ("imgs/b/0.png", "imgs/a/dup.png")),
    Case("split-test-copies-train-npz", split_test_copies_train_npz, 2,
         ("data.test", "t.npz", "20 of its 20 samples", "data.train", "d.npz")),
    Case("folder-int-image-beyond-65535", folder_int_image_beyond_65535, 2,
         ("imgs/a/i.tif", "[70000, 70000]")),
    Case("manifest-csv-missing-fields", manifest_csv_missing_fields, 2,
         ("m.csv:5", "2 fields", "header of 3")),
    Case("manifest-csv-blank-label", manifest_csv_blank_label, 2,
         ("m.csv:5", "empty path or label")),
    # config: the pipeline and everything it references, read before anything runs
    Case("yaml-duplicate-key", duplicate_keys, 2, ("p.yaml", "line 8", "stages")),
    Case("lr-inf", infinite_lr, 2, ("p.yaml", "teacher.train.lr")),
    Case("budget-negative", negative_budget, 2, ("p.yaml", "stages[0].budget.min_accuracy")),
    Case("budget-boolean", boolean_budget, 2, ("p.yaml", "stages[0].budget.min_accuracy")),
    Case("pipeline-is-a-folder", pipeline_is_a_folder, 2, ("p.yaml", "folder")),
    Case("pipeline-not-utf8", pipeline_not_utf8, 2, ("p.yaml", "UTF-8")),
    Case("yaml-100k-nested", deep_nesting, 2, ("p.yaml", "nested")),
    Case("name-300-chars", long_name, 2, ("p.yaml", "name", "too long", "255 bytes")),
    Case("out-is-a-file", out_is_a_file, 2, ("taken", "--out")),
    Case("out-holds-the-checkpoint", out_holds_the_checkpoint, 2,
         ("--out", "teacher/teacher.pt", "overwrite")),
    Case("out-inside-the-data", out_inside_the_data, 2, ("imgs/run", "--out", "data.path")),
    Case("force-an-absent-stage", force_a_stage_the_pipeline_lacks, 2,
         ("--force quantize", "p.yaml", "teacher, distill")),
    Case("profile-json-over-the-model", profile_json_over_the_model, 2,
         ("--json model.onnx", "input")),
    Case("profile-json-through-a-link", profile_json_through_a_link, 2,
         ("--json out.json", "link")),
    Case("target-yaml-syntax-error", target_yaml_syntax_error, 2,
         ("p.yaml", "dev.yaml", "YAML syntax error")),
    # option-like strings: never reach ssh / scp / adb as options
    Case("set-host-option", host_option_in_set, 2, ("--set host", "-oProxyCommand")),
    Case("device-file-host-option", host_option_in_device_file, 2, ("dev.yaml", "host")),
    # untrusted checkpoints: loaded as data only, unless the user trusts them; read before
    # any stage runs
    Case("checkpoint-runs-code", checkpoint_runs_code, 2, ("evil.pt", "trust_checkpoint")),
    Case("checkpoint-random-bytes", checkpoint_random_bytes, 2, ("junk.pt",)),
    Case("checkpoint-truncated", checkpoint_truncated, 2, ("cut.pt",)),
    Case("layer-path-typo-over-a-finished-run", layer_path_typo_over_a_finished_run, 2,
         ("p.yaml", "stages[0].hints[0].student", "net.9")),
    Case("checkpoint-is-a-folder", checkpoint_is_a_folder, 2,
         ("weights", "is a folder, expected a file")),
    # tracebacks: files edgekd wrote itself, damaged afterwards
    Case("report-empty", report_empty, 2, ("run/report.json",)),
    Case("report-binary", report_binary, 2, ("run/report.json",)),
    Case("report-wrong-shape", report_wrong_shape, 2, ("run/report.json",)),
    # the run directory: never somebody else's folder
    Case("out-is-a-users-folder", out_is_a_users_folder, 2,
         ("--out", "not an edgekd run directory")),
    Case("out-is-another-pipelines-interrupted-run", out_is_another_pipelines_interrupted_run,
         2, ("--out", "pipeline 'p'", "'other'")),
    Case("out-inside-a-run", out_inside_a_run, 2, ("run/teacher", "inside the run directory")),
    Case("out-is-a-link-loop", out_is_a_link_loop, 2, ("lp1", "--out")),
    # every relative path in a pipeline is taken from its folder, a target: file too
    Case("target-beside-the-pipeline", target_beside_the_pipeline, 2,
         ("sub/p.yaml", "dev.yaml", "not found")),
    # numbers beyond what the libraries take
    Case("image-size-zero", image_size_zero, 2, ("p.yaml", "data.image_size")),
    Case("image-size-negative", image_size_negative, 2, ("p.yaml", "data.image_size")),
    Case("seed-negative", seed_negative, 2, ("p.yaml", "seed")),
    Case("seed-beyond-32-bits", seed_beyond_32_bits, 2, ("p.yaml", "seed")),
    # device fields are the user's input: checked before anything is pushed or trained
    Case("set-cpu-mask-zero", set_cpu_mask_zero, 2, ("--set cpu_mask", "no core")),
    Case("set-runtime-for-other-files", set_runtime_for_other_files, 2,
         ("--set runtime", "tensorflow", ".onnx")),
    Case("set-python-none", set_python_none, 2, ("--set python", ".onnx")),
    Case("device-file-python-not-python", device_file_python_not_python, 2,
         ("p.yaml", "dev.yaml", "python")),
    Case("device-file-runtime-for-other-files", device_file_runtime_for_other_files, 2,
         ("p.yaml", "dev.yaml", "runtime", ".onnx")),
    # a folder where a file is expected, and a file where a folder is
    Case("profile-model-is-a-folder", profile_model_is_a_folder, 2,
         ("model.onnx", "is a folder, expected a file")),
    Case("target-is-a-folder", target_is_a_folder, 2,
         ("p.yaml", "dev.yaml", "is a folder, expected a file")),
    Case("npz-is-a-folder", npz_is_a_folder, 2,
         ("p.yaml", "data.path", "is a folder, expected a file")),
    Case("image-folder-is-a-file", image_folder_is_a_file, 2,
         ("p.yaml", "data.path", "is a file, expected a folder")),
    # a report that no longer describes its run directory is not drawn again as it was
    Case("report-after-a-stage-ran-again", report_after_a_stage_ran_again, 2,
         ("run/report.json", "distill/stage.json")),
    Case("report-edited", report_edited, 2, ("run/report.json", "changed after edgekd wrote")),
    Case("attention-on-a-flat-layer", attention_on_a_flat_layer, 2,
         ("p.yaml", "attention.pairs[0].student", "2-D output", "feature map")),
    Case("export-opset-not-honoured", export_opset_not_honoured, 2,
         ("p.yaml", "onnx_fp32", "opset 13 was asked", "wrote opset 18")),
    Case("student-builder-exits", student_builder_exits, 2,
         ("p.yaml", "student.module", "called sys.exit(0)")),
    Case("run-directory-names-a-pickle", run_directory_names_a_pickle, 2,
         ("run/teacher/teacher.pt", "would be rebuilt from checkpoint", "does not name")),
    Case("report-without-its-digest", report_without_its_digest, 2,
         ("run/report.json", "digest is missing")),
    Case("report-of-a-deleted-model", report_of_a_deleted_model, 2,
         ("run/report.json", "distill/student.pt", "is missing")),
    # profile --data: labels are the model's classes
    Case("profile-labels-beyond-outputs", profile_labels_beyond_outputs, 2,
         ("test.npz", "3 label(s) outside the model's 4 classes")),
    Case("profile-negative-labels", profile_negative_labels, 2, ("test.npz", "1 label(s)")),
    Case("profile-fractional-labels", profile_fractional_labels, 2,
         ("test.npz", "12 label(s)")),
    Case("profile-fewer-labels", profile_fewer_labels_than_samples, 2,
         ("test.npz", "(5,) but x has 12 samples")),
    Case("profile-data-npy", profile_data_npy, 2, ("test.npz", ".npy")),
    Case("profile-data-uint8", profile_data_uint8, 2, ("test.npz", "uint8")),
    # files that never end or are too large to be what they say; links where edgekd writes
    Case("validate-dev-zero", validate_dev_zero, 2, ("/dev/zero", "not a regular file")),
    Case("pipeline-over-1-mib", pipeline_over_a_megabyte, 2, ("p.yaml", "1 MiB")),
    Case("yaml-binary", yaml_binary, 2, ("p.yaml: line 1: YAML syntax error", "#x0000")),
    Case("lock-is-a-link", lock_is_a_link, 2, ("run/.lock", "symbolic link")),
    Case("out-is-another-pipelines-run", out_is_another_pipelines_run, 2,
         ("run", "'p'", "'q'")),
    Case("out-is-proc", out_is_proc, 2, ("/proc", "not writable")),
    # numbers that pass a type check but no machine
    Case("image-size-100000", image_size_huge, 2, ("p.yaml", "data.image_size", "4096")),
    Case("name-100k-chars", name_100k, 2, ("p.yaml", "name", "too long")),
    Case("epochs-1e29", epochs_huge, 2, ("p.yaml", "stages[0].epochs", "100000")),
    Case("epochs-true", epochs_true, 2, ("p.yaml", "stages[0].epochs", "not true")),
    Case("check-model-huge-input", check_model_huge_input, 2, ("--input-shape", "4096")),
    Case("check-model-pickle", check_model_pickle, 2, ("evil.pt", "--trust-checkpoint")),
    # profile: --json replaces only its own results, in a folder it can write; bounded flags
    Case("profile-json-over-the-pipeline", profile_json_over_the_pipeline, 2,
         ("--json p.yaml", "not an earlier")),
    Case("profile-json-over-a-report", profile_json_over_a_report, 2,
         ("--json run/report.json", "not an earlier")),
    Case("profile-json-in-proc", profile_json_in_proc, 2, ("--json /proc/x.json", "cannot write")),
    Case("profile-threads-1e20", profile_threads_huge, 2, ("--threads", "1,024")),
    Case("profile-threads-100000", profile_threads_100000, 2, ("--threads", "1,024")),
    Case("set-threads-1e20", set_threads_huge, 2, ("--set threads", "1024")),
    Case("validate-device-threads-1e20", validate_device_threads_huge, 2,
         ("dev.yaml", "threads", "1024")),
    Case("profile-runs-1e11", profile_runs_huge, 2, ("--runs", "1,000,000")),
    Case("budget-size-1e308-gb", budget_size_1e308, 2, ("p.yaml", "budget.max_size")),
    Case("epochs-string", epochs_string, 2, ("p.yaml", "stages[0].epochs", "string")),
    Case("export-formats-twice", export_formats_twice, 2,
         ("p.yaml", "stages[1].formats", "onnx_fp32 given twice")),
    # settings no machine's memory holds; paths longer than any system takes
    Case("batch-beyond-memory", batch_beyond_memory, 2,
         ("p.yaml", "stages[0].batch_size 65536", "data.image_size 4096 x 4096", "TiB")),
    Case("data-path-6000-bytes", data_path_6000_bytes, 2, ("p.yaml", "data.path", "6,005 bytes")),
    Case("target-6000-bytes", target_6000_bytes, 2, ("p.yaml", "target", "6,008 bytes")),
    Case("set-identity-file-6000-bytes", set_identity_file_6000_bytes, 2,
         ("--set identity_file", "6,003 bytes")),
]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A run directory of the tiny pipeline whose stages all finished (made once)."""
    where = tmp_path_factory.mktemp("finished")
    done = _run(_pipeline(where), where)
    assert done.returncode == 0 and (where / "run" / "distill" / "student.pt").is_file(), \
        done.stdout + done.stderr
    return where / "run"


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEKD_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "edgekd", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


PROGRESS = re.compile(r"\[(teacher|distill|quantize|export|profile)\] (cached|done) in |    ")
"""The loop's lines for stages that finished before the refused one (and their indented
checks and warnings): progress, not a second message about the input."""


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock"}


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, finished_run: Path):
    shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    argv = case.argv(tmp_path)
    before = _files(tmp_path)
    done = _run(argv, tmp_path)
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.strip()
             and not (case.exit == 1 and line.startswith("details: "))
             and not PROGRESS.match(line)]
    after = _files(tmp_path)
    lost = [str(p.relative_to(tmp_path)) for p, data in before.items() if after.get(p) != data]
    broken = {
        "exit code": done.returncode != case.exit,
        "no traceback": "Traceback" in output,
        "one line": len(lines) != 1,
        "names": not lines or not all(name in lines[-1] for name in case.names),
        "nothing lost": bool(lost),
        "no code ran": (tmp_path / "pwned").exists(),
    }
    broken = [promise for promise, failed in broken.items() if failed]
    if not broken:
        return
    shown = (f"broken: {', '.join(broken)} (expected exit {case.exit}, naming {case.names})"
             + (f"; changed or removed: {lost}" if lost else "")
             + f"\n$ edgekd {' '.join(argv)}  -> exit {done.returncode}\n{output}")
    if case.known and set(broken) <= set(case.known):
        raise KnownBug(shown)
    raise AssertionError(shown)


def test_a_class_folder_linked_from_elsewhere_is_a_class(tmp_path):
    """Only links into the dataset (or above it, or twice to one folder) are refused."""
    from edgekd.data.sources import folder
    from edgekd.schema import ConfigError

    _images(tmp_path / "imgs")
    _images(tmp_path / "elsewhere", classes=("c",), per_class=3)
    (tmp_path / "imgs" / "c").symlink_to(tmp_path / "elsewhere" / "c", target_is_directory=True)
    samples = folder(tmp_path / "imgs", (8, 8), 1)
    assert samples.classes == ["a", "b", "c"] and np.bincount(samples.y).tolist() == [6, 6, 3]
    (tmp_path / "imgs" / "d").symlink_to(tmp_path / "elsewhere" / "c", target_is_directory=True)
    with pytest.raises(ConfigError, match=r"imgs/d: .* same folder as class c"):
        folder(tmp_path / "imgs", (8, 8), 1)
    (tmp_path / "imgs" / "d").unlink()
    (tmp_path / "imgs" / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"imgs/up: .* holds the dataset \(a loop\)"):
        folder(tmp_path / "imgs", (8, 8), 1)
