"""Sampling a fixed-size, class-balanced minibatch of labelled anchors or proposals."""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["subsample_labels"]


def subsample_labels(labels: Tensor, num_samples: int, positive_fraction: float,
                     bg_label: int) -> Tuple[Tensor, Tensor]:
    """Randomly picks at most num_samples indices, at most positive_fraction of them positive.

    labels: Tensor[N] int: -1 ignore, bg_label background, anything else
    foreground. Fills with negatives when there are too few positives.
    Returns (pos_idx Tensor[P], neg_idx Tensor[Q]) with P + Q <= num_samples.
    """
    positive = ((labels != -1) & (labels != bg_label)).nonzero().squeeze(1)
    negative = (labels == bg_label).nonzero().squeeze(1)

    num_pos = int(num_samples * positive_fraction)
    num_pos = min(positive.numel(), num_pos)
    num_neg = num_samples - num_pos
    num_neg = min(negative.numel(), num_neg)

    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm1], negative[perm2]
