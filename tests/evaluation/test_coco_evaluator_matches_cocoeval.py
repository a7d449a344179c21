"""COCOEvaluator's numbers against pycocotools COCOeval run directly on the same detections."""
import contextlib
import io
import json
import logging
import math
import sys
import types

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from mrcnn_plugin.evaluation import COCOEvaluator, format_ap_table
from mrcnn_plugin.structures import Boxes, Instances

SHIFT_X = 8.0  # pixels added to every ground-truth box's x


def _shifted(per_image):
    """Copies of box-only Instances with every box moved SHIFT_X pixels right."""
    shifted = {}
    for image_id, inst in per_image.items():
        moved = Instances(inst.image_size)
        moved.pred_boxes = Boxes(inst.pred_boxes.tensor + torch.tensor([SHIFT_X, 0.0, SHIFT_X, 0.0]))
        moved.scores, moved.pred_classes = inst.scores, inst.pred_classes
        shifted[image_id] = moved
    return shifted


def _direct_detections(per_image, coco):
    """The same detections written as COCO results by the test itself (XYWH in float64 from the
    float32 box values, category ids through the sorted-id order of the file)."""
    cat_ids = sorted(coco.getCatIds())
    dets = []
    for image_id, inst in per_image.items():
        for (x0, y0, x1, y1), score, cls in zip(inst.pred_boxes.tensor.tolist(), inst.scores.tolist(),
                                               inst.pred_classes.tolist()):
            dets.append({"image_id": image_id, "category_id": cat_ids[cls],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return dets


def _cocoeval_bbox(coco, dets):
    """COCOeval run and summarized exactly as pycocotools documents it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(dets), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.fixture(scope="module")
def shifted_case(instances_coco, helpers):
    """(predictions: ground truth shifted by SHIFT_X, COCOeval run directly on them)."""
    per_image = _shifted(helpers.ground_truth_instances(instances_coco))
    direct = _cocoeval_bbox(instances_coco, _direct_detections(per_image, instances_coco))
    return per_image, direct


def test_shifted_boxes_lower_ap_exactly_like_cocoeval(instances_json, shifted_case, helpers):
    """Boxes shifted by 8 px score below 100, and AP..APl equal COCOeval's stats[0..5] * 100 to 1e-9."""
    per_image, direct = shifted_case
    evaluator = COCOEvaluator(instances_json, tasks=("bbox",))
    helpers.feed(evaluator, per_image)
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP"] < 90.0
    for i, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        assert bbox[metric] == pytest.approx(direct.stats[i] * 100, abs=1e-9), metric


def test_per_class_ap_equals_precision_array(instances_json, instances_coco, shifted_case, helpers):
    """Every category gets "AP-<name>", equal to the mean of COCOeval's precision[:, :, k, area all,
    maxDets 100] over entries > -1, times 100 (NaN for a category without ground truth)."""
    per_image, direct = shifted_case
    evaluator = COCOEvaluator(instances_json, tasks=("bbox",))
    helpers.feed(evaluator, per_image)
    bbox = evaluator.evaluate()["bbox"]
    precision = direct.eval["precision"]
    assert direct.params.maxDets[-1] == 100 and direct.params.areaRngLbl[0] == "all"
    for k, cat_id in enumerate(direct.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        got = bbox["AP-" + instances_coco.cats[cat_id]["name"]]
        if values.size:
            assert got == pytest.approx(values.mean() * 100, abs=1e-9)
        else:
            assert math.isnan(got)
    assert len([k for k in bbox if k.startswith("AP-")]) == len(direct.params.catIds) == 80


def test_thing_classes_and_id_map_name_the_classes(instances_json, instances_coco, shifted_case, helpers):
    """Given thing_classes and an explicit contiguous -> dataset id map, the per-class keys use those
    names and the numbers are unchanged."""
    per_image, direct = shifted_case
    cat_ids = sorted(instances_coco.getCatIds())
    names = [f"class{i}" for i in range(len(cat_ids))]
    evaluator = COCOEvaluator(instances_json, tasks=("bbox",), thing_classes=names,
                              contiguous_id_to_dataset_id=dict(enumerate(cat_ids)))
    helpers.feed(evaluator, per_image)
    bbox = evaluator.evaluate()["bbox"]
    person = cat_ids.index(1)
    values = direct.eval["precision"][:, :, person, 0, -1]
    assert bbox[f"AP-class{person}"] == pytest.approx(values[values > -1].mean() * 100, abs=1e-9)
    assert bbox["AP"] == pytest.approx(direct.stats[0] * 100, abs=1e-9)


def test_empty_predictions_give_nan_and_warning(instances_json, instances_coco, caplog, tmp_path):
    """Images processed with zero detections: no crash, every metric NaN, a warning logged, and an
    empty results file written."""
    evaluator = COCOEvaluator(instances_json, tasks=("bbox", "segm"), output_dir=str(tmp_path))
    empty = Instances((10, 10), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.int64))
    evaluator.reset()
    evaluator.process([{"image_id": instances_coco.getImgIds()[0]}], [{"instances": empty}])
    with caplog.at_level(logging.WARNING, logger="mrcnn_plugin.evaluation"):
        results = evaluator.evaluate()
    assert set(results) == {"bbox", "segm"}
    assert all(math.isnan(v) for task in results.values() for v in task.values())
    assert "AP-person" in results["bbox"]
    assert any("no predictions" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == []


def test_results_json_written_and_loadable(instances_json, instances_coco, gt_masks_instances, helpers,
                                           tmp_path):
    """coco_instances_results.json holds one result per fed instance and loads with COCO.loadRes."""
    subset = dict(list(gt_masks_instances.items())[:5])
    evaluator = COCOEvaluator(instances_json, tasks=("bbox", "segm"), output_dir=str(tmp_path / "out"))
    helpers.feed(evaluator, subset)
    evaluator.evaluate()
    path = tmp_path / "out" / "coco_instances_results.json"
    results = json.loads(path.read_text())
    assert len(results) == sum(len(inst) for inst in subset.values())
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = instances_coco.loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(results)
    assert {r["image_id"] for r in results} <= set(subset)


def test_unknown_image_id_is_a_clear_error(instances_json):
    """A prediction for an image the annotation file lacks raises ValueError naming the id."""
    evaluator = COCOEvaluator(instances_json, tasks=("bbox",))
    inst = Instances((10, 10), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])),
                     scores=torch.ones(1), pred_classes=torch.zeros(1, dtype=torch.int64))
    evaluator.process([{"image_id": 123456789}], [{"instances": inst}])
    with pytest.raises(ValueError, match="123456789"):
        evaluator.evaluate()


