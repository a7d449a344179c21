"""Shared helpers of the engine tests: a tiny Mask R-CNN config (fast on two shared CPU cores),
a small validation subset, and the environment of training subprocesses."""
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = str(REPO_ROOT / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml")
PYTHON = sys.executable

# KEY VALUE overrides, as on the `mrcnn train` command line.
TINY_OPTS: List[str] = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "256",
    "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256",
    "DATASETS.TRAIN", "('coco_mini_train',)", "DATASETS.TEST", "()",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001",
    "SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100000", "SEED", "7",
]


def tiny_cfg(*opts: str):
    """The tiny config with extra KEY VALUE overrides, as a CfgNode."""
    from mrcnn_plugin.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(BASE_CONFIG)
    cfg.merge_from_list(TINY_OPTS + list(opts))
    return cfg


def subprocess_env() -> Dict[str, str]:
    """Environment of training subprocesses: one compute thread each (the machine's cores are shared;
    oversubscribed OpenMP threads make CPU training an order of magnitude slower)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), str(Path(__file__).parent), env.get("PYTHONPATH", "")]))
    return env


def register_val_subset(name: str, folder: Path, num_images: int) -> str:
    """Registers (once) `name`: the first `num_images` images of coco_mini_val with their annotations,
    as a COCO json written in `folder`, so evaluation is quick. Returns the name."""
    from mrcnn_plugin.data import DatasetCatalog, MetadataCatalog, register_coco_instances

    if name in DatasetCatalog:
        return name
    meta = MetadataCatalog.get("coco_mini_val")
    with open(meta.json_file, "r", encoding="utf-8") as f:
        full = json.load(f)
    images = sorted(full["images"], key=lambda im: im["id"])[:num_images]
    ids = {im["id"] for im in images}
    subset = dict(full, images=images, annotations=[a for a in full["annotations"] if a["image_id"] in ids])
    folder.mkdir(parents=True, exist_ok=True)
    json_file = folder / f"{name}.json"
    json_file.write_text(json.dumps(subset), encoding="utf-8")
    register_coco_instances(name, {}, str(json_file), meta.image_root)
    return name
