"""Training at real scale (issue 12): edgekd's distill throughput against a plain PyTorch KD
loop on the same image folders, and the peak host memory of `edgekd run` as the data grows.

    python -m bench.train_throughput [--tiny] [--workers 1] [--device cuda --precision bf16]
                                     [--models torchvision]

Data: seeded synthetic 96x96 RGB PNGs on disk, one subfolder per class (10 classes: a disc,
square, triangle, cross or stripes in a hue of its own, at a random place and size, on a noisy
background), split 80 / 10 / 10 into train/ val/ test/; written once under
`bench/.work/data/shapes-<N>/` and reused.

Throughput: `edgekd run --no-gate` on a pipeline with a cnn teacher (trained 1 epoch) and a
distill stage (`baseline: false`, `cache_teacher: false`: the teacher runs online), fp32 on the
CPU; the student's images/s per epoch comes from report.json. Then, in this process, a plain
loop: the same teacher and student architectures (`edgekd.models.build`, random weights: the
cost of a step does not depend on them), batch size, AdamW + one-cycle schedule, loss
alpha * T^2 * KL + (1 - alpha) * CE, and the same PNGs read by a torch DataLoader with the same
num_workers. Both figures are the median over the epochs after the first; goal: edgekd >= 0.9x
the plain loop.

Memory: `edgekd run` (a cnn-w16d3 teacher trained 1 epoch + distill 1 epoch) in a fresh process
for each dataset size. The process tree (edgekd and its DataLoader workers) is sampled every
0.2 s from Linux /proc: the peak of the summed RSS (a shared page counts in every process that
maps it), the peak of the summed PSS (shared pages split between the processes: the tree's
real footprint) and the largest single process (getrusage RUSAGE_CHILDREN in a wrapper
process, exact; the goal's measure where /proc is missing). Goal: the peak tree RSS at the
largest size <= 1.25x the one at the smallest (the data grows 16x).
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import ROOT, Report, parse_args

SIZE = 96
CLASSES = ("disc", "square", "triangle", "cross", "stripes")
TEACHER = {"arch": "cnn", "width": 32, "depth": 3}
STUDENT = {"arch": "cnn", "width": 8, "depth": 3}
MEMORY_TEACHER = {"arch": "cnn", "width": 16, "depth": 3}  # lighter: 16,000 images on 2 cores
PAIRS = {"cnn": (TEACHER, STUDENT),  # --models: the throughput pair
         "torchvision": ({"arch": "resnet18"}, {"arch": "mobilenet_v3_small"})}
BATCH, LR, WEIGHT_DECAY, TEMPERATURE, ALPHA = 64, 0.01, 5e-4, 4.0, 0.7  # the distill defaults
SETTINGS = {  # images in the throughput set, distill epochs, the memory sizes
    "full": {"throughput_images": 4_000, "epochs": 4, "memory_images": (1_000, 4_000, 16_000)},
    "tiny": {"throughput_images": 400, "epochs": 3, "memory_images": (200, 400, 800)},
}
THROUGHPUT_GOAL, MEMORY_GOAL = 0.9, 1.25
# Runs the command, then reports its largest descendant's peak RSS (KiB on Linux).
WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
           "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "file=sys.stderr); sys.exit(code)")


# ---- data ------------------------------------------------------------------------------------

def draw(label: int, rng: np.random.Generator):
    """One image of class `label`: its shape (label % 5) in its hue (36 degrees apart, jittered),
    at a random centre and size, over a noisy grey background."""
    from PIL import Image, ImageDraw

    background = rng.normal(rng.uniform(30, 110), 14, (SIZE, SIZE, 3)).clip(0, 255)
    img = Image.fromarray(background.astype(np.uint8))
    pen = ImageDraw.Draw(img)
    hue = (label * 36 + rng.uniform(-12, 12)) % 360 / 360
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1), 0.95))
    cx, cy = rng.integers(28, SIZE - 28, 2)
    r = int(rng.integers(12, 27))
    box = (cx - r, cy - r, cx + r, cy + r)
    shape = CLASSES[label % len(CLASSES)]
    if shape == "disc":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        pen.rectangle((cx - r, cy - r // 4, cx + r, cy + r // 4), fill=colour)
        pen.rectangle((cx - r // 4, cy - r, cx + r // 4, cy + r), fill=colour)
    else:
        for y in range(cy - r, cy + r, 8):
            pen.rectangle((cx - r, y, cx + r, y + 3), fill=colour)
    return img


def shapes(work: Path, images: int, seed: int = 0) -> Path:
    """`images` PNGs (a tenth per class) under work/data/shapes-<images>/{train,val,test}/
    <class>/, split 80 / 10 / 10; written once (into a temporary folder, then renamed)."""
    root = work / "data" / f"shapes-{images}"
    if root.is_dir():
        return root
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    per_class = images // 10
    for label in range(10):
        name = f"{label}-{CLASSES[label % len(CLASSES)]}"
        for i in range(per_class):
            split = "train" if i < 0.8 * per_class else "val" if i < 0.9 * per_class else "test"
            folder = tmp / split / name
            folder.mkdir(parents=True, exist_ok=True)
            draw(label, np.random.default_rng([seed, label, i])).save(folder / f"{i:05d}.png")
    tmp.rename(root)
    return root


def disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.png"))


class PngFolder:
    """The plain loop's dataset: (uint8 C x H x W tensor, label) decoded with PIL per item."""

    def __init__(self, root: Path):
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.items = [(f, label) for label, c in enumerate(classes)
                      for f in sorted((root / c).glob("*.png"))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            pixels = np.array(img.convert("RGB"))  # writable, as torch wants
        return torch.from_numpy(pixels).permute(2, 0, 1), label


# ---- the two loops ---------------------------------------------------------------------------

def plain_kd(train: Path, epochs: int, workers: int, seed: int = 0, device: str = "cpu",
             precision: str = "fp32", pair: tuple[dict, dict] = (TEACHER, STUDENT)
             ) -> list[float]:
    """The plain PyTorch KD loop; training images/s of each epoch. On CUDA: channels_last,
    pinned memory, autocast in `precision` (bf16 / fp16 with a gradient scaler)."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from edgekd.config import ModelConfig
    from edgekd.models import build

    torch.manual_seed(seed)
    dev = torch.device(device)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype else \
        contextlib.nullcontext
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    mean, std = [0.5] * 3, [0.25] * 3
    meta = {"num_classes": 10, "in_channels": 3, "input_shape": [3, SIZE, SIZE], "mean": mean,
            "std": std}
    teacher = build(ModelConfig(**pair[0]), meta).eval().to(dev, memory_format=fmt)
    student = build(ModelConfig(**pair[1]), meta).train().to(dev, memory_format=fmt)
    loader = DataLoader(PngFolder(train), batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=dev.type == "cuda",
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, pct_start=0.15,
                                                   total_steps=epochs * len(loader))
    rates = []
    for _ in range(epochs):
        began, seen = time.perf_counter(), 0
        for pixels, labels in loader:
            x = pixels.to(dev, non_blocking=True).float().div_(255).contiguous(
                memory_format=fmt)
            labels = labels.to(dev, non_blocking=True)
            with autocast():
                with torch.no_grad():
                    soft = F.log_softmax(teacher(x) / TEMPERATURE, dim=1)
                logits = student(x)
                kl = F.kl_div(F.log_softmax(logits / TEMPERATURE, dim=1), soft,
                              log_target=True, reduction="batchmean")
                loss = (ALPHA * TEMPERATURE**2 * kl
                        + (1 - ALPHA) * F.cross_entropy(logits, labels))
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            seen += len(labels)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - began))
    return rates


def pipeline(data: Path, out: Path, distill_epochs: int, workers: int,
             teacher: dict = TEACHER, student: dict = STUDENT, device: str = "cpu",
             precision: str = "fp32") -> Path:
    """The pipeline file of one edgekd run on the folders under `data`."""
    doc = {"name": "train-throughput", "seed": 0, "device": device, "precision": precision,
           "data": {"source": "folder", "train": str(data / "train"), "val": str(data / "val"),
                    "test": str(data / "test"), "image_size": [SIZE, SIZE],
                    "num_workers": workers, "augment": "none"},
           "teacher": {**teacher, "train": {"epochs": 1, "lr": LR, "batch_size": BATCH}},
           "student": student,
           "stages": [{"kind": "distill", "epochs": distill_epochs, "batch_size": BATCH,
                       "baseline": False, "cache_teacher": False}]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _tree(root: int) -> list[int]:
    """The pids below `root` (its descendants, not itself), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _kib(pid: int, file: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def edgekd_run(pipeline_file: Path, out: Path) -> dict:
    """`edgekd run --no-gate` into an empty `out` in a fresh process (under the getrusage
    wrapper), its process tree sampled every 0.2 s; wall time, memory peaks, report.json."""
    shutil.rmtree(out / "run", ignore_errors=True)
    log = out / "edgekd.log"
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "edgekd", "run",
               str(pipeline_file), "--out", str(out / "run"), "--no-gate"]
    rss = pss = procs = 0
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "EDGEKD_PROGRESS": "0"})
        while proc.poll() is None:
            pids = _tree(proc.pid) if Path("/proc/self/stat").exists() else []
            rss = max(rss, sum(_kib(p, "status", "VmRSS:") for p in pids))
            pss = max(pss, sum(_kib(p, "smaps_rollup", "Pss:") for p in pids))
            procs = max(procs, len(pids))
            time.sleep(0.2)
    wall = time.perf_counter() - start
    text = log.read_text()
    report_path = out / "run" / "report.json"
    if proc.returncode not in (0, 3) or not report_path.is_file():
        raise RuntimeError(f"edgekd run {pipeline_file} exited {proc.returncode}: {text[-1500:]}")
    maxrss = [ln.split()[1] for ln in text.splitlines() if ln.startswith("maxrss ")]
    unit = 1024 if sys.platform == "darwin" else 1  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall_s": wall, "exit_code": proc.returncode,
            "report": json.loads(report_path.read_text()),
            "tree_rss_mib": rss / 1024 or None, "tree_pss_mib": pss / 1024 or None,
            "largest_process_mib": int(maxrss[-1]) / unit / 1024 if maxrss else None,
            "processes": procs}


