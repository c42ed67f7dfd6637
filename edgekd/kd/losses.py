"""Knowledge-distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinton(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
           labels: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE.

    The T^2 factor keeps the soft term's gradient scale independent of T. With no teacher
    (or alpha 0) this is plain cross-entropy on the hard labels.
    """
    hard = F.cross_entropy(student_logits, labels)
    if teacher_logits is None or alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1), log_target=True,
                    reduction="batchmean") * (t * t)
    return alpha * soft + (1 - alpha) * hard
