"""The Cityscapes recipe (projects/Cityscapes): the COCO -> Cityscapes class remap of
`mrcnn convert --remap-classes coco-to-cityscapes`, and a smoke run of the recipe's config.

The smoke run uses the generated Cityscapes split of tests/cityscapes_fixture.py (3 images of
64 x 128 in the official layout) under the built-in names `cityscapes_fine_instance_seg_*`, and a
small "COCO" checkpoint: a randomly initialised 80-class model of the recipe's config (ResNet-18,
narrow heads) saved by the project's checkpointer. It converts that checkpoint with the CLI,
fine-tunes from it for a few iterations at tiny sizes and scores the val split with the
cityscapesscripts evaluator.
"""
import math
import os
from pathlib import Path

import pytest
import torch

from cityscapes_fixture import make_cityscapes_split
from mrcnn_plugin.checkpoint import DetectionCheckpointer, read_checkpoint
from mrcnn_plugin.checkpoint.convert import (COCO_CLASS_FOR_CITYSCAPES, class_remap, convert_checkpoint_remapped,
                                             remap_class_rows)
from mrcnn_plugin.cli import main as mrcnn_main
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data import DatasetCatalog, MetadataCatalog
from mrcnn_plugin.data.datasets import COCO_CATEGORIES, datasets_root
from mrcnn_plugin.data.datasets.cityscapes import register_all_cityscapes
from mrcnn_plugin.engine import Trainer
from mrcnn_plugin.modeling import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "projects" / "Cityscapes" / "configs" / "mask_rcnn_R_50_FPN_cityscapes.yaml"
SPLITS = [f"cityscapes_fine_instance_seg_{split}" for split in ("train", "val", "test")]
COCO_NAMES = [name for _, name in COCO_CATEGORIES]
CITYSCAPES_NAMES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
CLASS_KEYS = {  # tensor -> rows per class
    "roi_heads.box_predictor.cls_score.weight": 1, "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4, "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_head.predictor.weight": 1, "roi_heads.mask_head.predictor.bias": 1,
}

# The recipe's model made small for two CPU cores: ResNet-18, narrow FPN and heads, few proposals,
# images of 64..96 px (the fixture's are 64 x 128), a few iterations, evaluation only at the end.
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "INPUT.MIN_SIZE_TRAIN", "(64, 96)", "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
    "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0",
    "TEST.DETECTIONS_PER_IMAGE", "20", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
]


