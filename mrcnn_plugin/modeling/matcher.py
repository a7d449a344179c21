"""Matching predictions (anchors or proposals) to ground-truth boxes by IoU."""
from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ["Matcher"]


class Matcher:
    """Assigns each prediction the ground truth it overlaps most, and a label from IoU thresholds.

    With thresholds [0.3, 0.7] and labels [0, -1, 1] (the RPN's), a prediction
    whose best IoU is < 0.3 is labelled 0 (background), in [0.3, 0.7) -1
    (ignored) and >= 0.7 1 (foreground).
    """

    def __init__(self, thresholds: List[float], labels: List[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if thresholds[0] < 0:
            raise ValueError(f"Matcher thresholds must be >= 0, got {thresholds}")
        thresholds.insert(0, -float("inf"))
        thresholds.append(float("inf"))
        if not all(low <= high for low, high in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be sorted, got {thresholds[1:-1]}")
        if not all(label in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must be -1, 0 or 1, got {labels}")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(f"Matcher needs {len(thresholds) - 1} labels for {len(thresholds) - 2} "
                             f"thresholds, got {len(labels)}")
        self.thresholds = thresholds
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tuple[Tensor, Tensor]:
        """match_quality_matrix: Tensor[M, N], IoU of M ground truths with N predictions.

        Returns (matches Tensor[N] int64, index of the matched ground truth;
        match_labels Tensor[N] int8 in {-1, 0, 1}). With no ground truth every
        prediction is background.
        """
        assert match_quality_matrix.dim() == 2
        if match_quality_matrix.numel() == 0:
            default_matches = match_quality_matrix.new_full((match_quality_matrix.size(1),), 0,
                                                            dtype=torch.int64)
            # No ground truth: everything is the first label (background for
            # the RPN's and the ROI heads' settings).
            default_match_labels = match_quality_matrix.new_full(
                (match_quality_matrix.size(1),), self.labels[0], dtype=torch.int8)
            return default_matches, default_match_labels

        assert torch.all(match_quality_matrix >= 0)
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            low_high = (matched_vals >= low) & (matched_vals < high)
            match_labels[low_high] = label
        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    def set_low_quality_matches_(self, match_labels: Tensor, match_quality_matrix: Tensor) -> None:
        """Marks as foreground, for each ground truth, the predictions tied for its highest IoU.

        This gives every ground truth at least one positive even when no
        prediction reaches the foreground threshold (Faster R-CNN, section 3.1.2).
        """
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
        # A ground truth with IoU 0 to everything would otherwise mark every prediction.
        _, pred_inds_with_highest_quality = torch.nonzero(
            (match_quality_matrix == highest_quality_foreach_gt[:, None]) & (match_quality_matrix > 0),
            as_tuple=True)
        match_labels[pred_inds_with_highest_quality] = 1