def _name(model: dict) -> str:
    return f"cnn-w{model['width']}d{model['depth']}" if model["arch"] == "cnn" else model["arch"]


def _student_history(report: dict) -> list[dict]:
    distill = next(s for s in report["stages"] if s["kind"] == "distill")
    if distill["status"] not in ("done", "gate_failed"):
        raise RuntimeError(f"distill stage {distill['status']}: {distill.get('error')}")
    return distill["history"]["student"]


# ---- the two measurements --------------------------------------------------------------------

def throughput(args, report: Report, setting: dict) -> dict:
    data = shapes(args.work, setting["throughput_images"])
    out = args.work / ("tiny" if args.tiny else "full") / "train-throughput" / "speed"
    teacher, student = PAIRS[args.models]
    run = edgekd_run(pipeline(data, out, setting["epochs"], args.workers, teacher, student,
                              args.device, args.precision), out)
    edgekd_rates = [e["images_per_s"] for e in _student_history(run["report"])]
    plain_rates = plain_kd(data / "train", setting["epochs"], args.workers, 0, args.device,
                           args.precision, (teacher, student))
    edgekd_med = statistics.median(edgekd_rates[1:] or edgekd_rates)
    plain_med = statistics.median(plain_rates[1:] or plain_rates)
    ratio = edgekd_med / plain_med
    train_images = len(PngFolder(data / "train"))
    report.add_table(
        f"Training throughput, {args.precision} on {args.device} (images/s of the student's "
        f"training; median of epochs 2-{setting['epochs']}; {train_images} train PNGs of "
        f"{SIZE}x{SIZE}, batch {BATCH}, num_workers {args.workers}, teacher {_name(teacher)} "
        f"online, student {_name(student)})",
        ["loop", "images/s", "per epoch", "vs plain", f"goal >= {THROUGHPUT_GOAL}x"],
        [["edgekd distill stage", edgekd_med, ", ".join(f"{r:.0f}" for r in edgekd_rates),
          f"{ratio:.2f}x", "met" if ratio >= THROUGHPUT_GOAL else "MISSED"],
         ["plain PyTorch KD loop", plain_med, ", ".join(f"{r:.0f}" for r in plain_rates),
          "1.00x", "-"]])
    return {"images": setting["throughput_images"], "train_images": train_images,
            "epochs": setting["epochs"], "batch_size": BATCH, "num_workers": args.workers,
            "teacher": teacher, "student": student, "device": args.device,
            "precision": args.precision,
            "edgekd_images_per_s": edgekd_rates, "plain_images_per_s": plain_rates,
            "edgekd_median": edgekd_med, "plain_median": plain_med, "ratio": ratio,
            "edgekd_wall_s": run["wall_s"], "goal": THROUGHPUT_GOAL}


