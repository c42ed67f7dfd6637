"""Logit KD with torchdistill's own KDLoss: the peer of edgekd's logit KD in bench/kd_task.py.

    bench/.torchdistill-venv/bin/python bench/torchdistill_peer.py JOB.json

Runs inside torchdistill's venv (torchdistill 1.1.5 on top of edgekd's own packages). JOB.json
names the arrays (.npz: x_train, y_train, x_val, y_val, x_test as uint8 N x C x H x W), the
teacher and the student at its initial weights (whole modules, torch.save), the schedule
(epochs, lr, batch_size, weight_decay, seed, temperature, alpha in edgekd's meaning: the weight
of the soft term) and the device (default cpu). The loop is plain PyTorch with the optimiser
and schedule edgekd's distill stage uses (AdamW, one-cycle peaking at lr after 15 % of the
steps) and keeps the epoch with the best validation accuracy, as edgekd does; the loss is
torchdistill's registered KDLoss, built from a config the way torchdistill builds it. The
teacher's logits over the train split are computed once, in eval mode (no augmentation, so
every epoch would give the same).
Writes the student's test and validation logits (.npy) and a JSON record next to JOB.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def logits(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """The model's logits over uint8 images `x`, on the CPU."""
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + 512]).to(dev).float() / 255.0).cpu()
                          for i in range(0, len(x), 512)])


def kd_loss(temperature: float, alpha: float) -> torch.nn.Module:
    """torchdistill's KDLoss; its `alpha` weighs cross-entropy and `beta` the soft term, the
    reverse of edgekd's alpha."""
    from torchdistill.losses.registry import get_mid_level_loss

    return get_mid_level_loss({"key": "KDLoss", "kwargs": {
        "student_module_path": ".", "student_module_io": "output",
        "teacher_module_path": ".", "teacher_module_io": "output",
        "temperature": temperature, "alpha": 1.0 - alpha, "beta": alpha,
        "reduction": "batchmean"}})


def train(job: dict) -> dict:
    torch.set_num_threads(job.get("threads", 1))
    data = np.load(job["data"])
    x, y = data["x_train"], torch.from_numpy(data["y_train"])
    dev = torch.device(job.get("device", "cpu"))
    teacher = torch.load(job["teacher"], weights_only=False).to(dev)
    student = torch.load(job["student"], weights_only=False).to(dev)
    soft, y = logits(teacher, x).to(dev), y.to(dev)
    criterion = kd_loss(job["temperature"], job["alpha"])
    steps = -(-len(x) // job["batch_size"])
    optimizer = torch.optim.AdamW(student.parameters(), lr=job["lr"],
                                  weight_decay=job["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=job["lr"],
                                                   total_steps=job["epochs"] * steps,
                                                   pct_start=0.15)
    order = torch.Generator().manual_seed(job["seed"])
    best, history, start = None, [], time.perf_counter()
    for epoch in range(job["epochs"]):
        student.train()
        for rows in torch.randperm(len(x), generator=order).split(job["batch_size"]):
            batch = torch.from_numpy(x[rows.numpy()]).to(dev).float() / 255.0
            rows = rows.to(dev)
            out = student(batch)
            loss = criterion({".": {"output": out}}, {".": {"output": soft[rows]}}, y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        val = (logits(student, data["x_val"]).argmax(1).numpy() == data["y_val"]).mean()
        history.append({"epoch": epoch + 1, "val_accuracy": float(val)})
        if best is None or val >= best[0]:
            best = (val, {k: v.detach().cpu().clone() for k, v in student.state_dict().items()})
    student.load_state_dict(best[1])
    out = Path(job["out"])
    np.save(out.with_suffix(".npy"), logits(student, data["x_test"]).numpy())
    np.save(out.with_suffix(".val.npy"), logits(student, data["x_val"]).numpy())
    import torchdistill

    return {"torchdistill": torchdistill.__version__, "torch": torch.__version__,
            "wall_s": time.perf_counter() - start, "history": history,
            "logits": str(out.with_suffix(".npy")),
            "val_logits": str(out.with_suffix(".val.npy"))}


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    record = train(job)
    Path(job["out"]).write_text(json.dumps(record, indent=2) + "\n")
