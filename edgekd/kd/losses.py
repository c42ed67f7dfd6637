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


def soft_kl(student_logits: torch.Tensor, target_log_probs: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T^2 * KL(target || softmax(student / T)); `target_log_probs` are already at T."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), target_log_probs,
                    log_target=True, reduction="batchmean") * (t * t)


def ensemble_log_probs(logits: list[torch.Tensor], weights: list[float],
                       temperature: float) -> torch.Tensor:
    """log of the weighted mean of the teachers' softened distributions (weights sum to 1
    after normalising), so teachers of different confidence mix as probabilities."""
    total = sum(weights)
    stacked = torch.stack([F.log_softmax(z.float() / temperature, dim=1) + torch.log(
        torch.tensor(w / total)) for z, w in zip(logits, weights, strict=True)])
    return torch.logsumexp(stacked, dim=0)


def match_spatial(student: torch.Tensor, teacher: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two feature maps to the same spatial size by average pooling the larger one.

    4-D maps are pooled to the smaller (H, W); a 4-D map paired with a 2-D vector is globally
    pooled; anything else is flattened per sample."""
    if student.dim() == 4 and teacher.dim() == 4:
        size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
        return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)
    return _vector(student), _vector(teacher)


def _vector(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    return x.flatten(1)


def feature(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Hint loss between an (adapted) student feature and the teacher's, same shape:
    `mse` (mean squared error) or `cosine` (1 - cosine similarity per sample, averaged)."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Activation-based spatial attention: mean over channels of |f|^p, L2-normalised per
    sample, shape (N, H, W) (Zagoruyko & Komodakis 2017)."""
    amap = features.float().abs().pow(p).mean(dim=1)
    flat = F.normalize(amap.flatten(1), dim=1)
    return flat.view_as(amap)


def attention(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Squared distance between attention maps, the larger pooled to the smaller's size."""
    s, t = student_map.unsqueeze(1), teacher_map.unsqueeze(1)
    s, t = match_spatial(s, t)
    s, t = F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1)
    return (s - t).pow(2).mean()


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp(min=1e-12).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device))


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, distance-wise: pairwise distances within the batch, each normalised by
    its mean, matched with a Huber loss (Park et al. 2019)."""
    s, t = student.flatten(1).float(), teacher.flatten(1).float()
    with torch.no_grad():
        td = _pairwise_distances(t)
        td = td / _positive_mean(td)
    sd = _pairwise_distances(s)
    sd = sd / _positive_mean(sd)
    return F.smooth_l1_loss(sd, td)


def _positive_mean(distances: torch.Tensor) -> torch.Tensor:
    """The mean of the non-zero `distances`; 1 where there are none (a batch of one sample, the
    last of an epoch whose size leaves one over, or samples all alike): the mean of nothing
    is NaN, and one NaN loss stops training."""
    positive = distances[distances > 0]
    return positive.mean() if positive.numel() else distances.new_ones(())


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).view(-1)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, angle-wise: cosines of the angles every sample triplet forms."""
    s, t = student.flatten(1).float(), teacher.flatten(1).float()
    with torch.no_grad():
        ta = _angles(t)
    return F.smooth_l1_loss(_angles(s), ta)
