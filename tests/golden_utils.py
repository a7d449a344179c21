"""Helpers for tests that use the golden outputs of the reference detectron2 (shared/golden)."""
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]


# Config file of each golden model prefix (see shared/golden/README.md).
GOLDEN_CONFIGS = {
    "mask_rcnn_R_50_FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_R_50_C4": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml",
    "keypoint_rcnn_R_50_FPN": "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml",
}
GOLDEN_IMAGES = ("astronaut", "chelsea", "coffee")


def build_golden_model(shared: Path, name: str, channels_last: bool = False):
    """The reference architecture `name` on CPU, eval mode, with the golden weights of
    shared/golden/weights_rule.py (every tensor a function of its state_dict key).

    NCHW by default: the reference's memory layout, so that its rounding, and the
    order of near-tied proposals, can be compared stage by stage.
    channels_last=True is the project's default (MODEL.CHANNELS_LAST)."""
    import importlib.util

    import torch

    from mrcnn_plugin.config import get_cfg
    from mrcnn_plugin.modeling import build_model

    spec = importlib.util.spec_from_file_location("golden_weights_rule", shared / "golden" / "weights_rule.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    cfg = get_cfg()
    cfg.merge_from_file(str(_REPO_ROOT / "configs" / GOLDEN_CONFIGS[name]))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CHANNELS_LAST = channels_last
    model = build_model(cfg).eval()
    model.load_state_dict(rule.fill_state_dict(model.state_dict()))
    return model


def load_golden(shared: Path, name: str, image: str) -> dict:
    """One golden file: the reference detectron2's outputs for model `name` on photo `image`."""
    import torch

    return torch.load(shared / "golden" / "data" / f"{name}__{image}.pt", weights_only=False)


def golden_match_rate(shared: Path, golden_final: dict, outputs: dict) -> float:
    """shared/golden/match.py's detection match rate of `outputs` against a golden `final` entry.

    outputs: one image's result dict (pred_boxes, scores, pred_classes, pred_masks / pred_keypoints).
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("golden_match", shared / "golden" / "match.py")
    match = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(match)
    out = {"boxes": outputs["pred_boxes"], "scores": outputs["scores"], "classes": outputs["pred_classes"]}
    if "pred_masks" in outputs:
        out["masks"] = outputs["pred_masks"]
    if "pred_keypoints" in outputs:
        out["keypoints"] = outputs["pred_keypoints"]
    return match.match_rate(golden_final, out)