def test_from_dataset_reads_metadata_and_cfg(monkeypatch, instances_json, keypoints_json):
    """from_dataset takes json_file, the id map and thing_classes from MetadataCatalog, tasks from
    MODEL.MASK_ON / KEYPOINT_ON and OKS sigmas from TEST.KEYPOINT_OKS_SIGMAS when set."""
    from mrcnn_plugin.config import get_cfg

    catalog = {"mini_val": types.SimpleNamespace(json_file=keypoints_json,
                                                 thing_dataset_id_to_contiguous_id={1: 0},
                                                 thing_classes=["human"])}
    stub = types.ModuleType("mrcnn_plugin.data")
    stub.MetadataCatalog = types.SimpleNamespace(get=catalog.__getitem__)
    monkeypatch.setitem(sys.modules, "mrcnn_plugin.data", stub)

    cfg = get_cfg()
    cfg.MODEL.MASK_ON, cfg.MODEL.KEYPOINT_ON = False, True
    cfg.TEST.KEYPOINT_OKS_SIGMAS = [0.5] * 17
    evaluator = COCOEvaluator.from_dataset("mini_val", cfg)
    assert evaluator._tasks == ("bbox", "keypoints")
    assert evaluator._contiguous_to_dataset == {0: 1}
    assert evaluator._kpt_oks_sigmas == [0.5] * 17
    assert evaluator._class_names() == ["human"]

    cfg.MODEL.MASK_ON, cfg.MODEL.KEYPOINT_ON = True, False
    cfg.TEST.KEYPOINT_OKS_SIGMAS = []
    evaluator = COCOEvaluator.from_dataset("mini_val", cfg)
    assert evaluator._tasks == ("bbox", "segm") and evaluator._kpt_oks_sigmas is None


