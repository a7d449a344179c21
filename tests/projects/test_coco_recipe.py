"""The COCO recipe's smoke config (projects/COCO/configs/mask_rcnn_R18_FPN_coco_mini_smoke.yaml)
trains and scores box and mask AP end to end.

The smoke config is shrunk further for two shared CPU cores (a few iterations, images of 128 px,
fewer proposals) and evaluated on all of coco_mini_val.
"""
import json
import math
from pathlib import Path


from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.engine import Trainer
from smoke_opts import COCO_MINI_SMOKE_OPTS as TINY_OPTS

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "projects" / "COCO" / "configs" / "mask_rcnn_R18_FPN_coco_mini_smoke.yaml"


def test_smoke_config_trains_and_scores_boxes_and_masks(tmp_path):
    """A few iterations of the smoke config on coco_mini_train give finite losses, a checkpoint and
    metrics; evaluation on coco_mini_val returns finite bbox and segm AP."""
    cfg = get_cfg()
    cfg.merge_from_file(str(SMOKE))
    assert tuple(cfg.DATASETS.TRAIN) == ("coco_mini_train",) and tuple(cfg.DATASETS.TEST) == ("coco_mini_val",)
    assert (cfg.MODEL.MASK_ON, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (True, 18, 80)
    cfg.merge_from_list(TINY_OPTS + ["OUTPUT_DIR", str(tmp_path)])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75"):
            assert math.isfinite(results[task][metric]) and 0.0 <= results[task][metric] <= 100.0, results
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert records[-1]["iteration"] == 2
    assert math.isfinite(records[-1]["loss_mask"]) and "segm/AP" in records[-1]
    assert (tmp_path / "model_final.pth").is_file()
