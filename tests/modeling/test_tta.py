"""Test-time augmentation (modeling/test_time_augmentation.py) on a tiny random Mask R-CNN:
box mapping, equivalence with the plain model for a single unflipped scale, well-formed and
mirror-consistent outputs with flips, and the evaluation hooks (TEST.AUG.ENABLED)."""
import pytest
import torch

from detection_compare import assert_same_detections
from mrcnn_plugin.data.transforms import resize_shortest_edge_size
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.modeling.test_time_augmentation import (GeneralizedRCNNWithTTA, augment_boxes,
                                                          augmentation_sizes, unaugment_boxes)
from tiny_models import IMAGE_HW, NUM_CLASSES, synthetic_image, tiny_cfg


@pytest.fixture(scope="module")
def model():
    """The tiny Mask R-CNN in eval mode, keeping every detection (random weights score ~1/4)."""
    torch.manual_seed(0)
    m = build_model(tiny_cfg(["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])).eval()
    return m


def _tta(model, min_sizes, flip, max_size=1333):
    return GeneralizedRCNNWithTTA(model, min_sizes=min_sizes, max_size=max_size, flip=flip, nms_thresh=0.5,
                                  detections_per_image=100)


def _fields(output) -> dict:
    """{"instances": Instances} -> a dict of tensors (pred_boxes as Tensor[D, 4])."""
    inst = output["instances"]
    return {k: (v.tensor if k == "pred_boxes" else v) for k, v in inst.get_fields().items()}


def test_box_mapping_round_trip_and_flip():
    """augment_boxes then unaugment_boxes is the identity; a flip mirrors x about the augmented
    width and a resize scales each axis by its own ratio."""
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 128.0, 96.0]])
    for flipped in (False, True):
        aug = augment_boxes(boxes, (48, 64), flipped, IMAGE_HW)
        torch.testing.assert_close(unaugment_boxes(aug, (48, 64), flipped, IMAGE_HW), boxes)
    torch.testing.assert_close(augment_boxes(boxes[:1], (48, 64), True, IMAGE_HW),
                               torch.tensor([[64 - 25.0, 10.0, 64 - 5.0, 30.0]]))
    assert augmentation_sizes(96, 128, [48, 96], 1000, True) == [(48, 64, False), (48, 64, True),
                                                                 (96, 128, False), (96, 128, True)]


def test_single_scale_without_flip_reproduces_the_plain_model(model):
    """One scale, no flip: the image the plain model sees (resized to the short side 64, results
    at the original 96x128) gives the same boxes, scores, classes and masks through TTA."""
    h, w = resize_shortest_edge_size(*IMAGE_HW, 64, 1333)
    image = synthetic_image()
    resized = torch.nn.functional.interpolate(image[None].float(), size=(h, w), mode="bilinear",
                                              align_corners=False)[0].round().to(torch.uint8)
    inputs = [{"image": resized, "height": IMAGE_HW[0], "width": IMAGE_HW[1]}]
    with torch.no_grad():
        plain = _fields(model(inputs)[0])
        tta = _fields(_tta(model, [64], flip=False)(inputs)[0])
    assert plain["pred_boxes"].shape[0] > 10
    assert_same_detections(tta, plain)


def test_flip_outputs_are_well_formed_and_mirror_consistent(model):
    """Flip-only TTA: boxes inside the image, scores sorted, classes valid, at most 100
    detections, full-size boolean masks. And mirroring the input mirrors the output, which
    shows that flipped detections are mapped back correctly: TTA(flip(x)) has the boxes of
    TTA(x) mirrored, the same scores and classes, and mirrored masks."""
    image = synthetic_image(1)
    tta = _tta(model, [IMAGE_HW[0]], flip=True)
    with torch.no_grad():
        out = _fields(tta([{"image": image}])[0])
        mirrored = _fields(tta([{"image": image.flip(-1)}])[0])
    boxes, scores, masks = out["pred_boxes"], out["scores"], out["pred_masks"]
    d = boxes.shape[0]
    assert 0 < d <= 100 and scores.shape == (d,) and out["pred_classes"].shape == (d,)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= IMAGE_HW[1]).all() and (boxes[:, 3] <= IMAGE_HW[0]).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (scores[:-1] >= scores[1:]).all()
    assert ((out["pred_classes"] >= 0) & (out["pred_classes"] < NUM_CLASSES)).all()
    assert masks.dtype == torch.bool and masks.shape == (d, *IMAGE_HW)

    expected = {"pred_boxes": torch.stack([IMAGE_HW[1] - boxes[:, 2], boxes[:, 1], IMAGE_HW[1] - boxes[:, 0],
                                           boxes[:, 3]], dim=1),
                "scores": scores, "pred_classes": out["pred_classes"], "pred_masks": masks.flip(-1)}
    assert_same_detections(mirrored, expected)


