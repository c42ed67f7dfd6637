"""Deep mutual learning (Zhang et al. 2018): a peer trains alongside the student."""

from __future__ import annotations

import torch.nn.functional as F

from edgekd.config import DistillStage
from edgekd.kd import losses
from edgekd.kd.terms.term import Batch, LogitsOnly, Parts, Setup


class Mutual(LogitsOnly):
    """Each of student and peer learns from the other's softened outputs and the labels.

    Parts: "mutual", T^2 * KL(peer_T || student_T), and "peer_mutual",
    T^2 * KL(student_T || peer_T), both weight `mutual.weight` (T^2 * nats; the other model's
    output is detached in each); "peer", the peer's cross-entropy (nats), weight 1. The peer
    is saved as `peer`. Raises ValueError when `Setup.peer` is None.
    """

    field = "mutual"
    assistants = False
    from_teachers = False

    def __init__(self, setup: Setup):
        if setup.peer is None:
            raise ValueError("mutual learning needs a peer model")
        self.cfg = setup.cfg.mutual
        self.modules = {"peer": setup.peer}

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return cfg.mutual is not None

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        return ["mutual"]

    def __call__(self, batch: Batch) -> Parts:
        logits, t = batch.logits, self.cfg.temperature
        peer_logits = self.modules["peer"](batch.x)
        to_student = losses.soft_kl(logits, F.log_softmax(peer_logits.detach() / t, dim=1), t)
        to_peer = losses.soft_kl(peer_logits, F.log_softmax(logits.detach() / t, dim=1), t)
        return {"mutual": (self.cfg.weight, to_student),
                "peer": (1.0, F.cross_entropy(peer_logits, batch.y)),
                "peer_mutual": (self.cfg.weight, to_peer)}
