"""Fixtures for the evaluation tests: coco-mini's val annotations turned into model outputs."""
import contextlib
import io
import types
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from mrcnn_plugin.structures import Boxes, Instances


@pytest.fixture(scope="session")
def coco_mini(shared_dir: Path) -> Path:
    """shared/data/coco-mini (images and COCO-format annotations)."""
    return shared_dir / "data" / "coco-mini"


@pytest.fixture(scope="session")
def instances_json(coco_mini: Path) -> str:
    """Path of coco-mini's instances_val2017.json (80 categories, boxes and masks)."""
    return str(coco_mini / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="session")
def keypoints_json(coco_mini: Path) -> str:
    """Path of coco-mini's person_keypoints_val2017.json (person, 17 keypoints)."""
    return str(coco_mini / "annotations" / "person_keypoints_val2017.json")


def load_coco(json_file: str) -> COCO:
    """A pycocotools COCO object, without its stdout chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


@pytest.fixture(scope="session")
def instances_coco(instances_json: str) -> COCO:
    return load_coco(instances_json)


@pytest.fixture(scope="session")
def keypoints_coco(keypoints_json: str) -> COCO:
    return load_coco(keypoints_json)


def contiguous_id_map(coco: COCO) -> Dict[int, int]:
    """COCO category id -> contiguous id 0..K-1 in increasing id order (the loader's convention)."""
    return {cat_id: i for i, cat_id in enumerate(sorted(coco.getCatIds()))}


def ground_truth_instances(coco: COCO, with_masks: bool = False, with_keypoints: bool = False
                           ) -> Dict[int, Instances]:
    """Every image's non-crowd annotations as predicted Instances with score 1.0.

    Boxes XYWH -> XYXY, classes through contiguous_id_map, masks rasterised with
    annToMask, keypoints with x and y + 0.5 (what the COCO loader does, turning
    pixel indices into continuous coordinates) and the visibility as score.
    With keypoints, persons without labelled keypoints are left out: COCOeval
    ignores those ground truths, so a prediction for one could only be a false positive.
    """
    id_map = contiguous_id_map(coco)
    per_image = {}
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        if with_keypoints:
            anns = [a for a in anns if a["num_keypoints"] > 0]
        image_size = (info["height"], info["width"])
        per_image[image_id] = _annotations_to_instances(coco, anns, image_size, id_map, with_masks,
                                                        with_keypoints)
    return per_image


def _annotations_to_instances(coco: COCO, anns: List[dict], image_size, id_map, with_masks: bool,
                              with_keypoints: bool) -> Instances:
    """One image's annotations -> Instances(pred_boxes, scores, pred_classes, [pred_masks],
    [pred_keypoints])."""
    # float32 like real model outputs.
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(xyxy)
    inst.scores = torch.ones(len(anns))
    inst.pred_classes = torch.tensor([id_map[a["category_id"]] for a in anns], dtype=torch.int64)
    if with_masks:
        masks = np.stack([coco.annToMask(a) for a in anns]) if anns else np.zeros((0, *image_size), np.uint8)
        inst.pred_masks = torch.from_numpy(masks).bool()
    if with_keypoints:
        num_keypoints = len(coco.loadCats(coco.getCatIds())[0]["keypoints"])
        kpts = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32)
        kpts = kpts.reshape(len(anns), num_keypoints, 3)
        kpts[:, :, :2] += 0.5
        inst.pred_keypoints = kpts
    return inst


@pytest.fixture(scope="session")
def gt_masks_instances(instances_coco: COCO) -> Dict[int, Instances]:
    """instances_val2017 ground truth as predictions, with masks (built once: annToMask is slow-ish)."""
    return ground_truth_instances(instances_coco, with_masks=True)


@pytest.fixture(scope="session")
def gt_keypoint_instances(keypoints_coco: COCO) -> Dict[int, Instances]:
    """person_keypoints_val2017 ground truth (persons with keypoints) as predictions."""
    return ground_truth_instances(keypoints_coco, with_keypoints=True)


def batches_of(per_image: Dict[int, Instances], batch_size: int = 2) -> List[List[dict]]:
    """Input batches [{"image_id", "height", "width"}, ...] covering every image of `per_image`."""
    inputs = [{"image_id": i, "height": inst.image_size[0], "width": inst.image_size[1]}
              for i, inst in per_image.items()]
    return [inputs[k:k + batch_size] for k in range(0, len(inputs), batch_size)]


def feed(evaluator, per_image: Dict[int, Instances], batch_size: int = 2) -> None:
    """Resets `evaluator` and processes every image of `per_image` as model outputs."""
    evaluator.reset()
    for batch in batches_of(per_image, batch_size):
        evaluator.process(batch, [{"instances": per_image[x["image_id"]]} for x in batch])


@pytest.fixture(scope="session")
def helpers() -> types.SimpleNamespace:
    """The module-level helpers of this conftest, for test files (which cannot import it by name)."""
    return types.SimpleNamespace(load_coco=load_coco, contiguous_id_map=contiguous_id_map,
                                 ground_truth_instances=ground_truth_instances, batches_of=batches_of,
                                 feed=feed)
