"""Comparing two models' detections that differ only by float rounding.

Scripted models run ROIAlign and NMS as ATen-only code, eager ones torchvision's
kernels: sums are taken in another order. Scores and probabilities then agree to
1e-5, pixel coordinates to 1e-4 px (float32 resolution at 1000 px is 6e-5), and a
pasted mask pixel can flip at the 0.5 threshold.
"""
import torch

_ATOL = {"pred_boxes": 1e-4, "pred_keypoints": 1e-4}


def assert_same_detections(a: dict, b: dict) -> None:
    """a, b: one image's result dicts (pred_boxes, scores, pred_classes, ...); a must be non-empty."""
    assert set(a) == set(b)
    assert a["pred_boxes"].shape[0] > 0, "no detections: the comparison would prove nothing"
    assert torch.equal(a["pred_classes"], b["pred_classes"])
    for key in a:
        if key == "pred_masks" and a[key].dtype == torch.bool:
            inter = (a[key] & b[key]).flatten(1).sum(1).double()
            union = (a[key] | b[key]).flatten(1).sum(1).double().clamp(min=1)
            assert (inter / union).min() > 0.99 or (a[key] ^ b[key]).sum() <= 4, key
        elif a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=_ATOL.get(key, 1e-5), rtol=0, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key