def test_keypoint_models_are_refused():
    """TTA has no keypoint support (mirroring needs left/right pairs): it says so at construction."""
    keypoint_model = build_model(tiny_cfg(keypoints=True))
    with pytest.raises(NotImplementedError, match="keypoint"):
        _tta(keypoint_model, [64], flip=True)


def test_from_config_reads_detectron2_keys(model):
    """TEST.AUG.MIN_SIZES / MAX_SIZE / FLIP, NMS_THRESH_TEST and DETECTIONS_PER_IMAGE configure the wrapper."""
    cfg = tiny_cfg(["TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", (64, 96), "TEST.AUG.MAX_SIZE", 200,
                    "TEST.AUG.FLIP", False, "MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.6, "TEST.DETECTIONS_PER_IMAGE", 7])
    tta = GeneralizedRCNNWithTTA.from_config(cfg, model)
    assert (tta.min_sizes, tta.max_size, tta.flip, tta.nms_thresh, tta.detections_per_image) == \
        ([64, 96], 200, False, 0.6, 7)
    with torch.no_grad():
        out = tta([{"image": synthetic_image()}])[0]["instances"]
    assert 0 < len(out) <= 7


def test_evaluation_runs_tta_when_enabled(model, monkeypatch):
    """Trainer.test_with_TTA evaluates the TTA-wrapped model on each dataset with original-resolution
    images and reports "<task>_TTA"; --eval-only adds it to the plain results when TEST.AUG.ENABLED."""
    from mrcnn_plugin.engine import train_cli, trainer

    seen = {}

    def fake_inference(m, loader, evaluator):
        seen["model"], seen["mapper"] = m, loader.dataset._mapper
        return {"bbox": {"AP": 1.0}, "segm": {"AP": 2.0}}

    monkeypatch.setattr("mrcnn_plugin.evaluation.inference_on_dataset", fake_inference)
    monkeypatch.setattr(trainer.Trainer, "build_evaluator", classmethod(lambda cls, cfg, name, out=None: None))
    monkeypatch.setattr("mrcnn_plugin.data.build.get_detection_dataset_dicts", lambda *a, **k: [{}])
    cfg = tiny_cfg(["DATASETS.TEST", ("fake",), "TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", (64,)])
    cfg.DATALOADER.NUM_WORKERS = 0
    results = trainer.Trainer.test_with_TTA(cfg, model)
    assert results == {"bbox_TTA": {"AP": 1.0}, "segm_TTA": {"AP": 2.0}}
    assert isinstance(seen["model"], GeneralizedRCNNWithTTA) and seen["model"].min_sizes == [64]
    assert seen["mapper"].augmentations == []  # images at their original resolution

    monkeypatch.setattr(trainer.Trainer, "build_model", classmethod(lambda cls, cfg: model))
    monkeypatch.setattr(trainer.Trainer, "test", classmethod(lambda cls, cfg, m: {"bbox": {"AP": 0.5}}))
    monkeypatch.setattr("mrcnn_plugin.engine.checkpointing.make_checkpointer",
                        lambda *a, **k: type("C", (), {"load": lambda self, w: None})())
    assert set(train_cli._evaluate_only(cfg, resume=False)) == {"bbox", "bbox_TTA", "segm_TTA"}
