"""Person keypoints: the `Keypoints` structure and the heatmap encoding used by the keypoint head."""
from typing import Any, List, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["Keypoints", "keypoints_to_heatmap"]


def keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, heatmap_size: int) -> Tuple[Tensor, Tensor]:
    """Encodes keypoints as flat indices into a heatmap_size^2 grid over each ROI.

    keypoints: Tensor[N, K, 3] (x, y, visibility) in image pixels;
    rois: Tensor[N, 4] XYXY. Returns (heatmaps Tensor[N, K] int64 = y * S + x,
    valid Tensor[N, K] int64 1 where the keypoint is visible and inside its ROI).
    A keypoint exactly on the right/bottom border goes to the last cell.
    """
    if rois.numel() == 0:
        return rois.new_zeros((0, keypoints.shape[1])).long(), rois.new_zeros((0, keypoints.shape[1])).long()
    offset_x = rois[:, 0][:, None]
    offset_y = rois[:, 1][:, None]
    scale_x = (heatmap_size / (rois[:, 2] - rois[:, 0]))[:, None]
    scale_y = (heatmap_size / (rois[:, 3] - rois[:, 1]))[:, None]
    x = keypoints[..., 0]
    y = keypoints[..., 1]
    x_boundary_inds = x == rois[:, 2][:, None]
    y_boundary_inds = y == rois[:, 3][:, None]
    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()
    x[x_boundary_inds] = heatmap_size - 1
    y[y_boundary_inds] = heatmap_size - 1
    valid_loc = (x >= 0) & (y >= 0) & (x < heatmap_size) & (y < heatmap_size)
    vis = keypoints[..., 2] > 0
    valid = (valid_loc & vis).long()
    lin_ind = y * heatmap_size + x
    return lin_ind * valid, valid


class Keypoints:
    """Keypoints of N instances, `tensor`: Tensor[N, K, 3] = (x, y, visibility), image pixels.

    Visibility follows COCO: 0 not labeled, 1 labeled but occluded, 2 visible.
    """

    def __init__(self, keypoints: Union[Tensor, np.ndarray, List[List[float]]]):
        device = keypoints.device if isinstance(keypoints, Tensor) else torch.device("cpu")
        keypoints = torch.as_tensor(keypoints, dtype=torch.float32, device=device)
        if keypoints.dim() != 3 or keypoints.shape[2] != 3:
            raise ValueError(f"Keypoints need Tensor[N, K, 3], got shape {tuple(keypoints.shape)}")
        self.tensor = keypoints

    def __len__(self) -> int:
        return self.tensor.size(0)

    def to(self, *args: Any, **kwargs: Any) -> "Keypoints":
        return type(self)(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to_heatmap(self, boxes: Tensor, heatmap_size: int) -> Tuple[Tensor, Tensor]:
        """See `keypoints_to_heatmap`."""
        return keypoints_to_heatmap(self.tensor, boxes, heatmap_size)

    def __getitem__(self, item) -> "Keypoints":
        if isinstance(item, int):
            return Keypoints(self.tensor[item].unsqueeze(0))
        return Keypoints(self.tensor[item])

    def __repr__(self) -> str:
        return f"Keypoints(num_instances={len(self.tensor)})"

    @staticmethod
    def cat(keypoints_list: List["Keypoints"]) -> "Keypoints":
        return type(keypoints_list[0])(torch.cat([kp.tensor for kp in keypoints_list], dim=0))