def memory(args, report: Report, setting: dict) -> dict:
    rows = []
    for images in setting["memory_images"]:
        data = shapes(args.work, images)
        out = args.work / ("tiny" if args.tiny else "full") / "train-throughput" / f"mem-{images}"
        run = edgekd_run(pipeline(data, out, 1, args.workers, MEMORY_TEACHER), out)
        _student_history(run["report"])  # the distill stage must have run
        rows.append({"images": images, "train_images": len(PngFolder(data / "train")),
                     "disk_mib": disk_bytes(data) / 2**20, "wall_s": run["wall_s"],
                     **{k: run[k] for k in ("tree_rss_mib", "tree_pss_mib",
                                            "largest_process_mib", "processes")}})
        shutil.rmtree(out / "run", ignore_errors=True)
    key = "tree_rss_mib" if rows[0]["tree_rss_mib"] else "largest_process_mib"
    label = "tree RSS" if key == "tree_rss_mib" else "largest process"
    growth = rows[-1][key] / rows[0][key]
    report.add_table(
        f"Peak host memory of `edgekd run` (teacher {_name(MEMORY_TEACHER)} 1 epoch + distill "
        f"1 epoch, num_workers {args.workers}) vs dataset size; tree = edgekd and its DataLoader "
        "workers, sampled every 0.2 s",
        ["images", "train", "on disk MiB", "peak tree RSS MiB", "peak tree PSS MiB",
         "largest process MiB", "processes", "wall s", "peak / smallest's"],
        [[r["images"], r["train_images"], r["disk_mib"], r["tree_rss_mib"], r["tree_pss_mib"],
          r["largest_process_mib"], r["processes"], r["wall_s"],
          f"{r[key] / rows[0][key]:.2f}x"] for r in rows])
    report.note(f"memory: the peak {label} at "
                f"{rows[-1]['images']:,} images is {growth:.2f}x the one at "
                f"{rows[0]['images']:,} (goal <= {MEMORY_GOAL}x): "
                + ("met" if growth <= MEMORY_GOAL else "MISSED"))
    return {"rows": rows, "measure": key, "measure_label": label, "growth": growth,
            "goal": MEMORY_GOAL, "image_size": [SIZE, SIZE], "teacher": MEMORY_TEACHER}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv, extra=[
        ("--workers", {"type": int, "default": 1, "help": "DataLoader workers of both loops [1]"}),
        ("--device", {"default": "cpu", "help": "training device of both loops [cpu]"}),
        ("--precision", {"default": "fp32", "choices": ("fp32", "bf16", "fp16")}),
        ("--models", {"default": "cnn", "choices": tuple(PAIRS),
                      "help": "throughput pair: cnn (w32d3 -> w8d3) or torchvision "
                              "(resnet18 -> mobilenet_v3_small) [cnn]"})])
    report = Report("train_throughput", args)
    report.doc["datasets"] = ["shapes (synthetic PNG folders)"]
    setting = SETTINGS["tiny" if args.tiny else "full"]
    report.doc["results"] = {"throughput": throughput(args, report, setting),
                             "memory": memory(args, report, setting)}
    report.write()
    return report.doc


if __name__ == "__main__":
    main(sys.argv[1:])
