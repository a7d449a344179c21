"""The keypoint recipe (projects/Keypoints): its configs are detectron2's COCO person keypoint
configs, and its coco-mini smoke config trains and scores box and keypoint AP end to end.

The smoke run is the smoke config shrunk further for two shared CPU cores (a few iterations,
images of 128 px, fewer proposals) and evaluated on all of keypoints_coco_mini_val.
"""
import json
import math
from pathlib import Path

import pytest

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.engine import Trainer
from smoke_opts import COCO_MINI_SMOKE_OPTS as TINY_OPTS

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "projects" / "Keypoints" / "configs"
SMOKE = CONFIGS / "keypoint_rcnn_R18_FPN_coco_mini_smoke.yaml"


def _merged(path: Path, *opts: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize("name, max_iter, steps", [("keypoint_rcnn_R_50_FPN_1x.yaml", 90000, (60000, 80000)),
                                                   ("keypoint_rcnn_R_50_FPN_3x.yaml", 270000, (210000, 250000))])
def test_recipe_configs_are_detectron2s(name, max_iter, steps):
    """The 1x and 3x recipes are detectron2's Keypoint R-CNN R50-FPN configs: COCO person
    keypoints, 17 keypoints, one class, batch 16 at LR 0.02, their schedules."""
    cfg = _merged(CONFIGS / name)
    base = _merged(REPO_ROOT / "configs" / "COCO-Keypoints" / name)
    assert cfg.MODEL.KEYPOINT_ON and not cfg.MODEL.MASK_ON
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS) \
        == (50, 1, 17)
    assert tuple(cfg.DATASETS.TRAIN) == ("keypoints_coco_2017_train",)
    assert tuple(cfg.DATASETS.TEST) == ("keypoints_coco_2017_val",)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) \
        == (16, 0.02, max_iter, steps)
    assert (cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN, cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA) == (1500, 0.5)
    base.OUTPUT_DIR = cfg.OUTPUT_DIR
    assert cfg.dump() == base.dump()


def test_smoke_config_trains_and_scores_keypoints(tmp_path):
    """A few iterations of the smoke config on keypoints_coco_mini_train give finite losses, a
    checkpoint and metrics; evaluation on keypoints_coco_mini_val returns finite bbox and
    keypoint AP (COCO's OKS sigmas)."""
    smoke = _merged(SMOKE)
    assert tuple(smoke.DATASETS.TRAIN) == ("keypoints_coco_mini_train",)
    assert tuple(smoke.DATASETS.TEST) == ("keypoints_coco_mini_val",)
    assert (smoke.MODEL.KEYPOINT_ON, smoke.MODEL.RESNETS.DEPTH, smoke.SOLVER.MAX_ITER) == (True, 18, 300)

    cfg = _merged(SMOKE, *TINY_OPTS, "OUTPUT_DIR", str(tmp_path))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert set(results) == {"bbox", "keypoints"}
    for task in ("bbox", "keypoints"):
        for metric in ("AP", "AP50", "AP75"):
            assert math.isfinite(results[task][metric]) and 0.0 <= results[task][metric] <= 100.0, results
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert records[-1]["iteration"] == 2
    assert math.isfinite(records[-1]["loss_keypoint"]) and "keypoints/AP" in records[-1]
    assert (tmp_path / "model_final.pth").is_file()
