"""Classification module of the concepts and the feature classification loss L_C (eq. 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConceptClassifier(nn.Module):
    """Max-pool each f(m) to an n-vector, one FC layer shared across concepts -> M logits."""

    def __init__(self, code_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(code_channels, num_classes)

    def forward(self, concepts: Tensor, mask: Tensor) -> Tensor:
        """concepts (P,n,h,w), mask (P,h,w) -> logits (P,M), max over the concept's positions."""
        masked = concepts.masked_fill(mask.unsqueeze(1) < 0.5, float("-inf"))
        pooled = masked.flatten(2).amax(-1)
        return self.fc(pooled)


def classification_loss(logits: Tensor, class_ids: Tensor) -> Tensor:
    """L_C = -sum_m p(m) log p_hat(m) (eq. 3), averaged over concepts."""
    if logits.numel() == 0:
        return logits.sum()
    return F.cross_entropy(logits, class_ids)


__all__ = ["ConceptClassifier", "classification_loss", "torch"]