def _cfg(*opts: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(TINY_OPTS + list(opts))
    return cfg


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    """The generated split written as train and val under a Cityscapes root, registered under the
    built-in names (as $DETECTRON2_DATASETS/cityscapes would be); the usual registration is put
    back afterwards."""
    root = tmp_path_factory.mktemp("cityscapes")
    for split in ("train", "val"):
        make_cityscapes_split(root, split)

    def unregister():
        for name in SPLITS:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

    unregister()
    register_all_cityscapes(str(root))
    yield root
    unregister()
    register_all_cityscapes(os.path.join(datasets_root(), "cityscapes"))


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised 80-class ("COCO") model of the tiny recipe config, saved by the
    project's checkpointer as coco_tiny.pth."""
    folder = tmp_path_factory.mktemp("coco_checkpoint")
    cfg = _cfg("MODEL.ROI_HEADS.NUM_CLASSES", "80", "MODEL.WEIGHTS", "")
    torch.manual_seed(0)
    model = build_model(cfg)
    # Distinct values in every class row, so that a row taken from the wrong class cannot go unnoticed
    # (the default initialisation leaves the biases all 0); small, like trained values.
    with torch.no_grad():
        for key in CLASS_KEYS:
            module_name, param = key.rsplit(".", 1)
            getattr(model.get_submodule(module_name), param).normal_(std=0.01)
    DetectionCheckpointer(model, save_dir=str(folder)).save("coco_tiny")
    return str(folder / "coco_tiny.pth")


def test_coco_to_cityscapes_mapping_follows_both_label_orders():
    """The remap's orders are the COCO metadata's and the Cityscapes metadata's, each Cityscapes
    class takes its same-named COCO class, and rider takes person."""
    remap = class_remap("coco-to-cityscapes")
    assert list(remap.source_classes) == COCO_NAMES
    assert list(remap.target_classes) == CITYSCAPES_NAMES
    assert list(remap.target_classes) == MetadataCatalog.get("cityscapes_fine_instance_seg_train").thing_classes
    assert [remap.source_classes[i] for i in remap.source_index] == \
        ["person", "person", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert COCO_CLASS_FOR_CITYSCAPES["rider"] == "person"


def test_convert_cli_remaps_class_rows(coco_checkpoint, tmp_path):
    """`mrcnn convert --from detectron2 --remap-classes coco-to-cityscapes IN OUT` keeps, for each
    Cityscapes class, the rows of its COCO class in cls_score (background row last), bbox_pred
    (4 rows per class) and the mask predictor, and every other tensor unchanged."""
    out = tmp_path / "cityscapes_init.pth"
    assert mrcnn_main(["convert", "--from", "detectron2", "--remap-classes", "coco-to-cityscapes",
                       coco_checkpoint, str(out)]) == 0
    source = read_checkpoint(coco_checkpoint)["model"]
    converted = read_checkpoint(str(out))["model"]
    assert set(converted) == set(source)
    index = [COCO_NAMES.index(COCO_CLASS_FOR_CITYSCAPES[name]) for name in CITYSCAPES_NAMES]
    for key, per_class in CLASS_KEYS.items():
        src, dst = source[key], converted[key]
        num_rows = 8 * per_class + (1 if "cls_score" in key else 0)
        assert dst.shape == (num_rows,) + src.shape[1:], key
        for target, coco in enumerate(index):
            torch.testing.assert_close(dst[target * per_class:(target + 1) * per_class],
                                       src[coco * per_class:(coco + 1) * per_class], rtol=0, atol=0)
        if "cls_score" in key:  # background stays last
            torch.testing.assert_close(dst[8], src[80], rtol=0, atol=0)
    # rider starts from person
    torch.testing.assert_close(converted["roi_heads.box_predictor.cls_score.weight"][1],
                               source["roi_heads.box_predictor.cls_score.weight"][0], rtol=0, atol=0)
    for key in set(source) - set(CLASS_KEYS):
        torch.testing.assert_close(converted[key], source[key], rtol=0, atol=0)


def test_remap_refuses_a_checkpoint_of_other_classes(coco_checkpoint, tmp_path):
    """Remapping an already remapped (8-class) checkpoint is an error naming the tensor, and OUT is
    not written; the CLI reports it as a usage error (exit status 2, mrcnn_plugin.cli.EXIT_STATUS)."""
    first = tmp_path / "once.pth"
    convert_checkpoint_remapped("detectron2", coco_checkpoint, str(first), "coco-to-cityscapes")
    with pytest.raises(ValueError, match="cls_score.weight has 9 rows"):
        remap_class_rows(read_checkpoint(str(first))["model"], class_remap("coco-to-cityscapes"))
    second = tmp_path / "twice.pth"
    assert mrcnn_main(["convert", "--from", "detectron2", "--remap-classes", "coco-to-cityscapes",
                       str(first), str(second)]) == 2
    assert not second.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mrcnn_convert_")]


def test_recipe_fine_tunes_from_the_remapped_checkpoint_and_evaluates(cityscapes_root, coco_checkpoint, tmp_path):
    """The recipe config (datasets, NUM_CLASSES 8, schedule) loads the remapped checkpoint with every
    tensor in place, trains a few finite iterations on the fixture and gets finite mask AP from the
    cityscapesscripts evaluator; the unconverted COCO checkpoint would load with only its class
    layers skipped."""
    base = _cfg()
    assert (base.SOLVER.BASE_LR, base.SOLVER.IMS_PER_BATCH, base.SOLVER.STEPS) == (0.001, 2, ())
    recipe = get_cfg()
    recipe.merge_from_file(str(CONFIG))
    assert recipe.MODEL.ROI_HEADS.NUM_CLASSES == 8 and recipe.MODEL.MASK_ON
    assert (recipe.SOLVER.BASE_LR, recipe.SOLVER.IMS_PER_BATCH, recipe.SOLVER.MAX_ITER,
            tuple(recipe.SOLVER.STEPS)) == (0.01, 8, 24000, (18000,))
    assert tuple(recipe.INPUT.MIN_SIZE_TRAIN) == tuple(range(800, 1025, 32))
    assert (recipe.INPUT.MIN_SIZE_TRAIN_SAMPLING, recipe.INPUT.MAX_SIZE_TRAIN, recipe.INPUT.MIN_SIZE_TEST,
            recipe.INPUT.MAX_SIZE_TEST) == ("choice", 2048, 1024, 2048)
    assert tuple(recipe.DATASETS.TRAIN) == ("cityscapes_fine_instance_seg_train",)
    assert tuple(recipe.DATASETS.TEST) == ("cityscapes_fine_instance_seg_val",)

    weights = tmp_path / "cityscapes_init.pth"
    assert mrcnn_main(["convert", "--from", "detectron2", "--remap-classes", "coco-to-cityscapes",
                       coco_checkpoint, str(weights)]) == 0
    cfg = _cfg("MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "run"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    report = trainer.checkpointer.last_load_report
    assert report is not None and report.ok, report
    torch.testing.assert_close(trainer.unwrapped_model.roi_heads.box_predictor.cls_score.weight,
                               read_checkpoint(str(weights))["model"]["roi_heads.box_predictor.cls_score.weight"])

    results = trainer.train()
    assert set(results) == {"segm"}
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in results["segm"].values()), results
    assert (tmp_path / "run" / "model_final.pth").is_file()
    assert (tmp_path / "run" / "inference" / "cityscapes_fine_instance_seg_val" / "cityscapes_instances").is_dir()

    # Without the convert step: everything but the 81-row class layers loads (detectron2's behaviour).
    model = build_model(cfg)
    report = DetectionCheckpointer(model).load(coco_checkpoint)["load_report"]
    assert {k for k, _, _ in report.shape_mismatches} == set(CLASS_KEYS)
    assert not report.unexpected
