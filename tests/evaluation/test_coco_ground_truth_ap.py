"""COCOEvaluator on coco-mini's own ground truth, and the conversion of outputs to COCO results."""
import math

import pytest
import torch

from mrcnn_plugin.evaluation import COCOEvaluator, instances_to_coco_json
from mrcnn_plugin.structures import Boxes, Instances


def test_ground_truth_boxes_and_masks_give_ap_100(instances_json, gt_masks_instances, helpers):
    """The val ground truth fed back as predictions (score 1, crowd skipped) scores 100 on every
    box and mask metric: boxes, class ids and RLE masks survive the conversion exactly."""
    evaluator = COCOEvaluator(instances_json, tasks=("bbox", "segm"))
    helpers.feed(evaluator, gt_masks_instances)
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert results[task][metric] == pytest.approx(100.0), (task, metric)


def test_ground_truth_keypoints_give_ap_100(keypoints_json, gt_keypoint_instances, helpers):
    """Ground-truth keypoints shifted by +0.5 as the loader does, fed back, score keypoint AP 100:
    the evaluator's -0.5 makes the loader -> evaluator round trip exact."""
    evaluator = COCOEvaluator(keypoints_json, tasks=("keypoints",))
    helpers.feed(evaluator, gt_keypoint_instances)
    results = evaluator.evaluate()
    assert set(results) == {"keypoints"}
    assert set(results["keypoints"]) == {"AP", "AP50", "AP75", "APm", "APl"}  # one class: no AP-person
    for metric, value in results["keypoints"].items():
        assert value == pytest.approx(100.0), metric


def _one_instance(with_masks: bool = True, with_keypoints: bool = True) -> Instances:
    """A hand-made prediction on a 4 x 5 image."""
    inst = Instances((4, 5))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 0.5, 4.0, 3.25]]))
    inst.scores = torch.tensor([0.75])
    inst.pred_classes = torch.tensor([2])
    if with_masks:
        mask = torch.zeros(1, 4, 5, dtype=torch.bool)
        mask[0, 1:3, 2:4] = True
        inst.pred_masks = mask
    if with_keypoints:
        inst.pred_keypoints = torch.tensor([[[2.5, 1.5, 0.9], [3.0, 2.0, 0.1]]])
    return inst


def test_instances_to_coco_json_formats():
    """One instance becomes XYWH box, mapped category, float score, a str-counts RLE that decodes
    to the same mask, and keypoints with x, y minus 0.5 and the score kept; the input is untouched."""
    import numpy as np
    import pycocotools.mask as mask_util

    inst = _one_instance()
    keypoints_before = inst.pred_keypoints.clone()
    (result,) = instances_to_coco_json(inst, 42, {2: 7})
    assert result["image_id"] == 42 and result["category_id"] == 7
    assert result["bbox"] == pytest.approx([1.0, 0.5, 3.0, 2.75])
    assert result["score"] == pytest.approx(0.75)
    assert isinstance(result["segmentation"]["counts"], str)
    assert result["segmentation"]["size"] == [4, 5]
    rle = result["segmentation"]
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, inst.pred_masks[0].numpy().astype(np.uint8))
    assert result["keypoints"] == pytest.approx([2.0, 1.0, 0.9, 2.5, 1.5, 0.1])
    assert torch.equal(inst.pred_keypoints, keypoints_before)


def test_instances_to_coco_json_empty_and_unknown_class():
    """No instances give no results; a class outside the id map is a KeyError naming it."""
    assert instances_to_coco_json(_one_instance()[torch.zeros(1, dtype=torch.bool)], 1, {2: 7}) == []
    with pytest.raises(KeyError, match="Predicted class 2"):
        instances_to_coco_json(_one_instance(), 1, {0: 1})


def test_missing_fields_skip_their_tasks(instances_json, gt_masks_instances, helpers):
    """With the default tasks, predictions without masks or keypoints are scored on boxes only,
    and keypoints are skipped for an annotation file without keypoints."""
    boxes_only = {}
    for image_id, inst in list(gt_masks_instances.items())[:6]:
        slim = Instances(inst.image_size)
        slim.pred_boxes, slim.scores, slim.pred_classes = inst.pred_boxes, inst.scores, inst.pred_classes
        boxes_only[image_id] = slim
    evaluator = COCOEvaluator(instances_json)
    helpers.feed(evaluator, boxes_only)
    results = evaluator.evaluate()
    assert list(results) == ["bbox"]
    assert not math.isnan(results["bbox"]["AP"])