def test_configured_oks_sigmas_change_keypoint_ap(keypoints_json, keypoints_coco, gt_keypoint_instances,
                                                  helpers):
    """Keypoints moved 2 px right score like COCOeval with the person sigmas by default, and like
    COCOeval with params.kpt_oks_sigmas set when sigmas are configured."""
    jittered = {}
    for image_id, inst in gt_keypoint_instances.items():
        moved = inst[torch.ones(len(inst), dtype=torch.bool)]
        kpts = inst.pred_keypoints.clone()
        kpts[:, :, 0] += 2.0
        moved.pred_keypoints = kpts
        jittered[image_id] = moved
    dets = []
    for image_id, inst in jittered.items():
        for box, kp in zip(inst.pred_boxes.tensor.tolist(), inst.pred_keypoints.tolist()):
            flat = [v for x, y, s in kp for v in (x - 0.5, y - 0.5, s)]  # loader's +0.5 undone
            dets.append({"image_id": image_id, "category_id": 1, "score": 1.0, "keypoints": flat,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    aps = []
    for sigmas in (None, [0.02] * 17):  # 0.02: tighter than every person sigma
        with contextlib.redirect_stdout(io.StringIO()):
            direct = COCOeval(keypoints_coco, keypoints_coco.loadRes([dict(d) for d in dets]), "keypoints")
            if sigmas is not None:
                direct.params.kpt_oks_sigmas = np.array(sigmas)
            direct.evaluate(), direct.accumulate(), direct.summarize()
        evaluator = COCOEvaluator(keypoints_json, tasks=("keypoints",), kpt_oks_sigmas=sigmas)
        helpers.feed(evaluator, jittered)
        got = evaluator.evaluate()["keypoints"]
        aps.append(got["AP"])
        for i, metric in enumerate(("AP", "AP50", "AP75", "APm", "APl")):
            assert got[metric] == pytest.approx(direct.stats[i] * 100, abs=1e-9), (sigmas, metric)
    assert 0.0 < aps[1] < aps[0] < 100.0


def test_wrong_number_of_oks_sigmas_is_a_clear_error(keypoints_json, gt_keypoint_instances, helpers):
    """OKS sigmas of the wrong length raise ValueError naming TEST.KEYPOINT_OKS_SIGMAS."""
    evaluator = COCOEvaluator(keypoints_json, tasks=("keypoints",), kpt_oks_sigmas=[0.1] * 5)
    helpers.feed(evaluator, dict(list(gt_keypoint_instances.items())[:3]))
    with pytest.raises(ValueError, match="KEYPOINT_OKS_SIGMAS"):
        evaluator.evaluate()


def test_format_ap_table_is_markdown():
    """format_ap_table gives a header, a separator and one row per task with 3 decimals, 'nan', and an
    empty cell for a metric the task lacks; per_class adds a category table."""
    table = format_ap_table({"bbox": {"AP": 38.6, "AP50": 59.0, "AP75": 41.5, "APs": float("nan"),
                                      "APm": 42.0, "APl": 50.0, "AP-person": 55.25},
                             "keypoints": {"AP": 64.0, "AP50": 86.0, "AP75": 70.0, "APm": 60.0, "APl": 71.0}},
                            per_class=True)
    lines = table.splitlines()
    assert lines[0] == "| task | AP | AP50 | AP75 | APs | APm | APl |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == "| bbox | 38.600 | 59.000 | 41.500 | nan | 42.000 | 50.000 |"
    assert lines[3] == "| keypoints | 64.000 | 86.000 | 70.000 |  | 60.000 | 71.000 |"
    assert "| bbox | person | 55.250 |" in lines
